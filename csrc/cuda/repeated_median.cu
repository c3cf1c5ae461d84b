// Kernel family 3 on CUDA: a block of plan::kResidualThreads (32, one warp)
// threads walks plan's kResidualBlock (128) coordinates in order, one
// coordinate at a time, its working set in a static shared tile (K <= 113;
// beyond, a slice of the workspace per block). Per coordinate: the column is
// loaded and ranked (value, then client: every thread ranks K / 32 values by
// counting); each thread takes rows of Siegel's repeated medians (row i of
// the slopes or of the intercepts), computes the row's K - 1 pair values as
// float keys (math::pair_key) and selects the two middle keys, which bound
// the row's median to an interval about a float ulp wide
// (math::key_interval): up to K = 113 the keys stay in registers and a
// compile-time network pruned to the middle selects them (the fit's kernels
// are compiled per network size, plan::residual_register_rows); beyond, they
// go to the thread's own column of the tile, selected by quickselect. A few
// threads select the bounds of the outer median's two ranks from the rows'
// interval ends (outer_bounds); the rows whose interval meets those bounds
// (typically one or two per rank) are computed again in double
// (math::div_rcp) by 8 or 16 threads, which select among the values within
// the bounds of the row's middle keys, and one thread per statistic takes
// the outer ranks among them (the CPU kernel's float-key path, the same
// functions). The residuals, their scale, the confidences and sigma follow on
// the tile. No pair value, key, sorted column or residual touches global
// memory up to K = 113; global traffic is the column's K values, three
// doubles of line and scale, and the block's W partials (K doubles, written
// once per coordinate by the thread of each rank). W of eq. (10) is summed
// per block in coordinate order and then over blocks in order, as the CPU
// kernel's tasks sum it (bitwise). Barriers: each one below separates a
// phase's writes from the next phase's reads by other threads.
#include "robustagg/repeated_median.h"

#include "launch.cuh"
#include "robustagg/device_plan.h"
#include "robustagg/math/residual.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

constexpr int kRT = plan::kResidualThreads;
constexpr int64_t kGroup = math::kResidualBlock;  // coordinates per block, in order

// One coordinate's working set (plan::residual_tile_doubles(K) doubles):
// sorted values, client of each rank, 1 / dx for the rank gaps dx < K (set
// once per block), the exact row medians (2K; pass 1's work row afterwards),
// each row's two middle keys (4K floats), the rows to compute exactly (2K
// ints), and the rows' area: on the quickselect path the threads' columns
// of K - 1 keys first (thread t's strided by kRT from keys + t); after the
// keys, the same bytes as doubles hold the outer bounds' copies, then kExact
// columns of K - 1 exact pair values (strided by kExact from rows + e), then
// the candidates of the outer ranks; the first K doubles also hold the raw
// column, then the absolute residuals. The register networks' rows' area is
// plan::residual_rows_area (8 exact columns, or 8 copies of K bounds, or 4K
// candidates; at 112 rows first the threads' first halves of 56 keys).
// The pointers are computed where used (base and K live in two registers
// where nine pointers would take eighteen, beside the network's rows).
struct BlockColumn {
  double* base;
  int64_t K;
  __device__ double* ys() const { return base; }
  __device__ double* idx() const { return base + K; }
  __device__ double* rdx() const { return base + 2 * K; }
  __device__ double* meds() const { return base + 3 * K; }
  __device__ double* work() const { return base + 3 * K; }
  __device__ double* rows() const { return base + 8 * K; }
  __device__ float* mids() const { return reinterpret_cast<float*>(base + 5 * K); }
  __device__ float* keys() const { return reinterpret_cast<float*>(base + 8 * K); }
  __device__ int* list() const { return reinterpret_cast<int*>(base + 7 * K); }
};
static_assert(kRT == 2 * plan::residual_exact_rows(0),
              "a thread's column of float keys is half an exact column of doubles");

// What the block decides about the coordinate's selection (static shared).
struct FitState {
  double bound[8];  // per statistic k: bound[4k + 2w + q], rank q (olo, ohi) of the rows' lower (w = 0) or upper ends
  int forced[2];    // per statistic: every row in double (values past the keys' range, or bounds that did not hold)
  int ok[2];        // per statistic: the outer rank was among the candidates
  int listed;       // rows in BlockColumn::list
};

// 1 / dx, correctly rounded, for dx < K: each pair value is then a product
// and Markstein's correction (math::div_rcp), not a division. Read first after
// the barriers of the block's first coordinate.
__device__ inline void set_gap_reciprocals(int64_t K, BlockColumn& c) {
  for (int64_t dx = threadIdx.x; dx < K; dx += kRT) c.rdx()[dx] = dx > 0 ? 1.0 / static_cast<double>(dx) : 0.0;
}

