// Kernel family 3 on CUDA: a block of plan::kResidualThreads (32) threads
// walks plan's kResidualBlock (128) coordinates in order, one coordinate at a
// time, its working set in a static 32 KB shared tile (K <= 108; beyond, a
// slice of the workspace per block). Per coordinate: the column is loaded and
// ranked (value, then client: every thread ranks K / 32 values by counting),
// each thread takes rows of Siegel's repeated medians (row i of the slopes or
// of the intercepts: its K - 1 pair values in its own column of the tile,
// each the IEEE quotient by math::div_rcp's product and correction, and their
// exact median by math::select_median), two
// threads take the medians of the row medians, and the residuals, their
// scale, the confidences and sigma follow on the tile. No pair value, sorted
// column or residual touches global memory; global traffic is the column's K
// values, three doubles of line and scale, and the block's W partials (K
// doubles, written once per coordinate by the thread of each rank). W of
// eq. (10) is summed per block in coordinate order and then over blocks in
// order, as the CPU kernel's tasks sum it (bitwise). Barriers: each one below
// separates a phase's writes from the next phase's reads by other threads.
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
// sorted values, client of each rank, row medians (slopes then intercepts),
// a row of K values, 1 / dx for the rank gaps dx < K (set once per block),
// and the threads' pair rows (thread t's row is strided by kRT from rows + t;
// the first K entries also hold the raw column, then the absolute residuals).
struct BlockColumn {
  double *ys, *idx, *meds, *work, *rdx, *rows;
  __device__ BlockColumn(double* base, int64_t K)
      : ys(base), idx(base + K), meds(base + 2 * K), work(base + 4 * K), rdx(base + 5 * K), rows(base + 6 * K) {}
};

// 1 / dx, correctly rounded, for dx < K: each pair value is then a product
// and Markstein's correction (math::div_rcp), not a division. Read first after
// the barriers of the block's first coordinate.
__device__ inline void set_gap_reciprocals(int64_t K, BlockColumn& c) {
  for (int64_t dx = threadIdx.x; dx < K; dx += kRT) c.rdx[dx] = dx > 0 ? 1.0 / static_cast<double>(dx) : 0.0;
}

// The block's tile: the static shared one, or its slice of the workspace.
__device__ inline double* block_tile(double* shared_tile, double* tiles, int64_t tile_doubles) {
  return tiles ? tiles + static_cast<int64_t>(blockIdx.x) * tile_doubles : shared_tile;
}

// Loads coordinate j's column (the raw values in c.rows[0, K)) and ranks it
// into c.ys / c.idx; a column with NaN or Inf is ranked as zeros (callers
// mask it). Returns whether all K values are finite. bad: kRT flags.
template <typename T>
__device__ bool load_ranked_column(const T* __restrict__ u, int64_t K, int64_t d, int64_t j, BlockColumn& c,
                                   int* bad) {
  int mine = 0;
  for (int64_t k = threadIdx.x; k < K; k += kRT) {
    const double v = static_cast<double>(load(u + k * d + j));
    c.rows[k] = v;
    mine |= !(v * 0.0 == 0.0);
  }
  bad[threadIdx.x] = mine;
  __syncthreads();  // the raw column and every thread's flag
  int any = 0;
  for (int t = 0; t < kRT; ++t) any |= bad[t];
  const bool finite = any == 0;
  for (int64_t k = threadIdx.x; k < K; k += kRT) {
    const double v = finite ? c.rows[k] : 0.0;
    int64_t rank = 0;
    for (int64_t m = 0; m < K; ++m) rank += math::rank_before(finite ? c.rows[m] : 0.0, m, v, k);
    c.ys[rank] = v;
    c.idx[rank] = static_cast<double>(k);
  }
  __syncthreads();  // the ranked column
  return finite;
}

// Row r < rows_wanted of the repeated medians into c.meds[r]: r < K is row r
// of the slopes (eq. 1), K <= r < 2K row r - K of the intercepts (eq. 2).
__device__ inline void row_medians(int64_t K, int64_t rows_wanted, BlockColumn& c) {
  const math::Strided<double> mine{c.rows + threadIdx.x, kRT};
  for (int64_t r = threadIdx.x; r < rows_wanted; r += kRT) {
    const int64_t i = r < K ? r : r - K;
    int64_t n = 0;
    for (int64_t j = 0; j < K; ++j) {
      if (j == i) continue;
      const int64_t a = i < j ? i : j, b = i < j ? j : i;
      const double dx = static_cast<double>(b - a), rdx = c.rdx[b - a];
      mine[n++] = r < K ? math::pair_slope(c.ys[a], c.ys[b], dx, rdx)
                        : math::pair_intercept(c.ys[a], c.ys[b], static_cast<double>(a), static_cast<double>(b),
                                               rdx);
    }
    c.meds[r] = math::select_median(mine, K - 1);
  }
  __syncthreads();  // every row median
}

