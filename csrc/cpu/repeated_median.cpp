// No fused multiply-adds in this file (see the header).
#include "robustagg/math/no_contraction.h"

#include "robustagg/repeated_median.h"

#include "robustagg/math/residual.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "sorting.h"

namespace robustagg {
namespace cpu {
namespace {

constexpr int TL = 32;                 // lanes (coordinates) per tile; all arithmetic in double
constexpr int64_t kTilesPerTask = 4;
// A task is one block of W's partial sums, as on the device (math/residual.h).
static_assert(TL * kTilesPerTask == math::kResidualBlock, "W's blocks must match the device's");
// Up to this many values a median is taken with a pruned network over the
// tile's lanes; above it, per lane with nth_element (the network is 2.5x faster
// at 1024 values, 5x at 200).
constexpr int64_t kMaxMedianNetwork = 2048;
// Up to this K, fit_line keeps every pair's value ([K, K-1, TL] doubles, 1 MB
// at 64) and computes each once; above it, row by row, each pair twice.
constexpr int64_t kMaxSymmetricK = 64;

using math::div_rcp;

// Median of each lane of buf[rows, TL] into out[TL]; reorders buf.
class LaneMedian {
 public:
  explicit LaneMedian(int64_t rows)
      : rows_(rows), use_net_(rows <= kMaxMedianNetwork), sorter_(use_net_ ? rows : 1, true), col_(rows) {}
  LaneMedian(const LaneMedian& o)
      : rows_(o.rows_), use_net_(o.use_net_), sorter_(o.sorter_), col_(o.col_.size()) {}

  // nan_safe: the values may hold NaN (pair values of a tile with magnitudes
  // past 2^400 can overflow to inf - inf): the networks' min/max do not keep
  // the NaN-last order, so each lane is selected with it instead.
  void operator()(double* __restrict__ buf, double* __restrict__ out, bool nan_safe = false) {
#if ROBUSTAGG_REGISTER_NETWORKS
    static constexpr auto medians = fixed_medians<double, TL>(std::make_index_sequence<kRegRows + 1>{});
    if (rows_ <= kRegRows && !nan_safe) {
      medians[rows_](buf, out);
      return;
    }
#endif
    if (use_net_ && !nan_safe) {
      sorter_.apply(buf);
      const double* a = buf + ((rows_ - 1) / 2) * TL;
      const double* b = buf + (rows_ / 2) * TL;
      if (rows_ % 2 == 1) {
        for (int t = 0; t < TL; ++t) out[t] = b[t];
      } else {
        for (int t = 0; t < TL; ++t) out[t] = math::midpoint(a[t], b[t]);
      }
      return;
    }
    for (int t = 0; t < TL; ++t) {
      for (int64_t r = 0; r < rows_; ++r) col_[r] = buf[r * TL + t];
      const int64_t hi = rows_ / 2;
      std::nth_element(col_.begin(), col_.begin() + hi, col_.end(), nan_last_less<double>);
      const double b = col_[hi];
      if (rows_ % 2 == 1) { out[t] = b; continue; }
      const double a = *std::max_element(col_.begin(), col_.begin() + hi, nan_last_less<double>);
      out[t] = math::midpoint(a, b);
    }
  }

