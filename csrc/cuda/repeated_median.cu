// Kernel family 3 on CUDA: a block of plan::kResidualThreads (32, one warp)
// threads walks plan's kResidualBlock (128) coordinates in order, one
// coordinate at a time, its working set in a static shared tile (K <= 113;
// beyond, a slice of the workspace per block). Per coordinate: the column is
// loaded and ranked (value, then client: up to K = 128 values of a float
// type the warp sorts (value, client) keys in registers, warp_sort; else
// every thread ranks K / 32 values by counting); each thread takes rows of Siegel's repeated medians (row i of
// the slopes or of the intercepts), computes the row's K - 1 pair values as
// float keys (math::pair_key) and selects the two middle keys, which bound
// the row's median to an interval about a float ulp wide
// (math::key_interval): up to K = 113 the keys stay in registers and a
// compile-time network pruned to the middle selects them (the fit's kernels
// are compiled per network size, plan::residual_register_rows); beyond, they
// go to the thread's own column of the tile, selected by quickselect. The
// bounds of the outer median's two ranks come from the rows' interval ends
// (outer_bounds: the warp sorts their keys up to K = 128, else a few threads
// select); the rows whose interval meets those bounds
// (typically one or two per rank) are computed again in double
// (math::div_rcp) by 8 or 16 threads, which select among the values within
// the bounds of the row's middle keys; the warp lists each statistic's
// candidates in the rows' order and one thread per statistic takes the
// outer ranks among them (the CPU kernel's float-key path, the same
// functions). The residuals, their scale (the warp sorts their magnitudes up
// to K = 128) and the confidences follow on the tile; sigma and W's updates
// after every three coordinates (ConfBatch, in static shared memory; one
// past K = 113), sigma a lane per coordinate. No pair value, key, sorted column or residual touches global
// memory up to K = 113; global traffic is the column's K values (loaded
// twice, the second time from the cache), three
// doubles of line and scale, and the block's W partials (K doubles, each
// client's by one thread, once per three coordinates). W of eq. (10) is summed
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
// Pass 2: coordinates whose in-order sums the lanes take at once (one lane
// each), their terms kept in the tile (BlockColumn::terms).
constexpr int kPass2Batch = 4;
static_assert(kPass2Batch <= kRT, "a lane per coordinate");
static_assert(plan::kResidualPass2Tile >= 9 * (plan::kResidualRegisterRows + 1) +
                                              kPass2Batch * ((plan::kResidualRegisterRows + 1) | 1) &&
              plan::residual_tile_doubles(plan::kResidualRegisterRows + 2) >=
                  9 * (plan::kResidualRegisterRows + 2) + kPass2Batch * ((plan::kResidualRegisterRows + 2) | 1),
              "pass 2's terms fit the static tile and the workspace's (whose tiles grow by 24 doubles per K)");

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
// candidates; past 64 rows first the threads' first halves of kN / 2 keys).
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
  // Pass 2 (no pair values): sqrt(1 - h(x)) of rank x in rdx's place, its
  // reciprocal at 3K, and the terms of kPass2Batch coordinates after the raw
  // column, K | 1 apart (an odd stride: the lanes that add them read
  // different banks).
  __device__ double* rank_s() const { return base + 2 * K; }
  __device__ double* rank_rs() const { return base + 3 * K; }
  __device__ double* terms(int b) const { return base + 9 * K + b * (K | 1); }
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
  int below[2][2];  // per statistic and outer rank q: rows below the rank's lower bound
  int cands[2][2];  // ... and its candidates (rows that meet its bounds), listed in the rows' order
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

// The warp sorts up to kSortSlots (128) keys in registers: key[q] of lane l
// is position 4 l + q. Batcher's bitonic sort, 28 stages of compare-exchanges
// of positions p and p ^ j: for j < 4 both are the lane's own (registers),
// for j >= 4 the lane takes its partner's key by a shuffle and keeps the
// lesser or the greater. Stages are template arguments, so every register
// index is a constant. Every lane of the warp calls it (K is uniform).
constexpr int kSortSlots = 4 * kRT;
static_assert(kRT == 32, "one warp sorts");

