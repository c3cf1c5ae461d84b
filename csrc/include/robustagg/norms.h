// Row statistics: out[k] = sum_n (u[k, n] - p[n])^2 in double (p null: the
// squared norm). Contract: updates [K, d] C-contiguous, point [d] of the same
// dtype or null, out double [K]. The summation order is fixed by
// math/norms.h (lanes, a tree, segments in order): bitwise identical for any
// thread count and between the CPU kernel, the CUDA kernel (GPU or emulated).
#pragma once
#include "robustagg/common.h"

namespace robustagg {
// The CPU kernels: csrc/cpu is compiled once per x86-64 instruction set and
// callers reach the one chosen at run time through ROBUSTAGG_CPU(name)
// (robustagg/cpu_isa.h).
#define ROBUSTAGG_NORMS_CPU_API                                                                                 \
  void sq_distances_to(const void* updates, DType dtype, int64_t K, int64_t d, const void* point, double* out,  \
      int num_threads);
namespace cpu { ROBUSTAGG_NORMS_CPU_API }

// CUDA twins (csrc/cuda/norms.cu): one block of math::kNormLanes threads per
// (segment, row), the lanes reduced in shared memory, the [K, segments]
// partials (norms_workspace_bytes) added in order by a second kernel.
#define ROBUSTAGG_NORMS_DEVICE_API                                                                   \
  size_t norms_workspace_bytes(int64_t K, int64_t d);                                               \
  void sq_distances_to(const void* updates, DType dtype, int64_t K, int64_t d, const void* point,    \
                       double* out, void* workspace, void* stream);
namespace cuda { ROBUSTAGG_NORMS_DEVICE_API }
namespace device_math { ROBUSTAGG_NORMS_DEVICE_API }

}  // namespace robustagg