// The block's tile: the static shared one, or its slice of the workspace.
// kShared: always the shared one (the register networks' kernels), so that
// the compiler knows every tile access is to shared memory.
template <bool kShared = false>
__device__ inline double* block_tile(double* shared_tile, double* tiles, int64_t tile_doubles) {
  if (kShared) return shared_tile;
  return tiles ? tiles + static_cast<int64_t>(blockIdx.x) * tile_doubles : shared_tile;
}

// A loaded column: whether its K values are all finite (else it is ranked as
// zeros and callers mask it), and whether its pair values may take float keys.
struct Loaded {
  bool finite, keyed;
};

// Client k's value of coordinate j, as a double: of a T update, or of any
// dtype (the kernels of the fit are compiled once per network size, not per
// dtype: the type is a uniform branch per value loaded).
template <typename T> struct TypedColumn {
  const T* __restrict__ u;
  int64_t d;
  __device__ double operator()(int64_t k, int64_t j) const { return static_cast<double>(load(u + k * d + j)); }
};
struct AnyColumn {
  const void* u;
  DType dtype;
  int64_t d;
  __device__ double operator()(int64_t k, int64_t j) const {
    const int64_t at = k * d + j;
    switch (dtype) {
      case DType::Float64: return load(static_cast<const double*>(u) + at);
      case DType::Float16: return static_cast<double>(load(static_cast<const Half*>(u) + at));
      case DType::BFloat16: return static_cast<double>(load(static_cast<const BFloat16*>(u) + at));
      default: return static_cast<double>(load(static_cast<const float*>(u) + at));
    }
  }
};
// Stores v as the value type of dtype (double for float64, else float).
__device__ inline void store_value(void* out, DType dtype, int64_t j, double v) {
  if (dtype == DType::Float64) static_cast<double*>(out)[j] = v;
  else static_cast<float*>(out)[j] = static_cast<float>(v);
}

// Loads coordinate j's column (the raw values in c.rows()[0, K)) and ranks it
// into c.ys() / c.idx. bad: kRT flags.
template <typename Column>
__device__ Loaded load_ranked_column(Column column, int64_t K, int64_t j, BlockColumn& c, int* bad) {
  int mine = 0;
  for (int64_t k = threadIdx.x; k < K; k += kRT) {
    const double v = column(k, j);
    c.rows()[k] = v;
    const int non_finite = !(v * 0.0 == 0.0), past_keys = !(math::abs_value(v) < math::kKeyedMagnitude);
    mine |= non_finite | (past_keys << 1);
  }
  bad[threadIdx.x] = mine;
  __syncthreads();  // the raw column and every thread's flag
  int any = 0;
  for (int t = 0; t < kRT; ++t) any |= bad[t];
  const bool finite = (any & 1) == 0;
  for (int64_t k = threadIdx.x; k < K; k += kRT) {
    const double v = finite ? c.rows()[k] : 0.0;
    int64_t rank = 0;
    for (int64_t m = 0; m < K; ++m) rank += math::rank_before(finite ? c.rows()[m] : 0.0, m, v, k);
    c.ys()[rank] = v;
    c.idx()[rank] = static_cast<double>(k);
  }
  __syncthreads();  // the ranked column
  return {finite, !finite || any == 0};
}

// The interval of row r's median, from its middle keys.
__device__ inline math::Interval row_interval(const BlockColumn& c, int64_t r, int64_t K) {
  return math::key_interval(c.mids()[2 * r], c.mids()[2 * r + 1], (K - 1) % 2 == 1);
}

// Value s < K - 1 of row i's pair values (the other point j = s + (s >= i):
// the pair (j, i) before the row's point, (i, j) after it) as a float key;
// slope: eq. (1), else eq. (2). yi = ys[i], xi = i. The numerator is
// computed once, negated for (j, i): the same bits but for the sign of a
// zero (a zero key either way: key_low and key_high give 0, and the exact
// rows use exact_pair). x as a double without a conversion instruction.
__device__ inline float row_key(bool slope, int i, double yi, double xi, int s, const double* ys,
                                const double* rdx) {
  const bool after = s >= i;
  const int j = s + after, dx = after ? j - i : i - j;
  const double yj = ys[j], xj = math::small_int_to_double(j);
  const double num = slope ? math::slope_numerator(yi, yj) : math::intercept_numerator(yi, yj, xi, xj);
  return math::pair_key(after ? num : -num, static_cast<double>(dx), rdx[dx]);
}