template <int kK, int kJ, typename Key> __device__ inline void sort_stage(Key (&key)[4], int lane) {
  if constexpr (kJ >= 4) {
    const bool up = ((4 * lane) & kK) == 0, lower = (lane & (kJ / 4)) == 0, keep_min = up == lower;
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      const Key other = __shfl_xor_sync(0xffffffffu, key[q], kJ / 4);
      key[q] = (other < key[q]) == keep_min ? other : key[q];
    }
  } else {
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      if (q & kJ) continue;
      const bool up = ((4 * lane + q) & kK) == 0;
      const Key a = key[q], b = key[q | kJ];
      const bool swap = up ? b < a : a < b;
      key[q] = swap ? b : a;
      key[q | kJ] = swap ? a : b;
    }
  }
  if constexpr (kJ > 1) sort_stage<kK, kJ / 2>(key, lane);
  else if constexpr (kK < kSortSlots) sort_stage<2 * kK, kK>(key, lane);
}
template <typename Key> __device__ inline void warp_sort(Key (&key)[4]) {
  asm volatile("" ::: "memory");
  sort_stage<2, 1>(key, lane_id());
  asm volatile("" ::: "memory");
}

// The key at sorted position p < kSortSlots, to every lane.
template <typename Key> __device__ inline Key sorted_key(const Key (&key)[4], int p) {
  const int q = p % 4;
  const Key mine = q == 0 ? key[0] : q == 1 ? key[1] : q == 2 ? key[2] : key[3];
  return __shfl_sync(0xffffffffu, mine, p / 4);
}

// Sums over the warp's lanes of a per-lane count (fields packed in one int
// add independently while none overflows): the sum over the lanes before
// this one, and in *total over all of them, to every lane.
__device__ inline int warp_exclusive_sum(int mine, int* total) {
  const int lane = lane_id();
  int sum = mine;  // inclusive, by doubling steps
  ROBUSTAGG_UNROLL
  for (int off = 1; off < 32; off *= 2) {
    const int o = __shfl_up_sync(0xffffffffu, sum, off);
    sum += lane >= off ? o : 0;
  }
  *total = __shfl_sync(0xffffffffu, sum, 31);
  return sum - mine;
}

// A double's key in the NaN-last order (math::nan_last_less, refined: -0.0
// below +0.0), and the value back (a NaN key gives a NaN).
using Key64 = unsigned long long;
__device__ inline Key64 nan_last_key(double v) { return v == v ? math::double_order_key(v) : ~Key64(0) - 1; }
__device__ inline double of_nan_last_key(Key64 k) { return math::double_of_order_key(k); }

// The median of a[0 .. K) in the NaN-last order (the midpoint of the two
// middle values for even K, as math::select_median), to every thread: up to
// kSortSlots values the warp sorts their keys; beyond, thread 0 selects
// (reordering a) and passes it through *shared.
__device__ inline double block_median(double* a, int64_t K, double* shared) {
  if (K <= kSortSlots) {
    Key64 key[4];
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int x = 4 * static_cast<int>(threadIdx.x) + q;
      key[q] = x < K ? nan_last_key(a[x]) : ~Key64(0);
    }
    warp_sort(key);
    const int r = static_cast<int>(K);
    const double lo = of_nan_last_key(sorted_key(key, (r - 1) / 2)), hi = of_nan_last_key(sorted_key(key, r / 2));
    return r % 2 == 1 ? hi : math::midpoint(lo, hi);
  }
  if (threadIdx.x == 0) *shared = math::select_median(math::Strided<double>{a, 1}, K);
  __syncthreads();  // the median
  return *shared;
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
  __device__ bool floats() const { return !std::is_same<T, double>::value; }  // every value exactly a float
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
  __device__ bool floats() const { return dtype != DType::Float64; }
};
// Stores v as the value type of dtype (double for float64, else float).
__device__ inline void store_value(void* out, DType dtype, int64_t j, double v) {
  if (dtype == DType::Float64) static_cast<double*>(out)[j] = v;
  else static_cast<float*>(out)[j] = static_cast<float>(v);
}

