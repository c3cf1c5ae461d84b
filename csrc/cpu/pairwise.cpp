// The one file whose products may be fused into additions: the float blocks
// (math::sq_diff_block, dot_block) are compute-bound, and a fused multiply-add
// is 15-20% of their time on AVX2 and AVX-512 (bench/results/cpu_isa.md).
// Its results (float blocks and float64 sums alike) then differ in the last
// bits between the copies with FMA and the baseline one (and the device,
// --fmad=false), all within their accuracy contracts (1e-6 for the float
// blocks, about 1e-12 for float64).
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif
#include "robustagg/pairwise.h"

#include "robustagg/math/pairwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace robustagg {
namespace cpu {
namespace {

constexpr int kLanes = 8;                  // independent double accumulators per pair
constexpr int64_t kMaxSegments = 32;       // d is cut into at most this many segments...
constexpr int64_t kMinSegment = 4096;      // ...of at least this many coordinates...
constexpr int64_t kPartialBudget = 1 << 22;  // ...while segments * K * K stays below this
constexpr int64_t kRowBlock = 16;          // rows i per task, when rows are split

// Rows are split across tasks only when the segments alone cannot keep the
// threads busy: each row block re-reads its columns. The split never changes a
// result (each pair's sum runs over the same column blocks in the same order).
inline int64_t row_blocks_for(int64_t K, int64_t segments, int num_threads) {
  if (segments >= 4 * static_cast<int64_t>(num_threads)) return 1;
  return std::min<int64_t>(ceil_div(K, kRowBlock), ceil_div(4 * num_threads, segments));
}

// How d is cut into segments (fixed for given K and d: this is what makes the
// results independent of the thread count) and how rows are spread over tasks.
struct Split {
  int64_t K, d, segments, seg_len, row_blocks;
  Split(int64_t K_, int64_t d_, int num_threads) : K(K_), d(d_) {
    const math::PairwiseSegments seg(K, d, kMaxSegments, kMinSegment, kPartialBudget);
    segments = seg.segments;
    seg_len = seg.seg_len;
    row_blocks = row_blocks_for(K, segments, num_threads);
  }
  int64_t tasks() const { return segments * row_blocks; }
  struct Range { int64_t seg, i0, i1, s0, s1; };
  Range range(int64_t task) const {
    const int64_t seg = task / row_blocks, rb = task % row_blocks;
    const int64_t rows_per = ceil_div(K, row_blocks);
    const int64_t i0 = std::min(K, rb * rows_per), s0 = seg * seg_len;
    return {seg, i0, std::min(K, i0 + rows_per), s0, std::min(d, s0 + seg_len)};
  }
};

// Sums over the pairs of one block of columns, converted to double in tile[K, B].
template <bool kDist, bool kGram>
void accumulate_block(const double* __restrict__ tile, int64_t K, int64_t B, int64_t i0,
                      int64_t i1, double* __restrict__ dist, double* __restrict__ gram) {
  for (int64_t i = i0; i < i1; ++i) {
    const double* __restrict__ a = tile + i * B;
    for (int64_t j = i; j < K; ++j) {
      const double* __restrict__ b = tile + j * B;
      double acc_d[kLanes] = {0}, acc_g[kLanes] = {0};
      for (int64_t t = 0; t < B; t += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          if (kDist) { const double diff = a[t + l] - b[t + l]; acc_d[l] += diff * diff; }
          if (kGram) acc_g[l] += a[t + l] * b[t + l];
        }
      }
      double sd = 0.0, sg = 0.0;
      for (int l = 0; l < kLanes; ++l) { sd += acc_d[l]; sg += acc_g[l]; }
      if (kDist) dist[i * K + j] += sd;
      if (kGram) gram[i * K + j] += sg;
    }
  }
}

template <typename T, bool kDist, bool kGram>
void pairwise_impl(const T* __restrict__ u, int64_t K, int64_t d, double* dist, double* gram,
                   int num_threads) {
  const Split split(K, d, num_threads);
  const int64_t segments = split.segments;
  // Columns per block: the K rows of a block stay in L2.
  const int64_t B = std::max<int64_t>(kLanes, std::min<int64_t>(512, (1 << 16) / K) / kLanes * kLanes);
  std::vector<double> pd(kDist ? segments * K * K : 0), pg(kGram ? segments * K * K : 0);
  parallel_for(split.tasks(), threads_for(K * K * d / 2, num_threads), [&](int64_t task) {
    const auto [seg, i0, i1, s0, s1] = split.range(task);
    std::vector<double> tile(K * B);
    double* dseg = kDist ? pd.data() + seg * K * K : nullptr;
    double* gseg = kGram ? pg.data() + seg * K * K : nullptr;
    for (int64_t c0 = s0; c0 < s1; c0 += B) {
      const int64_t n = std::min(B, s1 - c0);
      for (int64_t k = i0; k < K; ++k) {  // rows < i0 are never read by this task
        const T* row = u + k * d + c0;
        double* dst = tile.data() + k * B;
        int64_t t = 0;
        for (; t < n; ++t) dst[t] = static_cast<double>(load(row + t));
        for (; t < B; ++t) dst[t] = 0.0;  // zero padding adds nothing to either sum
      }
      accumulate_block<kDist, kGram>(tile.data(), K, B, i0, i1, dseg, gseg);
    }
  });
  // Segment partials are added in segment order: independent of the thread count.
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = i; j < K; ++j) {
      double sd = 0.0, sg = 0.0;
      for (int64_t s = 0; s < segments; ++s) {
        if (kDist) sd += pd[s * K * K + i * K + j];
        if (kGram) sg += pg[s * K * K + i * K + j];
      }
      if (kDist) { dist[i * K + j] = (i == j) ? 0.0 : sd; dist[j * K + i] = dist[i * K + j]; }
      if (kGram) { gram[i * K + j] = sg; gram[j * K + i] = sg; }
    }
}