// Row r < rows of the repeated medians: r < K is row r of the slopes (eq. 1),
// K <= r < 2K row r - K of the intercepts (eq. 2). Each thread computes its
// rows' keys and selects their two middle keys into c.mids. kN > 0 network
// rows (K - 1 <= kN): a row's keys in registers, padded with -inf and +inf
// so that its middle ranks fall on rows (kN - 1) / 2 and kN / 2 of the
// sorted kN; up to 64 rows one network pruned to those (math::sort_fixed
// with kMedian), at 112 two sorted halves of 56 (the first stored in the
// thread's column of the tile), whose pairwise min / max give the kN / 2
// smallest / largest keys (Batcher's merge step), so the middle rows are
// the max of the one and the min of the other. Keys are never NaN within
// the keys' range, so the device's min/max are exact (a column past it has
// its rows computed in double and its keys unused). kN = 0: the keys in the
// thread's column of the tile, selected by quickselect. 32-bit indices.
template <int kN>
__device__ inline void row_keys(int64_t K, int64_t rows, BlockColumn& c) {
  const int n = static_cast<int>(K - 1), k = static_cast<int>(K);
  const double* ys = c.ys();
  const double* rdx = c.rdx();
  for (int r = threadIdx.x; r < rows; r += kRT) {
    const bool slope = r < k;
    const int i = slope ? r : r - k;
    const double yi = ys[i], xi = math::small_int_to_double(i);
    float lo, hi;
    if constexpr (kN == 0) {
      const math::Strided<float> mine{c.keys() + threadIdx.x, kRT};
      for (int s = 0; s < n; ++s) mine[s] = row_key(slope, i, yi, xi, s, ys, rdx);
      const math::Middle<float> m = math::select_middle(mine, n, math::PlainLess());
      lo = m.lo;
      hi = m.hi;
    } else {
      const int below = (kN - n - n % 2) / 2;  // the -inf pads
      const float inf = math::infinity_of<float>();
      const auto key_at = [&](int s) {  // slot s < kN: value s of the row, or a pad
        return s < n ? row_key(slope, i, yi, xi, s, ys, rdx) : s < n + below ? -inf : inf;
      };
      if constexpr (kN <= 64) {  // one network on the kN keys, pruned to the middle rows
        float v[kN];
        ROBUSTAGG_UNROLL
        for (int s = 0; s < kN; ++s) v[s] = key_at(s);
        math::sort_fixed<float, kN, true>(v);
        lo = v[(kN - 1) / 2];
        hi = v[kN / 2];
      } else {  // two sorted halves (half the registers): the first in the thread's column of the tile
        // A compiler fence every 8 keys keeps ptxas from interleaving all of a half's loads and
        // products: 168 registers (12 warps per SM) where it took 211 on sm_90 and 255 on sm_80.
        constexpr int kH = kN / 2;
        const math::Strided<float> first{c.keys() + threadIdx.x, kRT};
        float v[kH];
        ROBUSTAGG_UNROLL
        for (int s = 0; s < kH; ++s) {
          v[s] = key_at(s);
          if (s % 8 == 7) asm volatile("" ::: "memory");
        }
        math::sort_fixed<float, kH>(v);
        ROBUSTAGG_UNROLL
        for (int s = 0; s < kH; ++s) first[s] = v[s];
        ROBUSTAGG_UNROLL
        for (int s = 0; s < kH; ++s) {
          v[s] = key_at(kH + s);
          if (s % 8 == 7) asm volatile("" ::: "memory");
        }
        math::sort_fixed<float, kH>(v);
        // first[t] against v[kH - 1 - t]: the lesser of each pair are the kH smallest keys, the
        // greater the kH largest, so ranks kH - 1 and kH (the middle rows) are their max and min
        lo = -inf;
        hi = inf;
        ROBUSTAGG_UNROLL
        for (int t = 0; t < kH; ++t) {
          const float a = first[t], b = v[kH - 1 - t];
          lo = math::lane_max(lo, math::lane_min(a, b));
          hi = math::lane_min(hi, math::lane_max(a, b));
        }
      }
      if (n % 2 == 1) hi = lo;
    }
    c.mids()[2 * r] = lo;
    c.mids()[2 * r + 1] = hi;
  }
  __syncthreads();  // every row's middle keys
}

// Pair value j of row i (j != i), in double, exactly: eq. (1) for the
// slopes, eq. (2) for the intercepts.
__device__ inline double exact_pair(bool slope, int64_t i, int64_t j, const BlockColumn& c) {
  const int64_t a = i < j ? i : j, b = i < j ? j : i;
  const double rdx = c.rdx()[b - a];
  return slope ? math::pair_slope(c.ys()[a], c.ys()[b], static_cast<double>(b - a), rdx)
               : math::pair_intercept(c.ys()[a], c.ys()[b], static_cast<double>(a), static_cast<double>(b), rdx);
}

