// Plumbing shared by the CUDA launchers: the stream handle, launch shapes,
// the one launch helper and error checks. Every launch goes on the caller's
// stream on the current device (ops.py makes the tensor's device current);
// nothing here synchronises, so the launches can be captured in a CUDA graph.
//
// The .cu files are compiled twice: by nvcc into robustagg::cuda (the GPU
// backend), and by the host C++ compiler with ROBUSTAGG_EMULATE_CUDA into
// robustagg::device_math, where csrc/emulate/cuda_emulation.h runs the same
// launchers and kernels on the CPU (the tests' proof of the launchers).
#pragma once

#if defined(ROBUSTAGG_EMULATE_CUDA)
#include "../emulate/cuda_emulation.h"
#define ROBUSTAGG_CUDA_NS device_math
#else
#include <cuda_runtime.h>
#define ROBUSTAGG_CUDA_NS cuda
#endif

#include <stdexcept>
#include <string>

#include "robustagg/common.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {

constexpr int kThreads = 256;  // threads per block of the one-thread-per-coordinate kernels

// Blocks beyond which a grid-stride launcher loops: 2^20 on a GPU; the
// emulation lets tests lower it, so that small inputs take the loops too.
inline int64_t max_blocks() {
#if defined(ROBUSTAGG_EMULATE_CUDA)
  return emu::max_grid_blocks();
#else
  return int64_t(1) << 20;
#endif
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// A kernel's can't-happen check on a proven invariant that the kernel also
// survives (by a slower exact path): nothing on the GPU; under the emulation
// it fails the launch (emu::kernel_invariant_failed), so the tests see a bug
// or a removed barrier that the fallback would otherwise hide.
#if defined(ROBUSTAGG_EMULATE_CUDA)
#define ROBUSTAGG_KERNEL_INVARIANT(ok, what) \
  do {                                        \
    if (!(ok)) ::robustagg::emu::kernel_invariant_failed(what, __FILE__, __LINE__); \
  } while (0)
#else
#define ROBUSTAGG_KERNEL_INVARIANT(ok, what) \
  do {                                        \
  } while (0)
#endif

// Blocks for n work items: at least 1, at most max_blocks(). A kernel launched
// with blocks_for must loop (grid-stride) over its items.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads, cap = max_blocks();
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("robustagg CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// The kernel's name, from kernel_name's own signature (GCC and Clang spell the
// template argument there; nvcc's host compiler is one of them), without
// namespaces: "order_registers_kernel<16, float>", as tests match it against
// ptxas's resource report.
inline std::string short_kernel_name(const std::string& sig) {
  const std::string key = "Kernel = ";
  const size_t at = sig.find(key);
  if (at == std::string::npos) return sig;
  const size_t end = sig.find_first_of(";]", at);
  std::string name = sig.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
  for (const char* ns : {"{anonymous}::", "(anonymous namespace)::", "robustagg::", "cuda::", "device_math::"})
    for (size_t p; (p = name.find(ns)) != std::string::npos;) name.erase(p, std::string(ns).size());
  return name;
}

template <auto Kernel> const char* kernel_name() {
  static const std::string name = short_kernel_name(__PRETTY_FUNCTION__);
  return name.c_str();
}

// Every kernel launch: kernel<<<grid, block, shared_bytes, stream>>>(args...)
// under nvcc, the emulated grid on the host; then the launch is checked (a
// bad configuration, or an earlier asynchronous error), naming the kernel.
template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, Args... args) {
#if defined(ROBUSTAGG_EMULATE_CUDA)
  (void)stream;
  auto body = [&]() { Kernel(args...); };
  emu::run_grid(kernel_name<Kernel>(), grid, block, shared_bytes,
                [](void* c) { (*static_cast<decltype(body)*>(c))(); }, &body);
#else
  Kernel<<<grid, block, shared_bytes, stream>>>(args...);
#endif
  check(cudaGetLastError(), kernel_name<Kernel>());
}

template <typename T> using val_t = typename Traits<T>::val_t;

// First coordinate of this thread, and the stride of a grid-stride loop.
__device__ inline int64_t thread_index() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The thread's lane in its warp, read where it is used: the device's %laneid
// by a volatile read, which the compiler does not hoist out of a loop (values
// derived from it would otherwise stay live in registers across the loop).
__device__ inline int lane_id() {
#if defined(ROBUSTAGG_EMULATE_CUDA)
  return static_cast<int>(threadIdx.x % 32);
#else
  int lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
#endif
}

// Calls dispatch_dtype's body with the element type as a template argument.
template <typename F> void with_type(DType dtype, F&& f) {
  dispatch_dtype(dtype, [&](auto tag) { f(static_cast<std::remove_const_t<std::remove_pointer_t<decltype(tag)>>*>(nullptr)); });
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