// Squared distances and Gram for float32 / float16 / bfloat16 input, from
// float32 blocks: every lane sums math::kSqBlock squared differences
// (math::sq_diff_block) and products (math::dot_block) and flushes them into
// double accumulators (the error bounds are in math/pairwise.h: about 6.6e-7
// relative for distances, 6.6e-7 |a| |b| for Gram entries), at twice the
// vector width, with one conversion per 256 coordinates. Identical rows still
// give exactly 0 distance and bitwise equal Gram entries.
constexpr int kFLanes = 16;
constexpr int kBlock = math::kSqBlock;
constexpr int64_t kFStep = kFLanes * kBlock;  // coordinates per flush

// One pair of float rows, n a multiple of kFStep. Accumulators are explicit
// vector values so that they stay in registers (an accumulator array is kept
// in memory by the compiler, which serialises every step on a store-load).
#if defined(__GNUC__)
typedef float vf16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));
static inline vf16 load_vf16(const float* p) { vf16 v; std::memcpy(&v, p, sizeof v); return v; }

// Lane l of `blk` is added to lane l of the double accumulator (lo: 0-7, hi:
// 8-15), converted as vectors: a lane loop here is compiled to scalar code.
static inline void flush(vf16 blk, vd8& lo, vd8& hi) {
  const vf8 a = __builtin_shufflevector(blk, blk, 0, 1, 2, 3, 4, 5, 6, 7);
  const vf8 b = __builtin_shufflevector(blk, blk, 8, 9, 10, 11, 12, 13, 14, 15);
#if defined(__AVX512F__)
  // One conversion instruction per half (GCC lowers __builtin_convertvector to
  // four narrower ones); the zero-masked form avoids GCC 12's false warning.
  lo += _mm512_maskz_cvtps_pd(0xFF, a);
  hi += _mm512_maskz_cvtps_pd(0xFF, b);
#else
  lo += __builtin_convertvector(a, vd8);
  hi += __builtin_convertvector(b, vd8);
#endif
}

// Lanes summed in order 0..15, as the portable kernels do.
static inline double lane_sum(vd8 lo, vd8 hi) {
  double sum = 0.0;
  for (int l = 0; l < 8; ++l) sum += lo[l];
  for (int l = 0; l < 8; ++l) sum += hi[l];
  return sum;
}