// Row r's median in double, exactly. Keyed: only the values within the
// bounds of its middle keys, [key_low(A), key_high(B)], are kept and
// selected (a few, where the row's K - 1 values need a quickselect); the
// middle ranks lie there while the keys' bounds hold. Otherwise (a forced
// statistic) every value.
__device__ inline double exact_row(int64_t K, int64_t r, bool keyed, const BlockColumn& c,
                                   math::Strided<double> col) {
  const bool slope = r < K;
  const int64_t i = slope ? r : r - K, n = K - 1, lo = (n - 1) / 2, hi = n / 2;
  if (keyed) {
    const double low = math::key_low(c.mids()[2 * r]), high = math::key_high(c.mids()[2 * r + 1]);
    int64_t below = 0, inside = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (j == i) continue;
      const double v = exact_pair(slope, i, j, c);
      if (v < low) ++below;
      else if (v <= high) col[inside++] = v;
    }
    const bool held = below <= lo && hi < below + inside;
    ROBUSTAGG_KERNEL_INVARIANT(held, "a row's middle ranks are not within its keys' bounds");
    if (held) {
      const double b = math::select_rank(col, inside, hi - below);
      if (lo == hi) return b;
      double m = col[0];  // rank lo: the largest of col[0 .. hi - below), all <= b
      for (int64_t k = 1; k < hi - below; ++k) m = math::nan_last_less(m, col[k]) ? col[k] : m;
      return math::midpoint(m, b);
    }
  }
  int64_t m = 0;
  for (int64_t j = 0; j < K; ++j)
    if (j != i) col[m++] = exact_pair(slope, i, j, c);
  return math::select_median(col, n);
}

// Statistic k's bounds, from its rows' intervals: the outer ranks olo and
// ohi of the rows' lower and upper ends bound those of the rows' medians.
// With an odd number of values per row (even K) an interval's ends are
// nondecreasing functions of the one middle key, so the bounds are key_low
// and key_high of the keys' outer ranks: two threads per statistic select
// floats. Otherwise four per statistic select the ends, in double.
__device__ inline void outer_bounds(int64_t K, int64_t kinds, bool keyed, BlockColumn& c, FitState& s) {
  const int t = threadIdx.x;
  if (t < kinds) s.forced[t] = !keyed;
  if (t == 0) s.listed = 0;
  const bool one_key = (K - 1) % 2 == 1;
  if (keyed && one_key && t < 2 * kinds) {
    const int64_t k = t / 2, q = t % 2;
    float* copy = c.keys() + t * K;
    for (int64_t i = 0; i < K; ++i) copy[i] = c.mids()[2 * (k * K + i)];
    const float A = math::select_rank(math::Strided<float>{copy, 1}, K, q == 1 ? K / 2 : (K - 1) / 2,
                                      math::PlainLess());
    s.bound[4 * k + q] = math::key_low(A);
    s.bound[4 * k + 2 + q] = math::key_high(A);
  } else if (keyed && !one_key && t < 4 * kinds) {
    const int64_t k = t / 4, w = (t / 2) % 2, q = t % 2;
    double* copy = c.rows() + t * K;
    for (int64_t i = 0; i < K; ++i) {
      const math::Interval in = row_interval(c, k * K + i, K);
      copy[i] = w == 0 ? in.lo : in.hi;
    }
    s.bound[t] = math::select_rank(math::Strided<double>{copy, 1}, K, q == 1 ? K / 2 : (K - 1) / 2);
  }
  __syncthreads();  // the bounds
}

// Whether row r's median may be an outer rank of its statistic: its interval
// meets the bounds of either rank (every row, when the statistic is forced).
__device__ inline bool meets_bounds(int64_t K, int64_t r, const BlockColumn& c, const FitState& s) {
  const int64_t k = r / K;
  if (s.forced[k]) return true;
  const math::Interval in = row_interval(c, r, K);
  const double* b = s.bound + 4 * k;
  return (!(in.hi < b[0]) && in.lo <= b[2]) || (!(in.hi < b[1]) && in.lo <= b[3]);
}

