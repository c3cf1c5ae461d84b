// Per-coordinate math of kernel family 3 (repeated-median lines and
// residual-based reweighting, residual_reweighting.txt Algorithm 1): one
// definition for the CPU lanes, the CUDA threads (on the GPU and emulated on
// the CPU).
//
// Exactness: every quotient here is the correctly rounded IEEE quotient and no
// product is fused into an addition (the CPU file is compiled without FMA
// contraction, the CUDA files with --fmad=false, the emulated launchers
// without contraction), so the pair values are exactly symmetric in (i, j) and the
// line values and residuals round as the pure-PyTorch reference rounds them;
// they decide ties and the band edges. Medians are exact order statistics
// (midpoints for even counts), so any correct selection gives the same bits.
#pragma once

#include "robustagg/math/order.h"

namespace robustagg {
namespace math {

enum class InterceptMode : int { Siegel = 0, Median = 1 };

// a / b given rb = 1 / b correctly rounded, for b a normal number whose
// reciprocal is normal too: Markstein's correction step, q = a rb is within an
// ulp, r = a - b q is exact, and q + r rb rounds to exactly the IEEE quotient
// a / b (zeros keep their sign; an infinite or NaN a, or an overflowing q,
// gives q; quotients in the subnormal range may differ in the last place).
// Three double operations where the device's IEEE division takes about 12 (a
// reciprocal, Newton steps, a fix-up): the repeated medians' K (K - 1) pair
// values per coordinate are its largest cost. Used on the device, by the
// emulated launchers and by CPU copies with a fused multiply-add; a CPU copy
// without one (the baseline x86-64 copy) divides, which differs only for
// subnormal quotients.
#if ROBUSTAGG_DEVICE_PASS || defined(ROBUSTAGG_EMULATE_CUDA) || defined(__FMA__)
#define ROBUSTAGG_DIV_RCP_FMA 1
#else
#define ROBUSTAGG_DIV_RCP_FMA 0
#endif
ROBUSTAGG_HD inline double div_rcp(double a, double b, double rb) {
#if ROBUSTAGG_DIV_RCP_FMA
  const double q = a * rb;
  const double r = fma_d(-q, b, a);
  const double q2 = fma_d(r, rb, q);
  return (r == 0.0 || q2 != q2) ? q : q2;
#else
  (void)rb;
  return a / b;
#endif
}

// The numerators of eq. (1) and (2) for the points of ranks xi < xj; both
// pair values divide them by xj - xi.
ROBUSTAGG_HD inline double slope_numerator(double yi, double yj) { return yj - yi; }
ROBUSTAGG_HD inline double intercept_numerator(double yi, double yj, double xi, double xj) {
  return xj * yi - xi * yj;
}
// eq. (1): the slope through the points of ranks i < j (dx = j - i, rdx = 1 / dx).
ROBUSTAGG_HD inline double pair_slope(double yi, double yj, double dx, double rdx) {
  return div_rcp(slope_numerator(yi, yj), dx, rdx);
}
// eq. (2): the intercept through the points of ranks xi < xj (rdx = 1 / (xj - xi)).
ROBUSTAGG_HD inline double pair_intercept(double yi, double yj, double xi, double xj, double rdx) {
  return div_rcp(intercept_numerator(yi, yj, xi, xj), xj - xi, rdx);
}

// Constants of Algorithm 1 that depend only on K and the rank x.
// sqrt(1 - h(x)), h the leverage of X = [1, x] at rank x (step 3).
ROBUSTAGG_HD inline double rank_sqrt_one_minus_h(int64_t x, int64_t K) {
  const double xbar = 0.5 * static_cast<double>(K - 1);
  const double sxx = static_cast<double>(K) * (static_cast<double>(K) * K - 1.0) / 12.0;
  const double h = 1.0 / K + (x - xbar) * (x - xbar) / sxx;
  return sqrt_rn(1.0 - h);
}
// Psi clamps at +-Z = lam sqrt(2 / K) (step 4).
ROBUSTAGG_HD inline double band_limit(double lam, int64_t K) { return lam * sqrt_rn(2.0 / static_cast<double>(K)); }
// 1.4826 (1 + 5 / (K - 1)), eq. (3).
ROBUSTAGG_HD inline double residual_scale_factor(int64_t K) { return 1.4826 * (1.0 + 5.0 / static_cast<double>(K - 1)); }

// Confidence of the value at rank x with residual r (eq. 5-6, 8): 1 inside the
// band, Z / |z| outside it, 0 when that is <= delta. Branch-free so that lane
// loops vectorise. kRcp: the two divisions use reciprocals (rtau = 1 / tau,
// rs = 1 / s) and give the same quotients (div_rcp); callers take that path
// only when every scale is 0 or within [2^-1000, 2^1000]. Without kRcp, rtau
// and rs are unused. One edge differs: a quotient that rounds to the largest
// double but whose product overflows is inf with kRcp (div_rcp returns q),
// so w is 0 there rather than Z / DBL_MAX; the two differ only for delta
// below Z / DBL_MAX (about 1e-308; the default is 0.1).
template <bool kRcp>
ROBUSTAGG_HD inline double confidence(double r, double tau, double rtau, double s, double rs, double Z,
                                      double delta) {
  double z;  // e / sqrt(1 - h)
  if (kRcp) z = div_rcp(div_rcp(r, tau, rtau), s, rs);
  else z = (r / tau) / s;  // tau = 0 gives +-inf and w = 0
  const double az = abs_value(z);
  double w = az <= Z ? 1.0 : Z / az;
  if (kRcp) w = tau == 0.0 ? 0.0 : w;
  w = r == 0.0 ? 1.0 : w;
  return w <= delta ? 0.0 : w;
}

// Whether a residual scale allows confidence<kRcp = true> (0, or within
// [2^-1000, 2^1000]).
ROBUSTAGG_HD inline bool scale_allows_rcp(double tau) {
  return tau == 0.0 || (tau >= 0x1p-1000 && tau <= 0x1p1000);
}

// eq. (9)'s replacement: a value of confidence 0 is replaced by the line.
ROBUSTAGG_HD inline double corrected_value(double y, double line, double w) { return w == 0.0 ? line : y; }

// eq. (11): client_weights = W^power / sum W^power, uniform (1/K) when the sum
// is 0 or not finite. W and cw may alias.
ROBUSTAGG_HD inline void client_weights_from_sums(const double* W, int64_t K, double power, double* cw) {
  double total = 0.0;
  for (int64_t k = 0; k < K; ++k) total += pow_d(W[k], power);
  const bool ok = total > 0.0 && is_finite(total);
  for (int64_t k = 0; k < K; ++k) cw[k] = ok ? pow_d(W[k], power) / total : 1.0 / static_cast<double>(K);
}

// ---------------------------------------------------------------------------
// The pieces of a coordinate's selection (the CUDA kernels, on the GPU or
// emulated; the CPU kernel sorts and selects with networks, csrc/cpu).

// The sort order of a column: by value, then by client index. Every key is
// distinct, so the sorted column (and a value's rank) is unique: the stable
// order of a sort by value.
template <typename I>
ROBUSTAGG_HD inline bool rank_before(double a, I ia, double b, I ib) {
  return a < b || (a == b && ia < ib);
}

// Strict weak order with NaN above everything (torch.sort's order).
template <typename V> ROBUSTAGG_HD inline bool nan_last_less(V a, V b) { return a < b || (b != b && a == a); }
struct NanLastLess {
  template <typename V> ROBUSTAGG_HD bool operator()(V a, V b) const { return nan_last_less(a, b); }
};
// The plain order, for values that cannot be NaN (the float keys of a column
// within the keys' range: finite or infinite, never NaN; a column past it may
// give NaN keys, and its rows are all computed in double, the keys unused).
struct PlainLess {
  template <typename V> ROBUSTAGG_HD bool operator()(V a, V b) const { return a < b; }
};

// The median of three values under the NaN-last order.
template <typename V, typename Less> ROBUSTAGG_HD inline V median_of_three(V p0, V p1, V p2, Less less) {
  if (less(p1, p0)) { const V t = p0; p0 = p1; p1 = t; }
  if (less(p2, p1)) { p1 = p2; if (less(p1, p0)) p1 = p0; }
  return p1;
}

// The value of rank r (0-based) of a[0..n) under the NaN-last order, by
// quickselect; reorders a so that a[0..r) hold no value above it. Exact: any
// selection gives the same order statistic. The pivot is Tukey's ninther (the
// median of three medians of three, spread over the range) from 9 values up:
// on the rows of the repeated medians (pair values of a sorted column, in
// order of the other point) it visits about 2.1 values per value on average
// and 2.7 in the slowest of 32 rows, against 3.5 and 6.3 with the median of
// the first, middle and last (bench/gpu_model.py counts it): the threads of a
// warp select their own rows in step, so the slowest row sets the time.
template <typename V, typename Less = NanLastLess>
ROBUSTAGG_HD inline V select_rank(Strided<V> a, int64_t n, int64_t r, Less less = Less()) {
  int64_t lo_b = 0, hi_b = n - 1;
  while (lo_b < hi_b) {  // invariant: position r lies in [lo_b, hi_b]
    const int64_t m = hi_b - lo_b, mid = lo_b + m / 2, e = m / 8;
    const V pivot = e > 0 ? median_of_three(median_of_three(a[lo_b], a[lo_b + e], a[lo_b + 2 * e], less),
                                            median_of_three(a[mid - e], a[mid], a[mid + e], less),
                                            median_of_three(a[hi_b - 2 * e], a[hi_b - e], a[hi_b], less), less)
                          : median_of_three(a[lo_b], a[mid], a[hi_b], less);
    // three-way partition of [lo_b, hi_b]: < pivot | == pivot | > pivot
    int64_t lt = lo_b, i = lo_b, gt = hi_b;
    while (i <= gt) {
      const V v = a[i];
      if (less(v, pivot)) { a[i] = a[lt]; a[lt] = v; ++lt; ++i; }
      else if (less(pivot, v)) { a[i] = a[gt]; a[gt] = v; --gt; }
      else ++i;
    }
    if (r < lt) hi_b = lt - 1;
    else if (r > gt) lo_b = gt + 1;
    else break;  // a[r] equals the pivot
  }
  return a[r];
}

// The two middle values of a[0..n), ranks (n - 1) / 2 and n / 2 (one value
// twice for odd n); reorders a.
template <typename V> struct Middle { V lo, hi; };
template <typename V, typename Less = NanLastLess>
ROBUSTAGG_HD inline Middle<V> select_middle(Strided<V> a, int64_t n, Less less = Less()) {
  const int64_t hi = n / 2;
  const V b = select_rank(a, n, hi, less);
  if (n % 2 == 1) return {b, b};
  V m = a[0];  // the largest of a[0..hi), all of which are <= b
  for (int64_t k = 1; k < hi; ++k) m = less(m, a[k]) ? a[k] : m;
  return {m, b};
}

// The median of a[0..n) (midpoint of the two middle values for even n) under
// the NaN-last order; reorders a.
ROBUSTAGG_HD inline double select_median(Strided<double> a, int64_t n) {
  const Middle<double> m = select_middle(a, n);
  return n % 2 == 1 ? m.hi : midpoint(m.lo, m.hi);
}

// ---------------------------------------------------------------------------
// Float keys of the pair values (the CPU kernel above K = 64, every CUDA
// thread): a row's K - 1 keys are selected as floats (half the bytes, and
// compares on the single-precision side), which bounds the row's median to an
// interval about a float ulp wide (a point when the key is zero, as in
// zero-heavy rows). The outer median's ranks are bounded the same way by the
// rows' interval ends, and only the rows whose interval meets those bounds
// (typically one or two per rank) are computed again in double and selected
// exactly. The result is bitwise the all-double selection's: medians are exact
// order statistics, whatever selects them.

// A pair value's float key: q = num / den rounded to float, where q may be the
// product num * rdx (within 2.5 double ulps of the quotient: the key bounds
// below allow for it). A key is zero exactly when the pair value is (num = 0):
// a nonzero q that rounds to zero becomes the smallest denormal of its sign.
// So keys keep the sign of the values, and a zero key is exact (zero-heavy
// rows, as in sparse updates, need no refinement). Branch-free: CPU lanes
// vectorise it.
ROBUSTAGG_HD inline float pair_key(double num, double den, double rdx) {
#if ROBUSTAGG_DIV_RCP_FMA
  (void)den;
  const double q = num * rdx;
#else
  (void)rdx;
  const double q = num / den;
#endif
  const float f = static_cast<float>(q);
  const float d = 1.40129846e-45f;  // the smallest float denormal
  const float tiny = num > 0.0 ? d : -d;
  return ((f == 0.0f) & (num != 0.0)) ? tiny : f;
}

// The pair values with key f lie in [key_low(f), key_high(f)]: 0 for a zero
// key; otherwise on the key's side of zero, within half a float ulp of q (at
// most |f| 2^-24) plus q's error, or within 2^-126 of 0 (which covers flushed
// denormals too), and beyond FLT_MAX when f is infinite. Both bounds are
// nondecreasing in f, as order statistics of bounds need; the margin exceeds
// the double rounding of the subtraction, so they hold as computed.
constexpr double kFloatMax = 3.4028234663852886e38;
ROBUSTAGG_HD inline double key_low(float f) {
  const double x = f;
  if (!(abs_value(x) <= kFloatMax)) return x > 0 ? kFloatMax : x;
  const double w = x - (abs_value(x) * 0x1p-23 + 0x1p-126);
  return x > 0 ? (0.0 < w ? w : 0.0) : (x == 0 ? 0.0 : w);
}
ROBUSTAGG_HD inline double key_high(float f) {
  const double x = f;
  if (!(abs_value(x) <= kFloatMax)) return x < 0 ? -kFloatMax : x;
  const double w = x + (abs_value(x) * 0x1p-23 + 0x1p-126);
  return x < 0 ? (w < 0.0 ? w : 0.0) : (x == 0 ? 0.0 : w);
}

// The interval of a row's median from its two middle keys A <= B (odd: one).
struct Interval { double lo, hi; };
ROBUSTAGG_HD inline Interval key_interval(float A, float B, bool odd) {
  if (odd) return {key_low(A), key_high(A)};
  return {midpoint(key_low(A), key_low(B)), midpoint(key_high(A), key_high(B))};
}

// Values above this magnitude may give overflowing pair values, whose keys
// the bounds above do not cover: such columns select in double.
constexpr double kKeyedMagnitude = 0x1p400;

// Degenerate K < 3: the plain mean of the column, clients in order.
template <typename T>
ROBUSTAGG_HD inline double plain_mean_column(const T* u, int64_t K, int64_t d) {
  double acc = 0.0;
  for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(load(u + k * d));
  return acc / static_cast<double>(K);
}

// The shape of every residual launch: coordinates are
// grouped in blocks of kResidualBlock; W's partial sums are taken per block,
// coordinates in order, and the blocks' partials are added in block order.
// The CPU kernel's tasks are the same blocks, so W is bitwise the same.
constexpr int64_t kResidualBlock = 128;

}  // namespace math
}  // namespace robustagg