 private:
  int64_t rows_;
  bool use_net_;
  TileSorter<double, TL> sorter_;
  std::vector<double> col_;
};

// Sorts each lane of (val, idx)[K, TL] by value, ties by client index (the
// lexicographic key makes every key distinct, so the network's result is the
// stable order). Lanes must not hold NaN (they are masked out by callers).
void sort_with_index(double* __restrict__ val, double* __restrict__ idx, const Network& net) {
  for (const auto& c : net) {
    double* __restrict__ va = val + static_cast<int64_t>(c.first) * TL;
    double* __restrict__ vb = val + static_cast<int64_t>(c.second) * TL;
    double* __restrict__ ia = idx + static_cast<int64_t>(c.first) * TL;
    double* __restrict__ ib = idx + static_cast<int64_t>(c.second) * TL;
    for (int t = 0; t < TL; ++t) {
      const double x = va[t], y = vb[t], ix = ia[t], iy = ib[t];
      const bool swap = math::rank_before(y, iy, x, ix);
      va[t] = swap ? y : x;  vb[t] = swap ? x : y;
      ia[t] = swap ? iy : ix; ib[t] = swap ? ix : iy;
    }
  }
}

// Whether the repeated medians of K points take the float-key path (below).
// Up to kMaxSymmetricK the double path, which computes each pair once, is
// faster (measured: 0.65 against 1.17 ns per K^2 d at K = 40; at K = 100, 1.05
// against 0.83).
inline bool use_float_keys(int64_t K) { return K > kMaxSymmetricK && K - 1 <= kMaxMedianNetwork; }

// Scratch of the float-key path: a row's K - 1 keys, each row's two middle
// keys and the interval of its median, the outer networks, and one column of
// exact pair values for the rows that are refined.
struct KeyScratch {
  TileSorter<float, TL> inner;   // the middle positions of K - 1 keys
  TileSorter<double, TL> outer;  // the middle positions of K interval ends
  std::vector<float> keys, mid_lo, mid_hi;  // [K - 1, TL]; [K, TL]; [K, TL]
  std::vector<double> lo, hi, ends;          // [K, TL] each
  std::vector<double> col, cand;             // K - 1; K
  std::vector<int64_t> memo_row;             // K: rows refined for the current lane
  std::vector<double> memo_val;
  explicit KeyScratch(int64_t K)
      : inner(K - 1, true), outer(K, true), keys((K - 1) * TL), mid_lo(K * TL), mid_hi(K * TL), lo(K * TL),
        hi(K * TL), ends(K * TL), col(K - 1), cand(K), memo_row(K), memo_val(K) {}
};

// Per-task scratch and the fixed per-K pieces (networks, leverages).
struct Workspace {
  int64_t K;
  Network sort_net;
  bool float_keys;
  LaneMedian inner, outer;  // medians of K-1 and of K values (the double path)
  bool symmetric;  // all K (K - 1) pair values held at once (small K: they fit in L2)
  std::vector<double> val, idx, pairs, meds;
  std::vector<char> finite;
  std::vector<double> rdx;        // 1 / dx for the rank gaps dx < K
  std::vector<KeyScratch> keyed;  // one, on the float-key path