// Every row whose median is wanted exactly (it meets the bounds and its
// interval is not a point) into c.list() (in any order: each row's median is
// its own), then the exact medians into c.meds(), kExact threads at a time.
template <int kExact>
__device__ inline void exact_rows(int64_t K, int64_t rows, BlockColumn& c, FitState& s) {
  for (int64_t r = threadIdx.x; r < rows; r += kRT) {
    if (!meets_bounds(K, r, c, s)) continue;
    const math::Interval in = row_interval(c, r, K);
    // a forced statistic's keys are not trusted (they may be NaN): every row
    if (s.forced[r / K] || in.lo != in.hi) c.list()[atomicAdd(&s.listed, 1)] = static_cast<int>(r);
  }
  __syncthreads();  // the list
  const int listed = s.listed;
  if (threadIdx.x < kExact) {
    const math::Strided<double> col{c.rows() + threadIdx.x, kExact};
    for (int e = threadIdx.x; e < listed; e += kExact) {
      const int64_t r = c.list()[e];
      c.meds()[r] = exact_row(K, r, s.forced[r / K] == 0, c, col);
    }
  }
  __syncthreads();  // every exact row median
}

// Statistic k's outer median (thread k): rank q of its rows' medians is rank
// q - below among the candidates (rows not below the lower bound that meet
// the upper one: interval points, or exact medians). Both ranks in one pass
// over the rows. False when a rank is not among them (never while the keys'
// bounds hold): the statistic is then forced. cand: 2K doubles of the
// thread's own.
__device__ inline bool outer_median(int64_t K, int64_t k, const BlockColumn& c, const FitState& s, double* cand,
                                    double* out) {
  const int64_t r0 = (K - 1) / 2, r1 = K / 2;
  const bool all = s.forced[k] != 0, two = r0 != r1;
  const double* b = s.bound + 4 * k;
  double *c0 = cand, *c1 = cand + K;
  int64_t below0 = 0, below1 = 0, n0 = 0, n1 = 0;
  for (int64_t i = 0; i < K; ++i) {
    const int64_t row = k * K + i;
    if (all) {  // every row exact (the keys may be NaN)
      c0[n0++] = c1[n1++] = c.meds()[row];
      continue;
    }
    const math::Interval in = row_interval(c, row, K);
    const bool below_0 = in.hi < b[0], in_0 = !below_0 && in.lo <= b[2];
    const bool below_1 = two && in.hi < b[1], in_1 = two && !below_1 && in.lo <= b[3];
    below0 += below_0;
    below1 += below_1;
    if (!in_0 && !in_1) continue;
    const double v = in.lo == in.hi ? in.lo : c.meds()[row];  // a point, or computed exactly
    if (in_0) c0[n0++] = v;
    if (in_1) c1[n1++] = v;
  }
  if (r0 < below0 || r0 >= below0 + n0) return false;
  const double v0 = math::select_rank(math::Strided<double>{c0, 1}, n0, r0 - below0);
  if (!two) {
    *out = v0;
    return true;
  }
  if (r1 < below1 || r1 >= below1 + n1) return false;
  *out = math::midpoint(v0, math::select_rank(math::Strided<double>{c1, 1}, n1, r1 - below1));
  return true;
}

// Loads, ranks and fits coordinate j: line[0] = intercept, line[1] = slope,
// each written by the thread that chose it (thread 0 the slope and the
// authors' intercept, thread 1 the Siegel intercept). Returns whether the
// column is finite.
template <int kN, typename Column>
__device__ bool fit_coordinate(Column column, int64_t K, int64_t j, math::InterceptMode mode, int64_t rows,
                               BlockColumn& c, int* bad, FitState& s, double* line) {
  const Loaded col = load_ranked_column(column, K, j, c, bad);
  if (K == 1) {
    if (threadIdx.x == 0) { line[1] = 0.0; line[0] = c.ys()[0]; }
    return col.finite;
  }
  const int64_t kinds = rows / K;
  row_keys<kN>(K, rows, c);
  outer_bounds(K, kinds, col.keyed, c, s);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second only if bounds did not hold
    exact_rows<plan::residual_exact_rows(kN)>(K, rows, c, s);
    const int t = threadIdx.x;
    if (t < kinds) {
      double med;
      s.ok[t] = outer_median(K, t, c, s, c.rows() + 2 * t * K, &med);
      ROBUSTAGG_KERNEL_INVARIANT(s.ok[t], "the outer rank is not among the candidates");
      s.forced[t] |= !s.ok[t];
      if (s.ok[t] && t == 1) line[0] = med;
      if (s.ok[t] && t == 0) {
        line[1] = med;
        if (mode == math::InterceptMode::Median) {  // med(y) - slope (K - 1) / 2
          const double a = c.ys()[(K - 1) / 2], b = c.ys()[K / 2];
          line[0] = ((K % 2 == 1) ? b : math::midpoint(a, b)) - med * (0.5 * static_cast<double>(K - 1));
        }
      }
      if (t == 0) s.listed = 0;
    }
    __syncthreads();  // the outer medians and whether they held
    if (s.ok[0] && (kinds < 2 || s.ok[1])) break;
  }
  return col.finite;
}