// Loads coordinate j's column (the raw values in c.rows()[0, K)) and ranks it
// into c.ys() / c.idx. The column's flags (a value not finite, or past the
// keys' range) are ORed across the warp by a butterfly of shuffles before the
// raw values are written: after the writes, a shuffle would order the
// emulation's fibers and the barrier after them could not be proven (a
// shuffle does not order shared memory on the GPU). So each value is loaded
// twice, the second time from the cache.
template <typename Column>
__device__ Loaded load_ranked_column(Column column, int64_t K, int64_t j, BlockColumn& c) {
  int any = 0;
  for (int64_t k = threadIdx.x; k < K; k += kRT) {
    const double v = column(k, j);
    const int non_finite = !(v * 0.0 == 0.0), past_keys = !(math::abs_value(v) < math::kKeyedMagnitude);
    any |= non_finite | (past_keys << 1);
  }
  ROBUSTAGG_UNROLL
  for (int lanes = kRT / 2; lanes > 0; lanes /= 2) any |= __shfl_xor_sync(0xffffffffu, any, lanes);
  for (int64_t k = threadIdx.x; k < K; k += kRT) c.rows()[k] = column(k, j);
  __syncthreads();  // the raw column
  const bool finite = (any & 1) == 0;
  if (!finite) {  // ranked as zeros: in the clients' order
    for (int64_t k = threadIdx.x; k < K; k += kRT) {
      c.ys()[k] = 0.0;
      c.idx()[k] = static_cast<double>(k);
    }
  } else if (K <= kSortSlots && column.floats()) {
    // The warp sorts (value, client) as one 64-bit key: the float's order key
    // (+0.0 added: the two zeros tie, as in math::rank_before), then k.
    Key64 key[4];
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int k = 4 * static_cast<int>(threadIdx.x) + q;
      const float v = static_cast<float>(c.rows()[k < K ? k : 0]) + 0.0f;
      key[q] = k < K ? Key64(math::float_order_key(v)) << 32 | static_cast<unsigned>(k) : ~Key64(0);
    }
    warp_sort(key);
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int rank = 4 * static_cast<int>(threadIdx.x) + q, k = static_cast<int>(key[q] & 0xffffffffu);
      if (rank < K) {
        c.ys()[rank] = c.rows()[k];
        c.idx()[rank] = math::small_int_to_double(k);
      }
    }
  } else {  // each thread ranks its values by counting
    for (int64_t k = threadIdx.x; k < K; k += kRT) {
      const double v = c.rows()[k];
      int64_t rank = 0;
      for (int64_t m = 0; m < K; ++m) rank += math::rank_before(c.rows()[m], m, v, k);
      c.ys()[rank] = v;
      c.idx()[rank] = static_cast<double>(k);
    }
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
// with kMedian), at 100 and 112 two sorted halves of 50 or 56 (the first
// stored in the thread's column of the tile), whose pairwise min / max give the kN / 2
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

// Row r's median from the values within the bounds of its middle keys,
// [key_low(A), key_high(B)]: col[0 .. inside), with `below` of the row's
// values below them. False if the row's middle ranks are not among them
// (never while the keys' bounds hold).
__device__ inline bool median_within(int64_t K, math::Strided<double> col, int64_t below, int64_t inside,
                                     double* out) {
  const int64_t n = K - 1, lo = (n - 1) / 2, hi = n / 2;
  const bool held = below <= lo && hi < below + inside;
  ROBUSTAGG_KERNEL_INVARIANT(held, "a row's middle ranks are not within its keys' bounds");
  if (!held) return false;
  const double b = math::select_rank(col, inside, hi - below);
  double m = b;  // rank lo: the largest of col[0 .. hi - below), all <= b
  if (lo != hi) {
    m = col[0];
    for (int64_t k = 1; k < hi - below; ++k) m = math::nan_last_less(m, col[k]) ? col[k] : m;
  }
  *out = lo == hi ? b : math::midpoint(m, b);
  return true;
}

// Row r's median in double, exactly, from all its values (a forced
// statistic's rows).
__device__ inline double full_row_median(int64_t K, int64_t r, const BlockColumn& c, math::Strided<double> col) {
  const bool slope = r < K;
  const int64_t i = slope ? r : r - K;
  int64_t m = 0;
  for (int64_t j = 0; j < K; ++j)
    if (j != i) col[m++] = exact_pair(slope, i, j, c);
  return math::select_median(col, K - 1);
}

// Row r's values within the bounds of its middle keys, into col in the
// points' order, by the warp (lane l the points 4 l .. 4 l + 3; K <=
// kSortSlots): returns (below << 16) | inside to every lane.
__device__ inline int values_within_warp(int64_t K, int64_t r, const BlockColumn& c, math::Strided<double> col) {
  const bool slope = r < K;
  const int64_t i = slope ? r : r - K;
  const double low = math::key_low(c.mids()[2 * r]), high = math::key_high(c.mids()[2 * r + 1]);
  const int lane = lane_id();
  double v[4] = {0.0, 0.0, 0.0, 0.0};
  int within = 0, mine = 0;
  ROBUSTAGG_UNROLL
  for (int q = 0; q < 4; ++q) {
    const int64_t j = 4 * lane + q;
    if (j >= K || j == i) continue;
    v[q] = exact_pair(slope, i, j, c);
    const bool below = v[q] < low, inside = !below && v[q] <= high;
    mine += inside | below << 16;
    within |= inside << q;
  }
  int total;
  int at = warp_exclusive_sum(mine, &total) & 0xffff;
  ROBUSTAGG_UNROLL
  for (int q = 0; q < 4; ++q)
    if (within >> q & 1) col[at++] = v[q];
  return total;
}

// Row r's median in double, exactly, on one thread: keyed, only the values
// within its keys' bounds are kept and selected (a few, where the row's
// K - 1 values need a quickselect); otherwise (a forced statistic, or bounds
// that did not hold) every value.
__device__ inline double exact_row(int64_t K, int64_t r, bool keyed, const BlockColumn& c,
                                   math::Strided<double> col) {
  const bool slope = r < K;
  const int64_t i = slope ? r : r - K;
  if (keyed) {
    const double low = math::key_low(c.mids()[2 * r]), high = math::key_high(c.mids()[2 * r + 1]);
    int64_t below = 0, inside = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (j == i) continue;
      const double v = exact_pair(slope, i, j, c);
      if (v < low) ++below;
      else if (v <= high) col[inside++] = v;
    }
    double m;
    if (median_within(K, col, below, inside, &m)) return m;
  }
  return full_row_median(K, r, c, col);
}