  explicit Workspace(int64_t K_)
      : K(K_), sort_net(batcher_network(K_)), float_keys(use_float_keys(K_)),
        inner(std::max<int64_t>(K_ - 1, 1)), outer(K_),
        symmetric(K_ <= kMaxSymmetricK), val(K_ * TL), idx(K_ * TL),
        pairs(std::max<int64_t>(K_ - 1, 1) * TL * (symmetric ? K_ : 1)),
        meds(K_ * TL), finite(TL), rdx(std::max<int64_t>(K_, 1)) {
    for (int64_t dx = 1; dx < K_; ++dx) rdx[dx] = 1.0 / static_cast<double>(dx);
    if (float_keys) keyed.emplace_back(K_);
  }
};

// Loads n <= TL coordinates from column j0 into val (as double) and idx
// (client index), flags in finite[] the lanes whose K values are all finite,
// and sorts each lane (value, then client index). Non-finite lanes are zeroed
// first so that the network stays well defined; callers mask them out.
template <typename T>
void load_and_sort(const T* __restrict__ u, int64_t K, int64_t d, int64_t j0, int64_t n,
                   const Network& net, double* __restrict__ val, double* __restrict__ idx,
                   char* __restrict__ finite) {
  double probe[TL];  // x * 0 is NaN exactly when x is infinite or NaN
  for (int t = 0; t < TL; ++t) probe[t] = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const T* __restrict__ row = u + k * d + j0;
    double* __restrict__ v = val + k * TL;
    double* __restrict__ ix = idx + k * TL;
    if (n == TL) {
      for (int t = 0; t < TL; ++t) v[t] = static_cast<double>(load(row + t));
    } else {
      for (int t = 0; t < TL; ++t) v[t] = t < n ? static_cast<double>(load(row + t)) : 0.0;
    }
    for (int t = 0; t < TL; ++t) {
      probe[t] += v[t] * 0.0;
      ix[t] = static_cast<double>(k);
    }
  }
  int all_finite = 1;
  for (int t = 0; t < TL; ++t) {
    finite[t] = probe[t] == probe[t];
    all_finite &= finite[t];
  }
  if (!all_finite)
    for (int64_t k = 0; k < K; ++k)
      for (int t = 0; t < TL; ++t)
        if (!finite[t]) val[k * TL + t] = 0.0;
  sort_with_index(val, idx, net);
}

template <typename T>
void load_and_sort(const T* __restrict__ u, int64_t d, int64_t j0, int64_t n, Workspace& ws) {
  load_and_sort(u, ws.K, d, j0, n, ws.sort_net, ws.val.data(), ws.idx.data(), ws.finite.data());
}

// The authors' intercept, med(y) - slope (K - 1) / 2, of the sorted lanes in ws.val.
void median_intercept(const Workspace& ws, const double* __restrict__ slope, double* __restrict__ intercept) {
  const int64_t K = ws.K;
  const double* a = ws.val.data() + ((K - 1) / 2) * TL;
  const double* b = ws.val.data() + (K / 2) * TL;
  const double xbar = 0.5 * static_cast<double>(K - 1);
  for (int t = 0; t < TL; ++t) {
    const double med = (K % 2 == 1) ? b[t] : math::midpoint(a[t], b[t]);
    intercept[t] = med - slope[t] * xbar;
  }
}

// ---------------------------------------------------------------------------
// The float-key path of the repeated medians (use_float_keys: K above 64;
// the keys, their bounds and the rows' intervals are math/residual.h's, as the
// CUDA kernels use them). A network over doubles costs two vector min/max per
// comparator and lane group; over floats it does twice the lanes per
// instruction. The result is bitwise the double path's: medians are exact
// order statistics, whatever selects them (python_tests/test_device_math.py
// checks the two paths, and the emulated launchers, against each other).

enum class Pair { Slope, Intercept };

// The numerator of eq. (1) or (2) for the points of ranks a < b.
template <Pair kPair>
inline double pair_numerator(double ya, double yb, int64_t a, int64_t b) {
  if constexpr (kPair == Pair::Slope) return math::slope_numerator(ya, yb);
  else return math::intercept_numerator(ya, yb, static_cast<double>(a), static_cast<double>(b));
}

// eq. (1) or (2) for the points of ranks a < b; rdx = 1 / (b - a).
template <Pair kPair>
inline double pair_value(double ya, double yb, int64_t a, int64_t b, double rdx) {
  return math::div_rcp(pair_numerator<kPair>(ya, yb, a, b), static_cast<double>(b - a), rdx);
}

using math::key_high;
using math::key_low;
using math::pair_key;

// The value of rank r in v[0..n) given that it lies in [lo, hi]: counted below
// lo, selected among the few values inside (all of them, with nth_element, if
// more than a handful are). Reorders v.
inline double rank_in_bounds(double* v, int64_t n, int64_t r, double lo, double hi) {
  constexpr int kSmall = 16;
  double small[kSmall];
  int64_t below = 0, inside = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double x = v[k];
    if (x < lo) ++below;
    else if (x <= hi) {
      if (inside < kSmall) small[inside] = x;
      ++inside;
    }
  }
  if (inside > kSmall || r < below || r >= below + inside) {
    std::nth_element(v, v + r, v + n);
    return v[r];
  }
  std::sort(small, small + inside);
  return small[r - below];
}

constexpr int64_t kMaxRefined = 8;  // rows refined per lane before the double path takes the tile

template <Pair kPair>
class KeyedMedian {
 public:
  KeyedMedian(const Workspace& ws, KeyScratch& ks) : K_(ws.K), y_(ws.val.data()), rdx_(ws.rdx.data()), ks_(ks) {}