// The block's coordinates of the chunk's n: [group_begin(), group_end(n)), in order.
__device__ inline int64_t group_begin() { return static_cast<int64_t>(blockIdx.x) * kGroup; }
__device__ inline int64_t group_end(int64_t n) { return group_begin() + kGroup < n ? group_begin() + kGroup : n; }

inline int64_t rows_wanted(int64_t K, math::InterceptMode mode) {
  return K < 2 ? 0 : (mode == math::InterceptMode::Siegel ? 2 * K : K);
}

// The fit's kernels are compiled per network size kN
// (plan::residual_register_rows), the update's dtype read at run time.
template <int kN>
__global__ void __launch_bounds__(kRT, 1) line_kernel(const void* __restrict__ u,  // [K, d]
                                                   DType dtype, int64_t K, int64_t d, int64_t c0, int64_t n,
                                                   math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
                                                   double* __restrict__ tiles,
                                                   void* __restrict__ slope,        // [d], the value type
                                                   void* __restrict__ intercept) {  // [d]
  __shared__ double tile[plan::residual_static_tile(kN)];
  __shared__ int bad[kRT];
  __shared__ double line[2];
  __shared__ FitState state;
  BlockColumn c{block_tile<(kN > 0)>(tile, tiles, tile_doubles), K};
  set_gap_reciprocals(K, c);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = fit_coordinate<kN>(AnyColumn{u, dtype, d}, K, j, mode, rows, c, bad, state, line);
    // The thread that chose a value stores it (no barrier: the next
    // coordinate's first writes to the tile and line come after its barriers).
    const double nan = math::quiet_nan<double>();
    if (threadIdx.x == 0) store_value(slope, dtype, j, finite ? line[1] : nan);
    if (threadIdx.x == (mode == math::InterceptMode::Siegel && K > 1 ? 1 : 0))
      store_value(intercept, dtype, j, finite ? line[0] : nan);
  }
}

// Pass 1 of Algorithm 1 on the block's coordinates: lines, residual scales
// and confidences, and partial[block, k] = sum over the block's coordinates,
// in order, of conf * sigma of client k (non-finite columns add nothing).
template <int kN>
__global__ void __launch_bounds__(kRT, 1) pass1_kernel(
    const void* __restrict__ u,  // [K, d]
    DType dtype, int64_t K, int64_t d, int64_t c0, int64_t n, math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
    double lam, double delta, double* __restrict__ tiles,
    double* __restrict__ beta0, double* __restrict__ beta1, double* __restrict__ tau,  // [d]
    double* __restrict__ partial) {  // [blocks_per_chunk, K]
  __shared__ double tile[plan::residual_static_tile(kN)];
  __shared__ int bad[kRT];
  __shared__ double line[4];  // intercept, slope, tau, sigma
  __shared__ FitState state;
  BlockColumn c{block_tile<(kN > 0)>(tile, tiles, tile_doubles), K};
  double* W = partial + static_cast<int64_t>(blockIdx.x) * K;
  for (int64_t k = threadIdx.x; k < K; k += kRT) W[k] = 0.0;
  set_gap_reciprocals(K, c);
  const double Z = math::band_limit(lam, K), scale = math::residual_scale_factor(K);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = fit_coordinate<kN>(AnyColumn{u, dtype, d}, K, j, mode, rows, c, bad, state, line);
    const double b0 = line[0], b1 = line[1];  // written before the fit's last barrier
    for (int64_t x = threadIdx.x; x < K; x += kRT) {  // residuals, and their magnitudes for eq. (4)
      const double r = c.ys()[x] - (b0 + b1 * x);
      c.work()[x] = r;
      c.rows()[x] = math::abs_value(r);
    }
    __syncthreads();  // every residual
    if (threadIdx.x == 0) {  // eq. (3)-(4)
      line[2] = scale * math::select_median(math::Strided<double>{c.rows(), 1}, K);
      beta0[j] = b0;
      beta1[j] = b1;
      tau[j] = line[2];
    }
    __syncthreads();  // the residual scale
    const double tj = line[2];
    for (int64_t x = threadIdx.x; x < K; x += kRT)
      c.work()[x] = math::confidence<false>(c.work()[x], tj, 0.0, math::rank_sqrt_one_minus_h(x, K), 0.0, Z, delta);
    __syncthreads();  // every confidence
    if (threadIdx.x == 0) {  // eq. (10): the unbiased standard deviation, ranks in order
      double mean = 0.0;
      for (int64_t x = 0; x < K; ++x) mean += c.work()[x];
      mean /= static_cast<double>(K);
      double var = 0.0;
      for (int64_t x = 0; x < K; ++x) {
        const double dev = c.work()[x] - mean;
        var += dev * dev;
      }
      line[3] = math::sqrt_rn(var / static_cast<double>(K - 1));
    }
    __syncthreads();  // sigma
    if (finite) {
      const double sigma = line[3];
      for (int64_t x = threadIdx.x; x < K; x += kRT) {
        const int64_t client = static_cast<int64_t>(c.idx()[x]);
        W[client] += c.work()[x] * sigma;
      }
    }
  }
}