// R rows a[0..R) against one row b: b is loaded once for R pairs, which cuts
// the traffic from L2 R-fold. Every entry is bitwise the value the R = 1
// kernel gives (same lanes, same blocks, same order).
template <int R, bool kDist, bool kGram>
inline void float_pairs(const float* const* a, const float* __restrict__ b, int64_t n, double* dist,
                        double* gram) {
  vd8 dlo[R] = {}, dhi[R] = {}, glo[R] = {}, ghi[R] = {};
  for (int64_t t = 0; t < n; t += kFStep) {
    const auto lb = [&](int s) { return load_vf16(b + t + s * kFLanes); };
    for (int r = 0; r < R; ++r) {
      const float* __restrict__ ar = a[r];
      const auto la = [&](int s) { return load_vf16(ar + t + s * kFLanes); };
      if (kDist) flush(math::sq_diff_block<vf16>(la, lb), dlo[r], dhi[r]);
      if (kGram) flush(math::dot_block<vf16>(la, lb), glo[r], ghi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    if (kDist) dist[r] = lane_sum(dlo[r], dhi[r]);
    if (kGram) gram[r] = lane_sum(glo[r], ghi[r]);
  }
}
#else
template <int R, bool kDist, bool kGram>
inline void float_pairs(const float* const* a, const float* __restrict__ b, int64_t n, double* dist,
                        double* gram) {
  for (int r = 0; r < R; ++r) {
    double acc_d[kFLanes] = {0}, acc_g[kFLanes] = {0};
    for (int64_t t = 0; t < n; t += kFStep) {
      for (int l = 0; l < kFLanes; ++l) {
        const auto la = [&](int s) { return a[r][t + s * kFLanes + l]; };
        const auto lb = [&](int s) { return b[t + s * kFLanes + l]; };
        if (kDist) acc_d[l] += static_cast<double>(math::sq_diff_block<float>(la, lb));
        if (kGram) acc_g[l] += static_cast<double>(math::dot_block<float>(la, lb));
      }
    }
    double sd = 0.0, sg = 0.0;
    for (int l = 0; l < kFLanes; ++l) { sd += acc_d[l]; sg += acc_g[l]; }
    if (kDist) dist[r] = sd;
    if (kGram) gram[r] = sg;
  }
}
#endif

template <typename T, bool kDist, bool kGram>
void float_blocks_impl(const T* __restrict__ u, int64_t K, int64_t d, double* dist, double* gram,
                       int num_threads) {
  const Split split(K, d, num_threads);
  const int64_t segments = split.segments;
  const int64_t B = std::max<int64_t>(kFStep, std::min<int64_t>(1024, (1 << 17) / K) / kFStep * kFStep);
  std::vector<double> pd(kDist ? segments * K * K : 0, 0.0), pg(kGram ? segments * K * K : 0, 0.0);
  const int64_t first = kGram ? 0 : 1;  // the Gram needs the diagonal, distances do not
  parallel_for(split.tasks(), threads_for(K * K * d / 2, num_threads), [&](int64_t task) {
    const auto [seg, i0, i1, s0, s1] = split.range(task);
    std::vector<float> tile(K * B);
    double* dseg = kDist ? pd.data() + seg * K * K : nullptr;
    double* gseg = kGram ? pg.data() + seg * K * K : nullptr;
    // Adds the sums of rows a[0..R) (starting at row i) against row j.
    const auto add = [&](auto R_, const float* const* a, int64_t i, int64_t j, int64_t nb) {
      constexpr int R = decltype(R_)::value;
      double od[R], og[R];
      float_pairs<R, kDist, kGram>(a, tile.data() + j * B, nb, od, og);
      for (int r = 0; r < R; ++r) {
        if (kDist) dseg[(i + r) * K + j] += od[r];
        if (kGram) gseg[(i + r) * K + j] += og[r];
      }
    };
    using One = std::integral_constant<int, 1>;
    using Four = std::integral_constant<int, 4>;
    for (int64_t c0 = s0; c0 < s1; c0 += B) {
      const int64_t n = std::min(B, s1 - c0);
      const int64_t nb = ceil_div(n, kFStep) * kFStep;  // padded length actually swept
      for (int64_t k = i0; k < K; ++k) {
        const T* row = u + k * d + c0;
        float* dst = tile.data() + k * B;
        int64_t t = 0;
        for (; t < n; ++t) dst[t] = static_cast<float>(load(row + t));
        for (; t < nb; ++t) dst[t] = 0.0f;  // zero padding adds nothing to either sum
      }
      int64_t i = i0;
      for (; i + 4 <= i1; i += 4) {  // rows i..i+3 against every later row
        const float* a[4] = {tile.data() + i * B, tile.data() + (i + 1) * B,
                             tile.data() + (i + 2) * B, tile.data() + (i + 3) * B};
        for (int64_t r = 0; r < 4; ++r)  // pairs inside the block of four
          for (int64_t j = i + r + first; j < i + 4; ++j) add(One{}, &a[r], i + r, j, nb);
        for (int64_t j = i + 4; j < K; ++j) add(Four{}, a, i, j, nb);
      }
      for (; i < i1; ++i) {
        const float* a[1] = {tile.data() + i * B};
        for (int64_t j = i + first; j < K; ++j) add(One{}, a, i, j, nb);
      }
    }
  });
  for (int64_t i = 0; i < K; ++i) {
    if (kDist) dist[i * K + i] = 0.0;
    for (int64_t j = i + first; j < K; ++j) {
      double sd = 0.0, sg = 0.0;
      for (int64_t s = 0; s < segments; ++s) {
        if (kDist) sd += pd[s * K * K + i * K + j];
        if (kGram) sg += pg[s * K * K + i * K + j];
      }
      if (kDist && j != i) { dist[i * K + j] = sd; dist[j * K + i] = sd; }
      if (kGram) { gram[i * K + j] = sg; gram[j * K + i] = sg; }
    }
  }
}

template <typename T>
void float_blocks(const T* u, int64_t K, int64_t d, double* dist, double* gram, int threads) {
  if (dist && gram) float_blocks_impl<T, true, true>(u, K, d, dist, gram, threads);
  else if (dist) float_blocks_impl<T, true, false>(u, K, d, dist, nullptr, threads);
  else if (gram) float_blocks_impl<T, false, true>(u, K, d, nullptr, gram, threads);
}

template <typename T>
void pairwise_double(const T* u, int64_t K, int64_t d, double* dist, double* gram, int threads) {
  if (dist && gram) pairwise_impl<T, true, true>(u, K, d, dist, gram, threads);
  else if (dist) pairwise_impl<T, true, false>(u, K, d, dist, nullptr, threads);
  else if (gram) pairwise_impl<T, false, true>(u, K, d, nullptr, gram, threads);
}

template <typename V> void store(const std::vector<double>& src, void* dst) {
  V* out = static_cast<V*>(dst);
  for (size_t i = 0; i < src.size(); ++i) out[i] = static_cast<V>(src[i]);
}

}  // namespace

void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d, void* sqdist,
                    void* gram, int num_threads) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    std::vector<double> dist(sqdist ? K * K : 0), g(gram ? K * K : 0);
    if (!std::is_same<T, double>::value) {
      float_blocks(static_cast<const T*>(updates), K, d, sqdist ? dist.data() : nullptr,
                   gram ? g.data() : nullptr, num_threads);
    } else {
      pairwise_double(static_cast<const T*>(updates), K, d, sqdist ? dist.data() : nullptr,
                      gram ? g.data() : nullptr, num_threads);
    }
    if (sqdist) store<V>(dist, sqdist);
    if (gram) store<V>(g, gram);
  });
}

void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d, double* sqdist,
                        double* gram, bool fast, int num_threads) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    if (fast && !std::is_same<T, double>::value)
      float_blocks(static_cast<const T*>(updates), K, d, sqdist, gram, num_threads);
    else
      pairwise_double(static_cast<const T*>(updates), K, d, sqdist, gram, num_threads);
  });
}

void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d, void* out,
                       int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    std::vector<double> g(K * K), cos(K * K);
    pairwise_double(static_cast<const T*>(updates), K, d, nullptr, g.data(), num_threads);
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j) {
        cos[i * K + j] = math::cosine_from_gram(g[i * K + j], g[i * K + i], g[j * K + j]);
      }
    store<V>(cos, out);
  });
}

}  // namespace cpu
}  // namespace robustagg