  // med_i med_{j != i} of the pair values of each lane into result[TL]. The
  // values must be finite (fit_line_keyed checks the inputs' range). Returns
  // false when a lane would refine more than kMaxRefined rows (keys tied
  // across many rows, as with nearly collinear points): the double path is
  // then faster.
  bool operator()(double* __restrict__ result) {
    const int64_t K = K_, n = K - 1, lo = (n - 1) / 2, hi = n / 2;
    float* __restrict__ keys = ks_.keys.data();
    for (int64_t i = 0; i < K; ++i) {
      int64_t row = 0;
      for (int64_t j = 0; j < K; ++j) {
        if (j == i) continue;
        const int64_t a = std::min(i, j), b = std::max(i, j);
        const double* __restrict__ ya = y_ + a * TL;
        const double* __restrict__ yb = y_ + b * TL;
        float* __restrict__ kr = keys + (row++) * TL;
        const double den = static_cast<double>(b - a), rdx = rdx_[b - a];
        for (int t = 0; t < TL; ++t) kr[t] = pair_key(pair_numerator<kPair>(ya[t], yb[t], a, b), den, rdx);
      }
      ks_.inner.apply(keys);
      for (int t = 0; t < TL; ++t) {
        const float A = keys[lo * TL + t], B = keys[hi * TL + t];
        const int64_t at = i * TL + t;
        ks_.mid_lo[at] = A;
        ks_.mid_hi[at] = B;
        const math::Interval in = math::key_interval(A, B, lo == hi);
        ks_.lo[at] = in.lo;
        ks_.hi[at] = in.hi;
      }
    }
    // The outer ranks' bounds: the same ranks of the rows' lower and upper ends.
    const int64_t olo = (K - 1) / 2, ohi = K / 2;
    double Llo[TL], Lhi[TL], Ulo[TL], Uhi[TL];
    std::copy(ks_.lo.begin(), ks_.lo.end(), ks_.ends.begin());
    ks_.outer.apply(ks_.ends.data());
    for (int t = 0; t < TL; ++t) { Llo[t] = ks_.ends[olo * TL + t]; Lhi[t] = ks_.ends[ohi * TL + t]; }
    std::copy(ks_.hi.begin(), ks_.hi.end(), ks_.ends.begin());
    ks_.outer.apply(ks_.ends.data());
    for (int t = 0; t < TL; ++t) { Ulo[t] = ks_.ends[olo * TL + t]; Uhi[t] = ks_.ends[ohi * TL + t]; }
    for (int t = 0; t < TL; ++t) {
      memo_ = 0;
      const double m_lo = outer_rank(t, olo, Llo[t], Ulo[t]);
      const double m_hi = olo == ohi ? m_lo : outer_rank(t, ohi, Lhi[t], Uhi[t]);
      if (memo_ > kMaxRefined) return false;
      result[t] = K % 2 == 1 ? m_hi : math::midpoint(m_lo, m_hi);
    }
    return true;
  }

 private:
  // The row medians' value of rank r in lane t, given that it lies in [L, U].
  double outer_rank(int t, int64_t r, double L, double U) {
    int64_t below = 0, nc = 0;
    double* cand = ks_.cand.data();
    for (int64_t i = 0; i < K_; ++i) {
      const double l = ks_.lo[i * TL + t], u = ks_.hi[i * TL + t];
      if (u < L) ++below;
      else if (l <= U) cand[nc++] = l == u ? l : exact_row(i, t);
      if (memo_ > kMaxRefined) return 0.0;  // the caller gives up on the tile
    }
    if (r < below || r >= below + nc) {  // unreachable if the bounds hold; exact regardless
      for (int64_t i = 0; i < K_; ++i) cand[i] = exact_row(i, t);
      below = 0;
      nc = K_;
    }
    std::nth_element(cand, cand + (r - below), cand + nc);
    return cand[r - below];
  }

  // Row i's median in lane t, from its pair values in double.
  double exact_row(int64_t i, int t) {
    for (int64_t m = 0; m < memo_; ++m)
      if (ks_.memo_row[m] == i) return ks_.memo_val[m];
    const int64_t n = K_ - 1, lo = (n - 1) / 2, hi = n / 2;
    double* col = ks_.col.data();
    int64_t row = 0;
    for (int64_t j = 0; j < K_; ++j) {
      if (j == i) continue;
      const int64_t a = std::min(i, j), b = std::max(i, j);
      col[row++] = pair_value<kPair>(y_[a * TL + t], y_[b * TL + t], a, b, rdx_[b - a]);
    }
    const float A = ks_.mid_lo[i * TL + t], B = ks_.mid_hi[i * TL + t];
    const double a = rank_in_bounds(col, n, lo, key_low(A), key_high(A));
    const double v = lo == hi ? a : math::midpoint(a, rank_in_bounds(col, n, hi, key_low(B), key_high(B)));
    ks_.memo_row[memo_] = i;
    ks_.memo_val[memo_++] = v;
    return v;
  }