// W[k] += the chunk's block partials, blocks in order (one thread per client).
__global__ void reduce_blocks_kernel(const double* __restrict__ partial, int64_t blocks, int64_t K,
                                     double* __restrict__ W) {
  for (int64_t k = thread_index(); k < K; k += grid_stride()) {
    double acc = W[k];
    for (int64_t b = 0; b < blocks; ++b) acc += partial[b * K + k];
    W[k] = acc;
  }
}

// eq. (11) on one thread (K values, a fixed order).
template <typename V>
__global__ void client_weights_kernel(const double* __restrict__ W, int64_t K, double power,
                                      double* __restrict__ cw, V* __restrict__ cw_out) {
  if (thread_index() != 0) return;
  math::client_weights_from_sums(W, K, power, cw);
  for (int64_t k = 0; k < K; ++k) cw_out[k] = static_cast<V>(cw[k]);
}

// Pass 2 on the block's coordinates: sum over ranks, in order, of the client
// weight times the corrected value (eq. 9); a non-finite column gives the
// weighted sum of its raw values, clients in order.
template <typename T>
__global__ void __launch_bounds__(kRT, 1) pass2_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t c0, int64_t n, int64_t tile_doubles, double lam, double delta,
    double* __restrict__ tiles,
    const double* __restrict__ beta0, const double* __restrict__ beta1, const double* __restrict__ tau,  // [d]
    const double* __restrict__ cw,        // [K]
    val_t<T>* __restrict__ aggregate) {  // [d]
  __shared__ double tile[plan::kResidualPass2Tile];
  __shared__ int bad[kRT];
  BlockColumn c{block_tile(tile, tiles, tile_doubles), K};
  const double Z = math::band_limit(lam, K);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = load_ranked_column(TypedColumn<T>{u, d}, K, j, c, bad).finite;
    const double b0 = beta0[j], b1 = beta1[j], tj = tau[j];
    for (int64_t x = threadIdx.x; x < K; x += kRT) {
      if (finite) {
        const double y = c.ys()[x], line = b0 + b1 * static_cast<double>(x);
        const double w = math::confidence<false>(y - line, tj, 0.0, math::rank_sqrt_one_minus_h(x, K), 0.0, Z,
                                                 delta);
        c.work()[x] = cw[static_cast<int64_t>(c.idx()[x])] * math::corrected_value(y, line, w);
      } else {
        c.work()[x] = cw[x] * c.rows()[x];  // client x's raw value
      }
    }
    __syncthreads();  // every term
    if (threadIdx.x == 0) {
      double acc = 0.0;
      for (int64_t x = 0; x < K; ++x) acc += c.work()[x];
      aggregate[j] = static_cast<val_t<T>>(acc);
    }
  }
}

template <typename T>
__global__ void plain_mean_kernel(const T* __restrict__ u, int64_t K, int64_t d, val_t<T>* __restrict__ out,
                                  val_t<T>* __restrict__ cw_out) {
  for (int64_t j = thread_index(); j < d; j += grid_stride())
    out[j] = static_cast<val_t<T>>(math::plain_mean_column(u + j, K, d));
  for (int64_t k = thread_index(); k < K; k += grid_stride())
    cw_out[k] = static_cast<val_t<T>>(1.0 / static_cast<double>(K));
}

}  // namespace

// Blocks for n coordinates: one per kGroup of them (a chunk is at most
// plan::ResidualLayout::blocks_per_chunk groups).
inline unsigned group_blocks(int64_t n) { return static_cast<unsigned>((n + kGroup - 1) / kGroup); }

size_t residual_workspace_bytes(DType, int64_t K, int64_t d) { return plan::ResidualLayout(K, d).bytes; }

// Calls f(std::integral_constant<int, kN>) for K's network rows.
template <typename F> void with_network_rows(int64_t K, F&& f) {
  switch (plan::residual_register_rows(K)) {
    case 16: f(std::integral_constant<int, 16>()); break;
    case 32: f(std::integral_constant<int, 32>()); break;
    case 64: f(std::integral_constant<int, 64>()); break;
    case plan::kResidualRegisterRows: f(std::integral_constant<int, plan::kResidualRegisterRows>()); break;
    default: f(std::integral_constant<int, 0>()); break;
  }
}