// Siegel's line of the ranked column from its row medians: thread 0 the slope
// (and the authors' intercept, Median mode), thread 1 the Siegel intercept.
__device__ inline void line_from_medians(int64_t K, math::InterceptMode mode, BlockColumn& c, double* line) {
  if (threadIdx.x == 0) {
    const double slope = K == 1 ? 0.0 : math::select_median(math::Strided<double>{c.meds, 1}, K);
    line[1] = slope;
    if (K == 1) line[0] = c.ys[0];
    else if (mode == math::InterceptMode::Median) {  // med(y) - slope (K - 1) / 2
      const double a = c.ys[(K - 1) / 2], b = c.ys[K / 2];
      const double med = (K % 2 == 1) ? b : math::midpoint(a, b);
      line[0] = med - slope * (0.5 * static_cast<double>(K - 1));
    }
  } else if (threadIdx.x == 1 && K > 1 && mode == math::InterceptMode::Siegel) {
    line[0] = math::select_median(math::Strided<double>{c.meds + K, 1}, K);
  }
}

// Loads, ranks and fits coordinate j (its line in line[0] = intercept,
// line[1] = slope, each written by the thread that chose it). Returns whether
// the column is finite.
template <typename T>
__device__ bool fit_coordinate(const T* __restrict__ u, int64_t K, int64_t d, int64_t j, math::InterceptMode mode,
                               int64_t rows, BlockColumn& c, int* bad, double* line) {
  const bool finite = load_ranked_column(u, K, d, j, c, bad);
  row_medians(K, rows, c);
  line_from_medians(K, mode, c, line);
  return finite;
}

// The block's coordinates of the chunk's n: [group_begin(), group_end(n)), in order.
__device__ inline int64_t group_begin() { return static_cast<int64_t>(blockIdx.x) * kGroup; }
__device__ inline int64_t group_end(int64_t n) { return group_begin() + kGroup < n ? group_begin() + kGroup : n; }

inline int64_t rows_wanted(int64_t K, math::InterceptMode mode) {
  return K < 2 ? 0 : (mode == math::InterceptMode::Siegel ? 2 * K : K);
}

template <typename T>
__global__ void __launch_bounds__(kRT) line_kernel(const T* __restrict__ u,  // [K, d]
                                                   int64_t K, int64_t d, int64_t c0, int64_t n,
                                                   math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
                                                   double* __restrict__ tiles,
                                                   val_t<T>* __restrict__ slope,        // [d]
                                                   val_t<T>* __restrict__ intercept) {  // [d]
  __shared__ double tile[plan::kResidualTile];
  __shared__ int bad[kRT];
  __shared__ double line[2];
  BlockColumn c(block_tile(tile, tiles, tile_doubles), K);
  set_gap_reciprocals(K, c);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = fit_coordinate(u, K, d, j, mode, rows, c, bad, line);
    // The thread that chose a value stores it (no barrier: the next
    // coordinate's first writes to the tile and line come after its barriers).
    const double nan = math::quiet_nan<double>();
    if (threadIdx.x == 0) slope[j] = static_cast<val_t<T>>(finite ? line[1] : nan);
    if (threadIdx.x == (mode == math::InterceptMode::Siegel && K > 1 ? 1 : 0))
      intercept[j] = static_cast<val_t<T>>(finite ? line[0] : nan);
  }
}