  int64_t K_;
  const double* y_;
  const double* rdx_;
  KeyScratch& ks_;
  int64_t memo_ = 0;
};

// fit_line on the float-key path. False for a tile the double path must
// take: one with a value of magnitude 2^400 or more, whose pair values may
// overflow, or one with many rows to refine (found out, or foreseen from
// tied values).
bool fit_line_keyed(Workspace& ws, InterceptMode mode, double* __restrict__ slope, double* __restrict__ intercept) {
  const int64_t K = ws.K;
  const double* y = ws.val.data();
  double big = 0.0;
  for (int64_t k = 0; k < K * TL; ++k) big = std::max(big, std::abs(y[k]));
  if (!(big < math::kKeyedMagnitude)) return false;
  // Many equal nonzero values (quantised updates) tie many rows' medians at
  // inexact keys, all of which would be refined: the double path is faster.
  int64_t tied = 0;
  for (int64_t k = TL; k < K * TL; ++k) tied += (y[k] == y[k - TL]) & (y[k] != 0.0);
  if (tied * 8 > K * TL) return false;
  KeyScratch& ks = ws.keyed.front();
  if (!KeyedMedian<Pair::Slope>(ws, ks)(slope)) return false;
  if (mode == InterceptMode::Median) {
    median_intercept(ws, slope, intercept);
    return true;
  }
  return KeyedMedian<Pair::Intercept>(ws, ks)(intercept);
}

// Siegel's repeated-median line of the sorted lanes in ws.val: eq. (1) and (2).
void fit_line(Workspace& ws, InterceptMode mode, double* __restrict__ slope,
              double* __restrict__ intercept) {
  const int64_t K = ws.K;
  const double* y = ws.val.data();
  if (K == 1) {
    for (int t = 0; t < TL; ++t) { slope[t] = 0.0; intercept[t] = y[t]; }
    return;
  }
  if (ws.float_keys && fit_line_keyed(ws, mode, slope, intercept)) return;
  double big = 0.0;  // magnitudes past 2^400 may give NaN pair values (inf - inf)
  for (int64_t k = 0; k < K * TL; ++k) big = std::max(big, std::abs(y[k]));
  const bool nan_safe = !(big < math::kKeyedMagnitude);
  double* meds = ws.meds.data();
  // Both pairwise quantities are symmetric in (i, j) (negating numerator and
  // denominator is exact), so each pair is computed once and written to the
  // rows of both i and j.
  const auto pairwise_medians = [&](auto pair_value, double* result) {
    double* pairs = ws.pairs.data();
    if (ws.symmetric) {
      const int64_t stride = (K - 1) * TL;  // row i holds j != i in order of j
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = i + 1; j < K; ++j) {
          double* pi = pairs + i * stride + (j - 1) * TL;
          double* pj = pairs + j * stride + i * TL;
          pair_value(i, j, pi);
          for (int t = 0; t < TL; ++t) pj[t] = pi[t];
        }
      for (int64_t i = 0; i < K; ++i) ws.inner(pairs + i * stride, meds + i * TL, nan_safe);
    } else {
      for (int64_t i = 0; i < K; ++i) {
        int64_t row = 0;
        for (int64_t j = 0; j < K; ++j)
          if (j != i) pair_value(std::min(i, j), std::max(i, j), pairs + (row++) * TL);
        ws.inner(pairs, meds + i * TL, nan_safe);
      }
    }
    ws.outer(meds, result, nan_safe);
  };
  // eq. (1): med_i med_{j != i} (y_j - y_i) / (j - i)
  pairwise_medians([&](int64_t i, int64_t j, double* __restrict__ p) {
    const double* __restrict__ yi = y + i * TL;
    const double* __restrict__ yj = y + j * TL;
    const double rdx = ws.rdx[j - i];
    for (int t = 0; t < TL; ++t) p[t] = pair_value<Pair::Slope>(yi[t], yj[t], i, j, rdx);
  }, slope);
  if (mode == InterceptMode::Median) {
    median_intercept(ws, slope, intercept);
    return;
  }
  // eq. (2): med_i med_{j != i} (j y_i - i y_j) / (j - i)
  pairwise_medians([&](int64_t i, int64_t j, double* __restrict__ p) {
    const double* __restrict__ yi = y + i * TL;
    const double* __restrict__ yj = y + j * TL;
    const double rdx = ws.rdx[j - i];
    for (int t = 0; t < TL; ++t) p[t] = pair_value<Pair::Intercept>(yi[t], yj[t], i, j, rdx);
  }, intercept);
}

