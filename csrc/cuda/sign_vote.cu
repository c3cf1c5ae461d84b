// Kernel family 1 on CUDA: one thread per coordinate (consecutive threads read
// consecutive coordinates of one client row: coalesced), the per-thread math
// of math/sign.h, results bitwise those of the CPU kernels.
#include "robustagg/sign_vote.h"

#include "launch.cuh"
#include "robustagg/math/sign.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

template <typename T>
__global__ void sign_vote_kernel(const T* __restrict__ u,  // [K, d]
                                 int64_t K, int64_t d, int32_t* __restrict__ out) {  // [d]
  for (int64_t j = thread_index(); j < d; j += grid_stride()) out[j] = math::sign_vote_column(u + j, K, d);
}

template <typename T>
__global__ void weighted_sign_vote_kernel(const T* __restrict__ u,         // [K, d]
                                          int64_t K, int64_t d,
                                          const double* __restrict__ w,    // [K]
                                          val_t<T>* __restrict__ out) {    // [d]
  for (int64_t j = thread_index(); j < d; j += grid_stride())
    out[j] = static_cast<val_t<T>>(math::weighted_sign_vote_column(u + j, K, d, w));
}

template <typename T>
__global__ void robust_lr_mean_kernel(const T* __restrict__ u,         // [K, d]
                                      int64_t K, int64_t d, double threshold,
                                      const double* __restrict__ w,    // [K] or null
                                      val_t<T>* __restrict__ out,      // [d]
                                      unsigned long long* __restrict__ flipped) {  // one counter or null
  const double wsum = math::weight_sum(w, K);
  unsigned long long count = 0;
  for (int64_t j = thread_index(); j < d; j += grid_stride()) {
    int flip = 0;
    out[j] = math::robust_lr_mean_column(u + j, K, d, w, wsum, threshold, &flip);
    count += static_cast<unsigned long long>(flip);
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
      launch<weighted_sign_vote_kernel<T>>(dim3(blocks_for(d)), dim3(kThreads), 0, as_stream(stream), u, K, d,
                                           weights, static_cast<val_t<T>*>(out));
    else
      launch<sign_vote_kernel<T>>(dim3(blocks_for(d)), dim3(kThreads), 0, as_stream(stream), u, K, d,
                                  static_cast<int32_t*>(out));
  });
}

void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d, double threshold,
                    const double* weights, void* out, int64_t* flipped, void* stream) {
  if (flipped) check(cudaMemsetAsync(flipped, 0, sizeof(int64_t), as_stream(stream)), "robust_lr_mean count");
  if (K <= 0 || d <= 0) return;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch<robust_lr_mean_kernel<T>>(dim3(blocks_for(d)), dim3(kThreads), 0, as_stream(stream),
                                     static_cast<const T*>(updates), K, d, threshold, weights,
                                     static_cast<val_t<T>*>(out), reinterpret_cast<unsigned long long*>(flipped));
  });
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