void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d, InterceptMode mode, void* slope,
                          void* intercept, void* workspace, void* stream) {
  if (K <= 0 || d <= 0) return;
  const plan::ResidualLayout layout(K, d);
  const cudaStream_t s = as_stream(stream);
  with_type(dtype, [](auto) {});  // an unknown dtype code throws (the kernel reads it at run time)
  with_network_rows(K, [&](auto rows) {
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
      launch<line_kernel<decltype(rows)::value>>(dim3(group_blocks(n)), dim3(kRT), 0, s, updates, dtype, K, d, c0,
                                                 n, mode, rows_wanted(K, mode), layout.tile_doubles,
                                                 plan::ResidualWorkspace(layout, workspace).tiles, slope, intercept);
    }
  });
}

namespace {

enum class ResidualPart { Whole, ClientSums, Apply };  // as in the CPU kernel

void residual(ResidualPart part, const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
              double power, InterceptMode mode, const double* W_given, double* W_out, void* client_weights,
              void* aggregate, void* workspace, void* stream) {
  if (K <= 0 || d <= 0) return;
  const plan::ResidualLayout layout(K, d);
  const cudaStream_t s = as_stream(stream);
  const plan::ResidualWorkspace w(layout, workspace);
  double *tiles = w.tiles, *beta0 = w.beta0, *beta1 = w.beta1, *tau = w.tau, *partial = w.partial, *W = w.W,
         *cw = w.cw;
  const size_t k_bytes = static_cast<size_t>(K) * sizeof(double);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using V = val_t<T>;
    const T* u = static_cast<const T*>(updates);
    V* cw_out = static_cast<V*>(client_weights);
    V* agg = static_cast<V*>(aggregate);
    if (K < 3) {  // degenerate: plain mean, uniform client weights, no client sums
      if (part == ResidualPart::ClientSums) check(cudaMemsetAsync(W_out, 0, k_bytes, s), "cudaMemsetAsync");
      else launch<plain_mean_kernel<T>>(dim3(blocks_for(d)), dim3(kThreads), 0, s, u, K, d, agg, cw_out);
      return;
    }
    check(cudaMemsetAsync(W, 0, k_bytes, s), "cudaMemsetAsync");
    with_network_rows(K, [&](auto rows) {
      for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
        const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
        const unsigned blocks = group_blocks(n);
        launch<pass1_kernel<decltype(rows)::value>>(dim3(blocks), dim3(kRT), 0, s, updates, dtype, K, d, c0, n, mode,
                                                    rows_wanted(K, mode), layout.tile_doubles, lam, delta, tiles,
                                                    beta0, beta1, tau, partial);
        launch<reduce_blocks_kernel>(dim3(blocks_for(K)), dim3(kThreads), 0, s, partial, blocks, K, W);
      }
    });
    if (part == ResidualPart::ClientSums) {
      check(cudaMemcpyAsync(W_out, W, k_bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
      return;
    }
    launch<client_weights_kernel<V>>(dim3(1), dim3(1), 0, s, part == ResidualPart::Apply ? W_given : W, K, power,
                                     cw, cw_out);
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
      launch<pass2_kernel<T>>(dim3(group_blocks(n)), dim3(kRT), 0, s, u, K, d, c0, n, layout.tile_doubles, lam,
                              delta, tiles, beta0, beta1, tau, cw, agg);
    }
  });
}

}  // namespace

void residual_reweight(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                       double power, InterceptMode mode, void* client_weights, void* aggregate, void* workspace,
                       void* stream) {
  residual(ResidualPart::Whole, updates, dtype, K, d, lam, delta, power, mode, nullptr, nullptr, client_weights,
           aggregate, workspace, stream);
}

void residual_client_sums(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                          InterceptMode mode, double* client_sums, void* workspace, void* stream) {
  residual(ResidualPart::ClientSums, updates, dtype, K, d, lam, delta, 1.0, mode, nullptr, client_sums, nullptr,
           nullptr, workspace, stream);
}

void residual_apply(const void* updates, DType dtype, int64_t K, int64_t d, const double* client_sums, double lam,
                    double delta, double power, InterceptMode mode, void* client_weights, void* aggregate,
                    void* workspace, void* stream) {
  residual(ResidualPart::Apply, updates, dtype, K, d, lam, delta, power, mode, client_sums, nullptr,
           client_weights, aggregate, workspace, stream);
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