// Statistic k's bounds, from its rows' intervals: the outer ranks olo and
// ohi of the rows' lower and upper ends bound those of the rows' medians.
// With an odd number of values per row (even K) an interval's ends are
// nondecreasing functions of the one middle key, so the bounds are key_low
// and key_high of the keys' outer ranks (selected as floats). Otherwise the
// ends are selected, in double. Up to kSortSlots rows the warp sorts the
// keys of a statistic's K values (one sort gives both ranks); beyond, a
// thread per selection (two or four per statistic) selects in a copy. The
// keys sort as 32-bit order keys (a shuffle and a compare a stage, where a
// double's take two of each).
__device__ inline void outer_bounds(int64_t K, int64_t kinds, bool keyed, BlockColumn& c, FitState& s) {
  const int t = threadIdx.x;
  if (t < kinds) s.forced[t] = !keyed;
  if (t == 0) s.listed = 0;
  const bool one_key = (K - 1) % 2 == 1;
  const int olo = static_cast<int>((K - 1) / 2), ohi = static_cast<int>(K / 2);
  if (keyed && K <= kSortSlots && one_key) {  // the keys, as 32-bit order keys
    for (int64_t k = 0; k < kinds; ++k) {
      uint32_t key[4];
      ROBUSTAGG_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int i = 4 * t + q;
        key[q] = i < K ? math::float_order_key(c.mids()[2 * (k * K + i)]) : ~0u;
      }
      warp_sort(key);
      const float A[2] = {math::float_of_order_key(sorted_key(key, olo)),
                          math::float_of_order_key(sorted_key(key, ohi))};
      if (t != 0) continue;
      for (int q = 0; q < 2; ++q) {
        s.bound[4 * k + q] = math::key_low(A[q]);
        s.bound[4 * k + 2 + q] = math::key_high(A[q]);
      }
    }
  } else if (keyed && K <= kSortSlots) {  // the lower, then the upper ends, in double
    for (int64_t k = 0; k < kinds; ++k) {
      for (int w = 0; w < 2; ++w) {
        Key64 key[4];
        ROBUSTAGG_UNROLL
        for (int q = 0; q < 4; ++q) {
          const int i = 4 * t + q;
          const int64_t r = k * K + (i < K ? i : 0);
          key[q] = i >= K ? ~Key64(0) : nan_last_key(w == 0 ? row_interval(c, r, K).lo : row_interval(c, r, K).hi);
        }
        warp_sort(key);
        const Key64 a = sorted_key(key, olo), b = sorted_key(key, ohi);
        if (t != 0) continue;
        s.bound[4 * k + 2 * w] = of_nan_last_key(a);
        s.bound[4 * k + 2 * w + 1] = of_nan_last_key(b);
      }
    }
  } else if (keyed && one_key && t < 2 * kinds) {
    const int64_t k = t / 2, q = t % 2;
    float* copy = c.keys() + t * K;
    for (int64_t i = 0; i < K; ++i) copy[i] = c.mids()[2 * (k * K + i)];
    const float A = math::select_rank(math::Strided<float>{copy, 1}, K, q == 1 ? ohi : olo, math::PlainLess());
    s.bound[4 * k + q] = math::key_low(A);
    s.bound[4 * k + 2 + q] = math::key_high(A);
  } else if (keyed && !one_key && t < 4 * kinds) {
    const int64_t k = t / 4, w = (t / 2) % 2, q = t % 2;
    double* copy = c.rows() + t * K;
    for (int64_t i = 0; i < K; ++i) {
      const math::Interval in = row_interval(c, k * K + i, K);
      copy[i] = w == 0 ? in.lo : in.hi;
    }
    s.bound[t] = math::select_rank(math::Strided<double>{copy, 1}, K, q == 1 ? ohi : olo);
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
  const int listed = s.listed, t = threadIdx.x;
  const math::Strided<double> col{c.rows() + (t < kExact ? t : 0), kExact};
  if (K <= kSortSlots) {
    // kExact rows at a time: the warp writes each keyed row's values within
    // its bounds to the row's column (thread e of the batch keeps the
    // counts), then thread e selects its row's median (a forced row: from
    // all its values).
    for (int b = 0; b < listed; b += kExact) {
      int mine = 0;
      for (int e = 0; e < kExact && b + e < listed; ++e) {
        const int64_t r = c.list()[b + e];
        if (s.forced[r / K]) continue;
        const int counts = values_within_warp(K, r, c, math::Strided<double>{c.rows() + e, kExact});
        if (t == e) mine = counts;
      }
      __syncthreads();  // the batch's values
      if (t < kExact && b + t < listed) {
        const int64_t r = c.list()[b + t];
        double m;
        if (s.forced[r / K] || !median_within(K, col, mine >> 16, mine & 0xffff, &m)) m = full_row_median(K, r, c, col);
        c.meds()[r] = m;
      }
      __syncthreads();  // the batch's medians, before the next batch's values
    }
    return;
  }
  if (t < kExact) {
    for (int e = t; e < listed; e += kExact) {
      const int64_t r = c.list()[e];
      c.meds()[r] = exact_row(K, r, s.forced[r / K] == 0, c, col);
    }
  }
  __syncthreads();  // every exact row median
}

