// Per-coordinate math of kernel family 4 (pairwise statistics between
// clients): the blocked difference sums of two rows and cosine from Gram. One
// definition for the CPU lanes, the CUDA threads (on the GPU and emulated on
// the CPU).
#pragma once

#include "robustagg/math/load.h"

namespace robustagg {
namespace math {

// float32 (and float16/bfloat16) squared distances: each lane sums kSqBlock
// squared float differences as two chains of kSqBlock / 2 (even and odd
// steps) added at the end, and flushes the block into a double accumulator.
// All terms are non-negative, so the relative error of an entry is bounded by
// about (kSqBlock / 2 + 3) * 2^-24 ~ 6.6e-7 (difference, square, chain, the
// final add; the double sums add ~1e-16; a fused square-and-add rounds once
// where the unfused one rounds twice): inside the 1e-6 contract. Identical
// rows give exactly 0.
constexpr int kSqBlock = 16;

// s + x y with one rounding on a GPU thread (and in the emulated launchers,
// which must round as it does: libm's fmaf, the CPU's instruction where it
// has one). On the CPU's vectors of float lanes the product and the sum are
// written out and csrc/cpu/pairwise.cpp lets the compiler fuse them where the
// instruction set has a fused multiply-add (every copy but the baseline one).
ROBUSTAGG_HD inline float madd(float x, float y, float s) { return ::fmaf(x, y, s); }
template <typename R> ROBUSTAGG_HD inline R madd(R x, R y, R s) { return s + x * y; }

// The block's float sum for one lane (R = float on a GPU thread, a vector of
// float lanes on the CPU): a(s), b(s) load step s of the two rows.
template <typename R, typename LoadA, typename LoadB>
ROBUSTAGG_HD inline R sq_diff_block(LoadA a, LoadB b) {
  R s0 = R{} , s1 = R{};
  ROBUSTAGG_UNROLL
  for (int s = 0; s < kSqBlock; s += 2) {
    const R x = a(s) - b(s);
    const R y = a(s + 1) - b(s + 1);
    s0 = madd(x, x, s0);
    s1 = madd(y, y, s1);
  }
  return s0 + s1;
}

// The same blocking for the Gram of float rows: each lane sums kSqBlock float
// products as two chains and flushes the block into double. Terms may cancel,
// so the bound is relative to sum_n |a_n b_n| <= |a| |b| (Cauchy-Schwarz):
// |error| <= about 6.6e-7 |a| |b|, i.e. 6.6e-7 in a cosine. A row's squared
// norm (all terms non-negative) keeps the 6.6e-7 relative bound, and rows
// that are bitwise equal get bitwise equal products, so their cosine is 1.
template <typename R, typename LoadA, typename LoadB>
ROBUSTAGG_HD inline R dot_block(LoadA a, LoadB b) {
  R s0 = R{}, s1 = R{};
  ROBUSTAGG_UNROLL
  for (int s = 0; s < kSqBlock; s += 2) {
    s0 = madd(R(a(s)), R(b(s)), s0);
    s1 = madd(R(a(s + 1)), R(b(s + 1)), s1);
  }
  return s0 + s1;
}

// Float blocks are exact enough only while no float square or product
// overflows (|x| below about 2^60) and squares do not fall below float's
// normal range (for entries below d * 2^-100 the bound is absolute, d * 2^-145).
// Callers check the results: a non-finite entry from finite input means the
// float blocks overflowed, and the pair is recomputed in double.

// cos = <u_i, u_j> / sqrt(|u_i|^2 |u_j|^2), clamped to [-1, 1]; 0 where either
// row is all zero. Identical rows have bitwise equal dot products and norms
// (same summation order) and sqrt(x * x) == x, so their cosine is exactly 1.
// A row with NaN or +-Inf has a non-finite squared norm: its cosine with
// every row (itself too) is NaN. (ops.py scales float64 rows whose squares
// would overflow or underflow before they get here.)
ROBUSTAGG_HD inline double cosine_from_gram(double gij, double gii, double gjj) {
  const double t = gii + gjj;
  if (!(t - t == 0.0)) return quiet_nan<double>();
  double c = 0.0;
  if (gii > 0.0 && gjj > 0.0) c = gij / sqrt_rn(gii * gjj);
  return c < -1.0 ? -1.0 : (c > 1.0 ? 1.0 : c);
}

// How d is cut into segments whose partial sums are added in segment order:
// fixed for given (K, d, max_segments), which is what makes results
// independent of the thread count (CPU) and of the launch (GPU).
struct PairwiseSegments {
  int64_t segments, seg_len;
  ROBUSTAGG_HD PairwiseSegments(int64_t K, int64_t d, int64_t max_segments, int64_t min_segment,
                                int64_t partial_budget) {
    int64_t s = (d + min_segment - 1) / min_segment;
    s = s < max_segments ? s : max_segments;
    const int64_t cap = partial_budget / (K * K);
    s = s < cap ? s : cap;
    segments = s > 1 ? s : 1;
    seg_len = (d + segments - 1) / segments;
  }
};

// One kSqBlock-column block of one pair, as one GPU thread adds it: la(s),
// lb(s) give step s of the two rows as V (zero past the end of a segment).
// kFloatBlocks: the blocked float sums (sq_diff_block, dot_block) flushed to
// double, the fast path of float32/16/bf16 rows; otherwise differences,
// squares and products in double, step by step.
template <typename V, bool kFloatBlocks, typename LA, typename LB>
ROBUSTAGG_HD inline void pair_block(LA la, LB lb, bool want_dist, bool want_gram, double& acc_d,
                                    double& acc_g) {
  if (want_dist) {
    if (kFloatBlocks) {
      acc_d += static_cast<double>(sq_diff_block<V>(la, lb));
    } else {
      ROBUSTAGG_UNROLL
      for (int s = 0; s < kSqBlock; ++s) {
        const double diff = static_cast<double>(la(s)) - static_cast<double>(lb(s));
        acc_d += diff * diff;
      }
    }
  }
  if (want_gram) {
    if (kFloatBlocks) {
      acc_g += static_cast<double>(dot_block<V>(la, lb));
    } else {
      ROBUSTAGG_UNROLL
      for (int s = 0; s < kSqBlock; ++s) acc_g += static_cast<double>(la(s)) * static_cast<double>(lb(s));
    }
  }
}

// One pair's partial sums over columns [s0, s1) of rows a, b (element type
// T): the blocks of pair_block from s0 in order, the last one zero-padded.
// The CUDA kernel forms exactly these sums from its shared-memory tiles.
template <typename T, bool kFloatBlocks>
ROBUSTAGG_HD inline void pair_partials(const T* a, const T* b, int64_t s0, int64_t s1, bool want_dist,
                                       bool want_gram, double& dist, double& gram) {
  using V = typename Traits<T>::val_t;
  double acc_d = 0.0, acc_g = 0.0;
  for (int64_t c0 = s0; c0 < s1; c0 += kSqBlock) {
    const auto la = [&](int s) { return c0 + s < s1 ? V(load(a + c0 + s)) : V(0); };
    const auto lb = [&](int s) { return c0 + s < s1 ? V(load(b + c0 + s)) : V(0); };
    pair_block<V, kFloatBlocks>(la, lb, want_dist, want_gram, acc_d, acc_g);
  }
  dist = acc_d;
  gram = acc_g;
}

}  // namespace math
}  // namespace robustagg