// Pass 1 of Algorithm 1 on the block's coordinates: lines, residual scales
// and confidences, and partial[block, k] = sum over the block's coordinates,
// in order, of conf * sigma of client k (non-finite columns add nothing).
template <typename T>
__global__ void __launch_bounds__(kRT) pass1_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t c0, int64_t n, math::InterceptMode mode, int64_t rows, int64_t tile_doubles,
    double lam, double delta, double* __restrict__ tiles,
    double* __restrict__ beta0, double* __restrict__ beta1, double* __restrict__ tau,  // [d]
    double* __restrict__ partial) {  // [blocks_per_chunk, K]
  __shared__ double tile[plan::kResidualTile];
  __shared__ int bad[kRT];
  __shared__ double line[4];  // intercept, slope, tau, sigma
  BlockColumn c(block_tile(tile, tiles, tile_doubles), K);
  double* W = partial + static_cast<int64_t>(blockIdx.x) * K;
  for (int64_t k = threadIdx.x; k < K; k += kRT) W[k] = 0.0;
  set_gap_reciprocals(K, c);
  const double Z = math::band_limit(lam, K), scale = math::residual_scale_factor(K);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = fit_coordinate(u, K, d, j, mode, rows, c, bad, line);
    __syncthreads();  // the line
    const double b0 = line[0], b1 = line[1];
    for (int64_t x = threadIdx.x; x < K; x += kRT) {  // residuals, and their magnitudes for eq. (4)
      const double r = c.ys[x] - (b0 + b1 * x);
      c.work[x] = r;
      c.rows[x] = math::abs_value(r);
    }
    __syncthreads();  // every residual
    if (threadIdx.x == 0) {  // eq. (3)-(4)
      line[2] = scale * math::select_median(math::Strided<double>{c.rows, 1}, K);
      beta0[j] = b0;
      beta1[j] = b1;
      tau[j] = line[2];
    }
    __syncthreads();  // the residual scale
    const double tj = line[2];
    for (int64_t x = threadIdx.x; x < K; x += kRT)
      c.work[x] = math::confidence<false>(c.work[x], tj, 0.0, math::rank_sqrt_one_minus_h(x, K), 0.0, Z, delta);
    __syncthreads();  // every confidence
    if (threadIdx.x == 0) {  // eq. (10): the unbiased standard deviation, ranks in order
      double mean = 0.0;
      for (int64_t x = 0; x < K; ++x) mean += c.work[x];
      mean /= static_cast<double>(K);
      double var = 0.0;
      for (int64_t x = 0; x < K; ++x) {
        const double dev = c.work[x] - mean;
        var += dev * dev;
      }
      line[3] = math::sqrt_rn(var / static_cast<double>(K - 1));
    }
    __syncthreads();  // sigma
    if (finite) {
      const double sigma = line[3];
      for (int64_t x = threadIdx.x; x < K; x += kRT) {
        const int64_t client = static_cast<int64_t>(c.idx[x]);
        W[client] += c.work[x] * sigma;
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
__global__ void __launch_bounds__(kRT) pass2_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t c0, int64_t n, int64_t tile_doubles, double lam, double delta,
    double* __restrict__ tiles,
    const double* __restrict__ beta0, const double* __restrict__ beta1, const double* __restrict__ tau,  // [d]
    const double* __restrict__ cw,        // [K]
    val_t<T>* __restrict__ aggregate) {  // [d]
  __shared__ double tile[plan::kResidualTile];
  __shared__ int bad[kRT];
  BlockColumn c(block_tile(tile, tiles, tile_doubles), K);
  const double Z = math::band_limit(lam, K);
  for (int64_t t = group_begin(), t_end = group_end(n); t < t_end; ++t) {
    const int64_t j = c0 + t;
    const bool finite = load_ranked_column(u, K, d, j, c, bad);
    const double b0 = beta0[j], b1 = beta1[j], tj = tau[j];
    for (int64_t x = threadIdx.x; x < K; x += kRT) {
      if (finite) {
        const double y = c.ys[x], line = b0 + b1 * static_cast<double>(x);
        const double w = math::confidence<false>(y - line, tj, 0.0, math::rank_sqrt_one_minus_h(x, K), 0.0, Z,
                                                 delta);
        c.work[x] = cw[static_cast<int64_t>(c.idx[x])] * math::corrected_value(y, line, w);
      } else {
        c.work[x] = cw[x] * c.rows[x];  // client x's raw value
      }
    }
    __syncthreads();  // every term
    if (threadIdx.x == 0) {
      double acc = 0.0;
      for (int64_t x = 0; x < K; ++x) acc += c.work[x];
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

void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d, InterceptMode mode, void* slope,
                          void* intercept, void* workspace, void* stream) {
  if (K <= 0 || d <= 0) return;
  const plan::ResidualLayout layout(K, d);
  const cudaStream_t s = as_stream(stream);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
      launch<line_kernel<T>>(dim3(group_blocks(n)), dim3(kRT), 0, s, static_cast<const T*>(updates), K, d, c0, n,
                             mode, rows_wanted(K, mode), layout.tile_doubles,
                             plan::ResidualWorkspace(layout, workspace).tiles, static_cast<val_t<T>*>(slope),
                             static_cast<val_t<T>*>(intercept));
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
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
      const unsigned blocks = group_blocks(n);
      launch<pass1_kernel<T>>(dim3(blocks), dim3(kRT), 0, s, u, K, d, c0, n, mode, rows_wanted(K, mode),
                              layout.tile_doubles, lam, delta, tiles, beta0, beta1, tau, partial);
      launch<reduce_blocks_kernel>(dim3(blocks_for(K)), dim3(kThreads), 0, s, partial, blocks, K, W);
    }
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