// Row i of statistic k against the bounds of its outer ranks q = 0, 1 (olo,
// ohi; one rank for odd K): bit q when the row lies below rank q's lower
// bound, bit 2 + q when it meets rank q's bounds (a candidate), its median
// then in *v (an interval point, or computed exactly). A forced statistic:
// every row a candidate of both, its exact median.
__device__ inline int classify_row(int64_t K, int64_t k, int64_t i, const BlockColumn& c, const FitState& s,
                                   double* v) {
  const int64_t row = k * K + i;
  const bool two = (K - 1) / 2 != K / 2;
  if (s.forced[k]) {
    *v = c.meds()[row];
    return 4 | (two ? 8 : 0);
  }
  const double* b = s.bound + 4 * k;
  const math::Interval in = row_interval(c, row, K);
  const bool below_0 = in.hi < b[0], in_0 = !below_0 && in.lo <= b[2];
  const bool below_1 = two && in.hi < b[1], in_1 = two && !below_1 && in.lo <= b[3];
  if (in_0 || in_1) *v = in.lo == in.hi ? in.lo : c.meds()[row];
  return below_0 | below_1 << 1 | in_0 << 2 | in_1 << 3;
}

// Statistic k's candidates for its outer ranks: rank q's in cand + q K, in
// the rows' order, their counts and the rows below its lower bound in
// s.cands[k][q] and s.below[k][q]. Up to kSortSlots rows the warp walks them
// (lane l rows 4 l .. 4 l + 3: a prefix sum of the lanes' counts places each
// lane's candidates, another counts the rows below; two 16-bit fields carry
// both ranks); beyond, thread k alone. Read after a barrier.
__device__ inline void list_candidates(int64_t K, int64_t k, const BlockColumn& c, FitState& s, double* cand) {
  if (K <= kSortSlots) {
    const int lane = lane_id();
    int flags[4], below = 0, mine = 0;
    double v[4];
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      const int i = 4 * lane + q;
      flags[q] = i < K ? classify_row(K, k, i, c, s, &v[q]) : 0;
      below += (flags[q] & 1) | (flags[q] & 2) << 15;
      mine += (flags[q] >> 2 & 1) | (flags[q] & 8) << 13;
    }
    int total, all_below;
    const int before = warp_exclusive_sum(mine, &total);
    warp_exclusive_sum(below, &all_below);
    below = all_below;
    int at0 = before & 0xffff, at1 = before >> 16;
    ROBUSTAGG_UNROLL
    for (int q = 0; q < 4; ++q) {
      if (flags[q] & 4) cand[at0++] = v[q];
      if (flags[q] & 8) cand[K + at1++] = v[q];
    }
    if (lane == 0) {
      s.below[k][0] = below & 0xffff;
      s.below[k][1] = below >> 16;
      s.cands[k][0] = total & 0xffff;
      s.cands[k][1] = total >> 16;
    }
  } else if (threadIdx.x == k) {
    int below[2] = {0, 0}, n[2] = {0, 0};
    for (int64_t i = 0; i < K; ++i) {
      double v = 0.0;
      const int f = classify_row(K, k, i, c, s, &v);
      below[0] += f & 1;
      below[1] += f >> 1 & 1;
      if (f & 4) cand[n[0]++] = v;
      if (f & 8) cand[K + n[1]++] = v;
    }
    for (int q = 0; q < 2; ++q) {
      s.below[k][q] = below[q];
      s.cands[k][q] = n[q];
    }
  }
}

