// Kernel family 1 on CUDA: kLanes coordinates per thread, a block width apart
// (consecutive threads read consecutive coordinates of one client row:
// coalesced), the per-thread math of math/sign.h, results bitwise those of the
// CPU kernels.
#include "robustagg/sign_vote.h"

#include "launch.cuh"
#include "robustagg/math/sign.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

// Each thread takes kLanes coordinates a block width apart (j, j + 256, ...):
// every load is coalesced across the warp, and a thread has kLanes loads of a
// client row in flight, times the unroll over rows (math/sign.h). A block
// covers kSpan consecutive coordinates; the grid strides over spans.
constexpr int kLanes = 4;
constexpr int64_t kSpan = static_cast<int64_t>(kThreads) * kLanes;

__device__ __forceinline__ int lanes_valid(int64_t j0, int64_t d) {
  const int64_t left = (d - j0 + kThreads - 1) / kThreads;  // lanes j0 + i * kThreads < d
  return left < kLanes ? static_cast<int>(left) : kLanes;
}

inline unsigned span_blocks(int64_t d) { return blocks_for((d + kLanes - 1) / kLanes); }

template <typename T>
__global__ void sign_vote_kernel(const T* __restrict__ u,  // [K, d]
                                 int64_t K, int64_t d, int32_t* __restrict__ out) {  // [d]
  for (int64_t j0 = blockIdx.x * kSpan + threadIdx.x; j0 < d; j0 += gridDim.x * kSpan) {
    const int valid = lanes_valid(j0, d);
    int32_t votes[kLanes];
    math::sign_vote_lanes<kLanes>(u, K, d, j0, kThreads, valid, votes);
    ROBUSTAGG_UNROLL
    for (int i = 0; i < kLanes; ++i)
      if (i < valid) out[j0 + i * kThreads] = votes[i];
  }
}

template <typename T>
__global__ void weighted_sign_vote_kernel(const T* __restrict__ u,         // [K, d]
                                          int64_t K, int64_t d,
                                          const double* __restrict__ w,    // [K]
                                          val_t<T>* __restrict__ out) {    // [d]
  for (int64_t j0 = blockIdx.x * kSpan + threadIdx.x; j0 < d; j0 += gridDim.x * kSpan) {
    const int valid = lanes_valid(j0, d);
    double acc[kLanes];
    math::weighted_sign_vote_lanes<kLanes>(u, K, d, j0, kThreads, valid, w, acc);
    ROBUSTAGG_UNROLL
    for (int i = 0; i < kLanes; ++i)
      if (i < valid) out[j0 + i * kThreads] = static_cast<val_t<T>>(acc[i]);
  }
}

template <typename T>
__global__ void robust_lr_mean_kernel(const T* __restrict__ u,         // [K, d]
                                      int64_t K, int64_t d, double threshold,
                                      const double* __restrict__ w,    // [K] or null
                                      val_t<T>* __restrict__ out,      // [d]
                                      unsigned long long* __restrict__ flipped) {  // one counter or null
  // The divisor once per block, not once per thread (K loads and adds each).
  __shared__ double block_wsum;
  if (threadIdx.x == 0) block_wsum = math::weight_sum(w, K);
  __syncthreads();
  const double wsum = block_wsum;
  unsigned long long count = 0;
  for (int64_t j0 = blockIdx.x * kSpan + threadIdx.x; j0 < d; j0 += gridDim.x * kSpan) {
    const int valid = lanes_valid(j0, d);
    val_t<T> mean[kLanes];
    int flip[kLanes];
    math::robust_lr_mean_lanes<kLanes>(u, K, d, j0, kThreads, valid, w, wsum, threshold, mean, flip);
    ROBUSTAGG_UNROLL
    for (int i = 0; i < kLanes; ++i) {
      if (i < valid) out[j0 + i * kThreads] = mean[i];
      count += static_cast<unsigned long long>(flip[i]);
    }
  }
  if (flipped) {  // every thread of the block reaches here: full-warp shuffles are safe
    for (int off = 16; off > 0; off /= 2) count += __shfl_down_sync(0xffffffffu, count, off);
    if ((threadIdx.x & 31) == 0 && count) atomicAdd(flipped, count);
  }
}

}  // namespace

void sign_vote(const void* updates, DType dtype, int64_t K, int64_t d, const double* weights, void* out,
               void* stream) {
  if (K <= 0 || d <= 0) return;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    if (weights)
      launch<weighted_sign_vote_kernel<T>>(dim3(span_blocks(d)), dim3(kThreads), 0, as_stream(stream), u, K, d,
                                           weights, static_cast<val_t<T>*>(out));
    else
      launch<sign_vote_kernel<T>>(dim3(span_blocks(d)), dim3(kThreads), 0, as_stream(stream), u, K, d,
                                  static_cast<int32_t*>(out));
  });
}

void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d, double threshold,
                    const double* weights, void* out, int64_t* flipped, void* stream) {
  if (flipped) check(cudaMemsetAsync(flipped, 0, sizeof(int64_t), as_stream(stream)), "robust_lr_mean count");
  if (K <= 0 || d <= 0) return;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch<robust_lr_mean_kernel<T>>(dim3(span_blocks(d)), dim3(kThreads), 0, as_stream(stream),
                                     static_cast<const T*>(updates), K, d, threshold, weights,
                                     static_cast<val_t<T>*>(out), reinterpret_cast<unsigned long long*>(flipped));
  });
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