// Quantities of Algorithm 1 that depend only on K (math/residual.h).
struct RankConstants {
  std::vector<double> s;  // sqrt(1 - h(x)) for rank x: leverage of X = [1, x]
  std::vector<double> rs;  // 1 / s
  double Z;               // Psi clamps at +-Z = lam sqrt(2 / K)
  double tau_scale;       // 1.4826 (1 + 5 / (K - 1)), eq. (3)
  RankConstants(int64_t K, double lam) : s(K), rs(K) {
    for (int64_t x = 0; x < K; ++x) {
      s[x] = math::rank_sqrt_one_minus_h(x, K);
      rs[x] = 1.0 / s[x];
    }
    Z = math::band_limit(lam, K);
    tau_scale = math::residual_scale_factor(K);
  }
};

using math::confidence;

// Whether every lane's residual scale allows confidence<true>.
inline bool scales_allow_rcp(const double* tau) {
  int ok = 1;
  for (int t = 0; t < TL; ++t) ok &= math::scale_allows_rcp(tau[t]);
  return ok != 0;
}

}  // namespace

void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d,
                          InterceptMode mode, void* slope_out, void* intercept_out,
                          int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    const T* u = static_cast<const T*>(updates);
    V* slope = static_cast<V*>(slope_out);
    V* intercept = static_cast<V*>(intercept_out);
    const Workspace proto(K);
    const int64_t tiles = ceil_div(d, TL), tasks = ceil_div(tiles, kTilesPerTask);
    parallel_for(tasks, threads_for(K * K * d, num_threads), [&](int64_t task) {
      Workspace ws(proto);
      double b1[TL], b0[TL];
      const int64_t tile_end = std::min(tiles, (task + 1) * kTilesPerTask);
      for (int64_t ti = task * kTilesPerTask; ti < tile_end; ++ti) {
        const int64_t j0 = ti * TL, n = std::min<int64_t>(TL, d - j0);
        load_and_sort(u, d, j0, n, ws);
        fit_line(ws, mode, b1, b0);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        for (int64_t t = 0; t < n; ++t) {
          slope[j0 + t] = static_cast<V>(ws.finite[t] ? b1[t] : nan);
          intercept[j0 + t] = static_cast<V>(ws.finite[t] ? b0[t] : nan);
        }
      }
    });
  });
}