// Statistic k's outer median from its candidates: rank q of its rows'
// medians is rank q - below among rank q's candidates. False when a rank is
// not among them (never while the keys' bounds hold): the statistic is then
// forced.
__device__ inline bool outer_median(int64_t K, int64_t k, const FitState& s, double* cand, double* out) {
  const bool two = (K - 1) / 2 != K / 2;
  double v[2] = {0.0, 0.0};
  ROBUSTAGG_UNROLL
  for (int q = 0; q < 2; ++q) {
    if (q == 1 && !two) break;
    const int64_t r = q == 0 ? (K - 1) / 2 : K / 2, below = s.below[k][q], n = s.cands[k][q];
    if (r < below || r >= below + n) return false;
    v[q] = math::select_rank(math::Strided<double>{cand + q * K, 1}, n, r - below);
  }
  *out = two ? math::midpoint(v[0], v[1]) : v[0];
  return true;
}

// Loads, ranks and fits coordinate j: line[0] = intercept, line[1] = slope,
// each written by the thread that chose it (thread 0 the slope and the
// authors' intercept, thread 1 the Siegel intercept). Returns whether the
// column is finite.
template <int kN, typename Column>
__device__ bool fit_coordinate(Column column, int64_t K, int64_t j, math::InterceptMode mode, int64_t rows,
                               BlockColumn& c, FitState& s, double* line) {
  const Loaded col = load_ranked_column(column, K, j, c);
  if (K == 1) {
    if (threadIdx.x == 0) { line[1] = 0.0; line[0] = c.ys()[0]; }
    return col.finite;
  }
  const int64_t kinds = rows / K;
  row_keys<kN>(K, rows, c);
  outer_bounds(K, kinds, col.keyed, c, s);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second only if bounds did not hold
    exact_rows<plan::residual_exact_rows(kN)>(K, rows, c, s);
    for (int64_t k = 0; k < kinds; ++k) list_candidates(K, k, c, s, c.rows() + 2 * k * K);
    __syncthreads();  // the candidates
    const int t = threadIdx.x;
    if (t < kinds) {
      double med = 0.0;
      s.ok[t] = outer_median(K, t, s, c.rows() + 2 * t * K, &med);
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
__global__ void __launch_bounds__(kRT, plan::kResidualBlocksPerSM) line_kernel(const void* __restrict__ u,  // [K, d]
                                                   DType dtype, int64_t K, int64_t d, int64_t c0, int64_t n,
                                                   math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
                                                   double* __restrict__ tiles,
                                                   void* __restrict__ slope,        // [d], the value type
                                                   void* __restrict__ intercept) {  // [d]
  __shared__ double tile[plan::residual_static_tile(kN)];
  __shared__ double line[2];
  __shared__ FitState state;
  BlockColumn c{block_tile<(kN > 0)>(tile, tiles, tile_doubles), K};
  set_gap_reciprocals(K, c);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = fit_coordinate<kN>(AnyColumn{u, dtype, d}, K, j, mode, rows, c, state, line);
    // The thread that chose a value stores it (no barrier: the stores read
    // only line[], which the next coordinate writes after its barriers).
    const double nan = math::quiet_nan<double>();
    if (threadIdx.x == 0) store_value(slope, dtype, j, finite ? line[1] : nan);
    if (threadIdx.x == (mode == math::InterceptMode::Siegel && K > 1 ? 1 : 0))
      store_value(intercept, dtype, j, finite ? line[0] : nan);
  }
}

// Pass 1's confidences of up to kSize coordinates (by rank), kept until one
// lane each has taken their sigma (eq. 10's two in-order sums, the lanes at
// once) and the block has added them to W, each client by one thread (the
// rank of each client kept). With the register networks (K <= kN + 1 < 256)
// three coordinates in static shared memory, kN + 1 (odd) apart so that the
// lanes read different banks, the ranks as bytes (3 KB at 112 rows: 12
// blocks per SM still fit); past them one, in the tile (its work row, and
// the ranks in the fit's list, unused once the fit is done).
template <int kN> struct ConfBatch {
  static constexpr int kSize = kN > 0 ? 3 : 1;
  static constexpr int kRanks = kN > 0 ? kN + 1 : 1;
  double conf[kSize * kRanks];
  unsigned char rank[kSize * kRanks];  // [b][client]
  double sigma[kSize];
  int finite[kSize];
  __device__ double* confs(int b, const BlockColumn& c) { return kN > 0 ? conf + b * kRanks : c.work(); }
  __device__ void keep_rank(int b, int64_t x, const BlockColumn& c) {  // of rank x's client
    const int client = static_cast<int>(c.idx()[x]);
    if (kN > 0) rank[b * kRanks + client] = static_cast<unsigned char>(x);
    else c.list()[client] = static_cast<int>(x);
  }
  __device__ int64_t rank_of(int b, int64_t client, const BlockColumn& c) const {
    return kN > 0 ? rank[b * kRanks + client] : c.list()[client];
  }
};
static_assert(plan::kResidualRegisterRows < 255, "a rank fits a byte");

// Pass 1 of Algorithm 1 on the block's coordinates: lines, residual scales
// and confidences, and partial[block, k] = sum over the block's coordinates,
// in order, of conf * sigma of client k (non-finite columns add nothing).
template <int kN>
__global__ void __launch_bounds__(kRT, plan::kResidualBlocksPerSM) pass1_kernel(
    const void* __restrict__ u,  // [K, d]
    DType dtype, int64_t K, int64_t d, int64_t c0, int64_t n, math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
    double lam, double delta, double* __restrict__ tiles,
    double* __restrict__ beta0, double* __restrict__ beta1, double* __restrict__ tau,  // [d]
    double* __restrict__ partial) {  // [blocks_per_chunk, K]
  using Batch = ConfBatch<kN>;
  __shared__ double tile[plan::residual_static_tile(kN)];
  __shared__ double line[3];  // intercept, slope, tau
  __shared__ FitState state;
  __shared__ Batch batch;
  BlockColumn c{block_tile<(kN > 0)>(tile, tiles, tile_doubles), K};
  double* W = partial + static_cast<int64_t>(blockIdx.x) * K;
  for (int64_t k = threadIdx.x; k < K; k += kRT) W[k] = 0.0;
  set_gap_reciprocals(K, c);
  const double Z = math::band_limit(lam, K), scale = math::residual_scale_factor(K);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const int b = static_cast<int>((t - group_begin()) % Batch::kSize);
    const bool finite = fit_coordinate<kN>(AnyColumn{u, dtype, d}, K, j, mode, rows, c, state, line);
    const double b0 = line[0], b1 = line[1];  // written before the fit's last barrier
    for (int64_t x = threadIdx.x; x < K; x += kRT) {  // residuals, and their magnitudes for eq. (4)
      const double r = c.ys()[x] - (b0 + b1 * x);
      c.work()[x] = r;
      c.rows()[x] = math::abs_value(r);
    }
    __syncthreads();  // every residual
    const double tj = scale * block_median(c.rows(), K, &line[2]);  // eq. (3)-(4)
    if (threadIdx.x == 0) {
      beta0[j] = b0;
      beta1[j] = b1;
      tau[j] = tj;
      batch.finite[b] = finite;
    }
    double* conf = batch.confs(b, c);
    for (int64_t x = threadIdx.x; x < K; x += kRT) {
      conf[x] = math::confidence<false>(c.work()[x], tj, 0.0, math::rank_sqrt_one_minus_h(x, K), 0.0, Z, delta);
      batch.keep_rank(b, x, c);
    }
    __syncthreads();  // every confidence
    if (b + 1 < Batch::kSize && t + 1 < t_end) continue;
    const int lane = static_cast<int>(threadIdx.x);
    if (lane <= b) {  // eq. (10): the unbiased standard deviation of coordinate `lane`, ranks in order
      const double* mine = batch.confs(lane, c);
      double mean = 0.0;
      for (int64_t x = 0; x < K; ++x) mean += mine[x];
      mean /= static_cast<double>(K);
      double var = 0.0;
      for (int64_t x = 0; x < K; ++x) {
        const double dev = mine[x] - mean;
        var += dev * dev;
      }
      batch.sigma[lane] = math::sqrt_rn(var / static_cast<double>(K - 1));
    }
    __syncthreads();  // the batch's sigmas
    for (int64_t k = threadIdx.x; k < K; k += kRT) {  // client k's W, the coordinates in order (its thread's)
      double acc = W[k];
      for (int e = 0; e <= b; ++e)
        if (batch.finite[e]) acc += batch.confs(e, c)[batch.rank_of(e, k, c)] * batch.sigma[e];
      W[k] = acc;
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
__global__ void __launch_bounds__(kRT, plan::kResidualPass2BlocksPerSM) pass2_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t c0, int64_t n, int64_t tile_doubles, double lam, double delta,
    double* __restrict__ tiles,
    const double* __restrict__ beta0, const double* __restrict__ beta1, const double* __restrict__ tau,  // [d]
    const double* __restrict__ cw,        // [K]
    val_t<T>* __restrict__ aggregate) {  // [d]
  __shared__ double tile[plan::kResidualPass2Tile];
  BlockColumn c{block_tile(tile, tiles, tile_doubles), K};
  const double Z = math::band_limit(lam, K);
  // The ranks' constants once per block, each thread its own ranks (the ones it reads below).
  for (int64_t x = threadIdx.x; x < K; x += kRT) {
    c.rank_s()[x] = math::rank_sqrt_one_minus_h(x, K);
    c.rank_rs()[x] = 1.0 / c.rank_s()[x];
  }
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const int b = static_cast<int>((t - group_begin()) % kPass2Batch);
    const bool finite = load_ranked_column(TypedColumn<T>{u, d}, K, j, c).finite;
    const double b0 = beta0[j], b1 = beta1[j], tj = tau[j];
    // where the scale allows, each confidence's two quotients by reciprocals, as the CPU kernel's
    // copies with FMA take them (the same bits as dividing but at one overflow edge: math::confidence)
    const bool rcp = math::scale_allows_rcp(tj);
    const double rtau = 1.0 / tj;
    double* term = c.terms(b);
    for (int64_t x = threadIdx.x; x < K; x += kRT) {
      if (finite) {
        const double y = c.ys()[x], line = b0 + b1 * static_cast<double>(x), s = c.rank_s()[x];
        const double w = rcp ? math::confidence<true>(y - line, tj, rtau, s, c.rank_rs()[x], Z, delta)
                             : math::confidence<false>(y - line, tj, 0.0, s, 0.0, Z, delta);
        term[x] = cw[static_cast<int64_t>(c.idx()[x])] * math::corrected_value(y, line, w);
      } else {
        term[x] = cw[x] * c.rows()[x];  // client x's raw value
      }
    }
    __syncthreads();  // every term
    // After kPass2Batch coordinates (or the block's last), lane b' adds the
    // terms of the batch's coordinate b', in order (the next terms are
    // written after the next column's barriers).
    if (b == kPass2Batch - 1 || t + 1 == t_end) {
      const int lane = static_cast<int>(threadIdx.x);
      if (lane <= b) {
        const double* mine = c.terms(lane);
        double acc = 0.0;
        for (int64_t x = 0; x < K; ++x) acc += mine[x];
        aggregate[j - b + lane] = static_cast<val_t<T>>(acc);
      }
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
    case 100: f(std::integral_constant<int, 100>()); break;
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
