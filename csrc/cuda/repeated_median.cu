// Kernel family 3 on CUDA: one thread per coordinate runs the per-coordinate
// math of math/residual.h (sort with client index, Siegel's repeated medians,
// confidences, the eq. 9 correction) in its column of a [5K, cols] scratch
// (consecutive threads own consecutive scratch columns: coalesced); there are
// no K x K temporaries. The one cooperative part is W of eq. (10), summed per
// block of kResidualBlock coordinates in shared memory (see pass1_kernel) and
// then over blocks in order, as the CPU kernel's tasks sum it.
#include "robustagg/repeated_median.h"

#include "launch.cuh"
#include "robustagg/device_plan.h"
#include "robustagg/math/residual.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

constexpr int kBlock = static_cast<int>(math::kResidualBlock);  // threads = coordinates per block
constexpr int kClientTile = 32;                                 // clients reduced per shared-memory round

template <typename T>
__global__ void line_kernel(const T* __restrict__ u,  // [K, d]
                            int64_t K, int64_t d, int64_t c0, int64_t n, int64_t cols, math::InterceptMode mode,
                            double* __restrict__ scratch,      // [5K, cols]
                            val_t<T>* __restrict__ slope,      // [d]
                            val_t<T>* __restrict__ intercept) {  // [d]
  for (int64_t t = thread_index(); t < n; t += grid_stride()) {
    math::ResidualColumn col(scratch + t, K, cols);
    double b1 = 0.0, b0 = 0.0;
    const bool finite = math::load_sorted_column(u + c0 + t, K, d, col);
    math::fit_line_column(col, K, mode, b1, b0);
    slope[c0 + t] = static_cast<val_t<T>>(finite ? b1 : math::quiet_nan<double>());
    intercept[c0 + t] = static_cast<val_t<T>>(finite ? b0 : math::quiet_nan<double>());
  }
}

// Pass 1 for one block of kBlock coordinates: lines, confidences and sigma per
// thread; then partial[block, k] = sum over the block's coordinates, in
// coordinate order, of conf_k * sigma (non-finite columns add nothing).
// Invariant of the reduction: round r stages the contributions of clients
// [32 r, 32 r + 32) as red[client][coordinate] (0 where a thread has none),
// and thread c < 32 adds row c left to right, the order the CPU adds them.
// No __launch_bounds__: with .maxntid 128 ptxas aims at 80 registers and spills
// (48-byte stack); unbounded it takes 95 registers, no stack, still 5 blocks of
// 128 threads per SM (6 by shared memory).
template <typename T>
__global__ void pass1_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t c0, int64_t n, int64_t cols, math::InterceptMode mode, double lam, double delta,
    double* __restrict__ scratch,   // [5K, cols]
    double* __restrict__ beta0, double* __restrict__ beta1, double* __restrict__ tau,  // [d]
    double* __restrict__ partial) {  // [blocks_per_chunk, K]
  __shared__ double red[kClientTile][kBlock + 1];
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  const bool active = t < n;
  math::ResidualColumn col(scratch + (active ? t : 0), K, cols);
  double sigma = 0.0;
  bool finite = false;
  if (active) {
    const int64_t j = c0 + t;
    finite = math::load_sorted_column(u + j, K, d, col);
    math::fit_line_column(col, K, mode, beta1[j], beta0[j]);
    sigma = math::confidences_column(col, K, beta0[j], beta1[j], lam, delta, tau[j]);
  }
  const bool contributes = active && finite;
  const int coords = static_cast<int>(n - static_cast<int64_t>(blockIdx.x) * kBlock < kBlock
                                          ? n - static_cast<int64_t>(blockIdx.x) * kBlock : kBlock);
  for (int64_t k0 = 0; k0 < K; k0 += kClientTile) {
    for (int c = 0; c < kClientTile; ++c) red[c][threadIdx.x] = 0.0;
    if (contributes)
      for (int64_t x = 0; x < K; ++x) {
        const int64_t client = static_cast<int64_t>(col.idx[x]);
        if (client >= k0 && client < k0 + kClientTile) red[client - k0][threadIdx.x] = col.conf[x] * sigma;
      }
    __syncthreads();
    if (threadIdx.x < kClientTile && k0 + threadIdx.x < K) {
      double acc = 0.0;
      for (int c = 0; c < coords; ++c) acc += red[threadIdx.x][c];
      partial[static_cast<int64_t>(blockIdx.x) * K + k0 + threadIdx.x] = acc;
    }
    __syncthreads();
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

template <typename T>
__global__ void pass2_kernel(const T* __restrict__ u,  // [K, d]
                             int64_t K, int64_t d, int64_t c0, int64_t n, int64_t cols, double lam, double delta,
                             double* __restrict__ scratch,  // [5K, cols]
                             const double* __restrict__ beta0, const double* __restrict__ beta1,
                             const double* __restrict__ tau,  // [d]
                             const double* __restrict__ cw,   // [K]
                             val_t<T>* __restrict__ aggregate) {  // [d]
  for (int64_t t = thread_index(); t < n; t += grid_stride()) {
    const int64_t j = c0 + t;
    math::ResidualColumn col(scratch + t, K, cols);
    aggregate[j] = static_cast<val_t<T>>(
        math::corrected_sum_column(u + j, K, d, col, cw, beta0[j], beta1[j], tau[j], lam, delta));
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
      launch<line_kernel<T>>(dim3(blocks_for(n, kBlock)), dim3(kBlock), 0, s, static_cast<const T*>(updates), K, d,
                             c0, n, layout.cols, mode, plan::ResidualWorkspace(layout, workspace).scratch,
                             static_cast<val_t<T>*>(slope), static_cast<val_t<T>*>(intercept));
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
  double *scratch = w.scratch, *beta0 = w.beta0, *beta1 = w.beta1, *tau = w.tau, *partial = w.partial, *W = w.W,
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
      const int64_t blocks = (n + kBlock - 1) / kBlock;
      launch<pass1_kernel<T>>(dim3(static_cast<unsigned>(blocks)), dim3(kBlock), 0, s, u, K, d, c0, n, layout.cols,
                              mode, lam, delta, scratch, beta0, beta1, tau, partial);
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
      launch<pass2_kernel<T>>(dim3(blocks_for(n, kBlock)), dim3(kBlock), 0, s, u, K, d, c0, n, layout.cols, lam,
                              delta, scratch, beta0, beta1, tau, cw, agg);
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