namespace {

// The three entries of Algorithm 1: the whole of it; only pass 1's client sums
// W of eq. (10) (of this tensor's coordinates: a shard's partial sums); and
// eq. (11) + pass 2 from given sums (the all-reduced W of every shard).
enum class ResidualPart { Whole, ClientSums, Apply };

void residual(ResidualPart part, const void* updates, DType dtype, int64_t K, int64_t d, double lam,
              double delta, double power, InterceptMode mode, const double* W_given, double* W_out,
              void* client_weights_out, void* aggregate_out, int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    const T* u = static_cast<const T*>(updates);
    V* cw_out = static_cast<V*>(client_weights_out);
    V* agg = static_cast<V*>(aggregate_out);
    std::vector<double> cw(K, 1.0 / static_cast<double>(K));

    if (K < 3) {  // degenerate: plain mean, uniform client weights, no client sums
      if (part == ResidualPart::ClientSums) {
        for (int64_t k = 0; k < K; ++k) W_out[k] = 0.0;
        return;
      }
      for (int64_t k = 0; k < K; ++k) cw_out[k] = static_cast<V>(cw[k]);
      parallel_for(ceil_div(d, 4096), threads_for(K * d, num_threads), [&](int64_t task) {
        const int64_t j1 = std::min(d, (task + 1) * 4096);
        for (int64_t j = task * 4096; j < j1; ++j) agg[j] = static_cast<V>(math::plain_mean_column(u + j, K, d));
      });
      return;
    }

    const RankConstants rc(K, lam);
    const Workspace proto(K);
    const int64_t tiles = ceil_div(d, TL), tasks = ceil_div(tiles, kTilesPerTask);
    const int threads = threads_for(K * K * d, num_threads);
    // Line parameters and residual scale per coordinate, reused by pass 2.
    std::vector<double> beta0(d), beta1(d), tau(d);
    std::vector<double> partial_W(tasks * K, 0.0);  // per task, summed in task order

    // Pass 1: lines, confidences and eq. (10) accumulation.
    parallel_for(tasks, threads, [&](int64_t task) {
      Workspace ws(proto);
      double b1[TL], b0[TL], mad[TL];
      std::vector<double> absr(K * TL), conf(K * TL);
      LaneMedian med_abs(K);
      double* W = partial_W.data() + task * K;
      const int64_t tile_end = std::min(tiles, (task + 1) * kTilesPerTask);
      for (int64_t ti = task * kTilesPerTask; ti < tile_end; ++ti) {
        const int64_t j0 = ti * TL, n = std::min<int64_t>(TL, d - j0);
        load_and_sort(u, d, j0, n, ws);
        fit_line(ws, mode, b1, b0);
        // Residuals go to conf (overwritten by the confidences below); their
        // absolute values to absr, which the median may reorder.
        int any_nan = 0;  // residuals of a line through huge values may be NaN
        for (int64_t x = 0; x < K; ++x)
          for (int t = 0; t < TL; ++t) {
            const double r = ws.val[x * TL + t] - (b0[t] + b1[t] * x);
            conf[x * TL + t] = r;
            absr[x * TL + t] = std::abs(r);
            any_nan |= r != r;
          }
        med_abs(absr.data(), mad, any_nan != 0);  // eq. (4)
        double tau_t[TL];
        for (int t = 0; t < TL; ++t) tau_t[t] = rc.tau_scale * mad[t];
        double rtau[TL];
        for (int t = 0; t < TL; ++t) rtau[t] = 1.0 / tau_t[t];
        const auto confidences = [&](auto rcp) {
          for (int64_t x = 0; x < K; ++x)
            for (int t = 0; t < TL; ++t)
              conf[x * TL + t] = confidence<decltype(rcp)::value>(conf[x * TL + t], tau_t[t], rtau[t],
                                                                   rc.s[x], rc.rs[x], rc.Z, delta);
        };
        if (scales_allow_rcp(tau_t)) confidences(std::true_type{});
        else confidences(std::false_type{});
        // eq. (10): the unbiased standard deviation of each lane's confidences.
        double mean[TL], var[TL], sigma[TL];
        for (int t = 0; t < TL; ++t) mean[t] = var[t] = 0.0;
        for (int64_t x = 0; x < K; ++x)
          for (int t = 0; t < TL; ++t) mean[t] += conf[x * TL + t];
        for (int t = 0; t < TL; ++t) mean[t] /= static_cast<double>(K);
        for (int64_t x = 0; x < K; ++x)
          for (int t = 0; t < TL; ++t) {
            const double dev = conf[x * TL + t] - mean[t];
            var[t] += dev * dev;
          }
        for (int t = 0; t < TL; ++t) sigma[t] = std::sqrt(var[t] / static_cast<double>(K - 1));
        for (int64_t t = 0; t < n; ++t) {
          beta0[j0 + t] = b0[t]; beta1[j0 + t] = b1[t]; tau[j0 + t] = tau_t[t];
          if (!ws.finite[t]) continue;  // non-finite columns add nothing to W
          for (int64_t x = 0; x < K; ++x)
            W[static_cast<int64_t>(ws.idx[x * TL + t])] += conf[x * TL + t] * sigma[t];
        }
      }
    });

    // eq. (11), with W^power; uniform when every coordinate's confidences were equal.
    std::vector<double> W(K, 0.0);
    for (int64_t task = 0; task < tasks; ++task)
      for (int64_t k = 0; k < K; ++k) W[k] += partial_W[task * K + k];
    if (part == ResidualPart::ClientSums) {
      for (int64_t k = 0; k < K; ++k) W_out[k] = W[k];
      return;
    }
    if (part == ResidualPart::Apply) W.assign(W_given, W_given + K);
    math::client_weights_from_sums(W.data(), K, power, cw.data());
    for (int64_t k = 0; k < K; ++k) cw_out[k] = static_cast<V>(cw[k]);

    // Pass 2: the weighted sum of extreme-value-corrected values, eq. (9).
    parallel_for(tasks, threads, [&](int64_t task) {
      std::vector<double> val(K * TL), idx(K * TL);
      const Network& net = proto.sort_net;
      const int64_t tile_end = std::min(tiles, (task + 1) * kTilesPerTask);
      for (int64_t ti = task * kTilesPerTask; ti < tile_end; ++ti) {
        const int64_t j0 = ti * TL, n = std::min<int64_t>(TL, d - j0);
        char finite[TL];
        load_and_sort(u, K, d, j0, n, net, val.data(), idx.data(), finite);
        double raw[TL];  // non-finite columns: weighted sum of the raw values
        for (int64_t t = 0; t < n; ++t) {
          raw[t] = 0.0;
          if (finite[t]) continue;
          for (int64_t k = 0; k < K; ++k) raw[t] += cw[k] * static_cast<double>(load(u + k * d + j0 + t));
        }
        // Lanes past n get a harmless line (0, 0) and scale 1; they are not stored.
        double b0[TL], b1[TL], tj[TL], acc[TL], cwx[TL];
        for (int t = 0; t < TL; ++t) {
          const bool in = t < n;
          b0[t] = in ? beta0[j0 + t] : 0.0;
          b1[t] = in ? beta1[j0 + t] : 0.0;
          tj[t] = in ? tau[j0 + t] : 1.0;
          acc[t] = 0.0;
        }
        double rtau[TL];
        for (int t = 0; t < TL; ++t) rtau[t] = 1.0 / tj[t];
        const auto corrected_sum = [&](auto rcp) {
          for (int64_t x = 0; x < K; ++x) {
            const double* __restrict__ yv = val.data() + x * TL;
            const double* __restrict__ iv = idx.data() + x * TL;
            for (int t = 0; t < TL; ++t) cwx[t] = cw[static_cast<int64_t>(iv[t])];
            const double sx = rc.s[x], rsx = rc.rs[x], xd = static_cast<double>(x);
            for (int t = 0; t < TL; ++t) {
              const double line = b0[t] + b1[t] * xd;
              const double w = confidence<decltype(rcp)::value>(yv[t] - line, tj[t], rtau[t], sx,
                                                                rsx, rc.Z, delta);
              acc[t] += cwx[t] * math::corrected_value(yv[t], line, w);
            }
          }
        };
        if (scales_allow_rcp(tj)) corrected_sum(std::true_type{});
        else corrected_sum(std::false_type{});
        for (int64_t t = 0; t < n; ++t) agg[j0 + t] = static_cast<V>(finite[t] ? acc[t] : raw[t]);
      }
    });
  });
}

}  // namespace

void residual_reweight(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                       double power, InterceptMode mode, void* client_weights, void* aggregate, int num_threads) {
  residual(ResidualPart::Whole, updates, dtype, K, d, lam, delta, power, mode, nullptr, nullptr, client_weights,
           aggregate, num_threads);
}

void residual_client_sums(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                          InterceptMode mode, double* client_sums, int num_threads) {
  residual(ResidualPart::ClientSums, updates, dtype, K, d, lam, delta, 1.0, mode, nullptr, client_sums, nullptr,
           nullptr, num_threads);
}

void residual_apply(const void* updates, DType dtype, int64_t K, int64_t d, const double* client_sums, double lam,
                    double delta, double power, InterceptMode mode, void* client_weights, void* aggregate,
                    int num_threads) {
  residual(ResidualPart::Apply, updates, dtype, K, d, lam, delta, power, mode, client_sums, nullptr, client_weights,
           aggregate, num_threads);
}

}  // namespace cpu
}  // namespace robustagg
