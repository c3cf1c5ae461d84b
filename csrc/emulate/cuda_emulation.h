// The CUDA execution model on the host: what csrc/cuda/*.cu need to compile
// with a plain C++ compiler (ROBUSTAGG_EMULATE_CUDA, see launch.cuh) and run
// their real launchers on the CPU. Exactly the CUDA surface the kernels use,
// with CUDA's semantics:
//   - a launch runs every block of the grid; blocks run in parallel on the
//     host pool, the threads of one block are fibers of one OS thread (each
//     with its own stack, no OS thread per CUDA thread);
//   - threadIdx / blockIdx / blockDim / gridDim are the running fiber's;
//   - __shared__ storage is per block (thread_local: a block's fibers share
//     their OS thread, blocks running at once do not);
//   - __syncthreads() is a real barrier: a fiber yields there until every
//     thread of its block has arrived. Threads of the block that exited, or
//     wait at another barrier, make it a divergent barrier: an error naming
//     the kernel and the line, not a deadlock;
//   - __shfl_*_sync exchange values among the lanes of a warp (32 threads in
//     linear thread order); a lane of the mask that does not take part (it
//     exited, or waits elsewhere) is an error;
//   - between two barriers, the threads of a block run one after the other in
//     a schedule: in order, reversed, or a seeded shuffle (set_schedule). A
//     kernel whose result depends on the schedule reads another thread's write
//     within one phase (a missing barrier): the tests compare schedules.
// Launch shapes are checked against sm_80/sm_90 limits. What this cannot
// prove (memory-model ordering between warps, timing, the real toolkit and
// driver) is listed in docs/design.md.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// set_schedule (the order of a block's threads between barriers) and
// max_grid_blocks (launch.cuh's blocks_for cap, lowered by tests).
#include "emulation_control.h"

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Launch bounds are a promise to ptxas (registers); the launchers launch each
// bounded kernel with the constant named in its bound (test_emulation.py
// checks the source), and run_grid checks the hardware limits.
#define __launch_bounds__(...)
#define __shared__ static thread_local

namespace robustagg {
namespace emu {

// The block being run on this OS thread, and the fiber running in it.
struct BlockState {
  uint3 block_idx;
  dim3 block_dim, grid_dim;
};
extern thread_local const BlockState* t_block;
extern thread_local const uint3* t_thread_idx;

// Runs body(closure) as every thread of the grid (see above). Never throws:
// a bad launch shape or a fault records the error that cudaGetLastError
// returns, and the grid stops there.
void run_grid(const char* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*),
              void* closure);


void sync_threads(const char* file, int line);
// A kernel's own can't-happen check (a proven invariant, whose violation the
// GPU build survives by a slower exact path): under the emulation it fails the
// launch, naming the kernel, the thread and the line, so that a bug, or a
// removed barrier that the fallback would hide, is seen.
void kernel_invariant_failed(const char* what, const char* file, int line);
enum class ShuffleKind : int { Index = 0, Up = 1, Down = 2, Xor = 3 };
uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width, const char* file, int line);

cudaError_t get_last_error(bool clear);
const char* error_string(cudaError_t err);

template <typename T> inline T shuffle_value(unsigned mask, T v, ShuffleKind kind, int arg, int width,
                                             const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle moves up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mask, bits, kind, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace emu
}  // namespace robustagg

#define threadIdx (*::robustagg::emu::t_thread_idx)
#define blockIdx (::robustagg::emu::t_block->block_idx)
#define blockDim (::robustagg::emu::t_block->block_dim)
#define gridDim (::robustagg::emu::t_block->grid_dim)
#define warpSize 32

// The call site (file, line) names a barrier or a shuffle in error reports.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  // Memory clobbers: stores to __shared__ statics are made before the fiber
  // yields and values are re-read after it (the compiler cannot see that other
  // fibers touch a function's statics).
  asm volatile("" ::: "memory");
  ::robustagg::emu::sync_threads(file, line);
  asm volatile("" ::: "memory");
}
#define ROBUSTAGG_EMU_SHUFFLE(name, kind)                                                                \
  template <typename T>                                                                                 \
  inline T name(unsigned mask, T v, int arg, int width = 32, const char* file = __builtin_FILE(),        \
                int line = __builtin_LINE()) {                                                          \
    asm volatile("" ::: "memory");                                                                      \
    const T out = ::robustagg::emu::shuffle_value(mask, v, ::robustagg::emu::ShuffleKind::kind, arg, width, file, line); \
    asm volatile("" ::: "memory");                                                                      \
    return out;                                                                                         \
  }
ROBUSTAGG_EMU_SHUFFLE(__shfl_sync, Index)
ROBUSTAGG_EMU_SHUFFLE(__shfl_up_sync, Up)
ROBUSTAGG_EMU_SHUFFLE(__shfl_down_sync, Down)
ROBUSTAGG_EMU_SHUFFLE(__shfl_xor_sync, Xor)
#undef ROBUSTAGG_EMU_SHUFFLE

// Atomics: blocks run in parallel on host threads, so these are real atomics.
template <typename T> inline T atomicAdd(T* address, T value) {
  static_assert(std::is_integral<T>::value, "integer atomics (floating-point atomics are not deterministic)");
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
template <typename T> inline T atomicMax(T* address, T value) {
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old < value && !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}

// Device intrinsics with the device's results (round to nearest even; no
// contraction of the plain operations: the files include no_contraction.h).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
template <typename T> inline T __ldg(const T* p) { return *p; }

inline cudaError_t cudaGetLastError() { return ::robustagg::emu::get_last_error(true); }
inline cudaError_t cudaPeekAtLastError() { return ::robustagg::emu::get_last_error(false); }
inline const char* cudaGetErrorString(cudaError_t err) { return ::robustagg::emu::error_string(err); }
// Stream order is program order here: every launch has finished when it returns.
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t = nullptr) {
  if (n && !p) return cudaErrorInvalidValue;
  std::memset(p, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (n && (!dst || !src)) return cudaErrorInvalidValue;
  std::memmove(dst, src, n);
  return cudaSuccess;
}
