// Plumbing shared by the CUDA launchers: the stream handle, launch shapes and
// error checks. Every launch goes on the caller's stream on the current device
// (ops.py makes the tensor's device current); nothing here synchronises, so
// the launches can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "robustagg/common.h"

namespace robustagg {
namespace cuda {

constexpr int kThreads = 256;             // threads per block of the one-thread-per-coordinate kernels
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops beyond this

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("robustagg CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// After every launch: a bad configuration or an earlier asynchronous error.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

template <typename T> using val_t = typename Traits<T>::val_t;

// First coordinate of this thread, and the stride of a grid-stride loop.
__device__ inline int64_t thread_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Calls dispatch_dtype's body with the element type as a template argument.
template <typename F> void with_type(DType dtype, F&& f) {
  dispatch_dtype(dtype, [&](auto tag) { f(static_cast<std::remove_const_t<std::remove_pointer_t<decltype(tag)>>*>(nullptr)); });
}

}  // namespace cuda
}  // namespace robustagg
