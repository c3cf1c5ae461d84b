// Kernel family 4: pairwise statistics between clients.
//
// Contract: updates [K, d] C-contiguous; outputs out_t [K, K], symmetric.
// Every entry comes from direct differences (never |a|^2 + |b|^2 - 2ab), so
// identical rows give exactly 0 distance. float64 input, cosine and
// pairwise_stats_f64 without `fast` accumulate in double (~1e-12 relative to
// a float64 computation); pairwise_stats for float32/16/bf16 input and
// pairwise_stats_f64 with `fast` use float32 blocks of 16 (two chains of 8)
// flushed to double: about 6.6e-7 relative at worst for distances, 6.6e-7
// |u_i| |u_j| for Gram entries (see math/pairwise.h). d is split into
// a fixed number of segments whose partial sums are added in segment order:
// bitwise identical for any thread count.
#pragma once
#include "robustagg/common.h"

namespace robustagg {
// The CPU kernels: csrc/cpu is compiled once per x86-64 instruction set and
// callers reach the one chosen at run time through ROBUSTAGG_CPU(name)
// (robustagg/cpu_isa.h).
#define ROBUSTAGG_PAIRWISE_CPU_API                                                        \
  /* sqdist[i, j] = sum_n (u[i, n] - u[j, n])^2; gram[i, j] = sum_n u[i, n] u[j, n]. */   \
  /* Either output may be nullptr; both are computed in one pass when both are given. */  \
  void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d,             \
      void* sqdist, void* gram, int num_threads);                                         \
  /* As pairwise_stats, but both outputs are double [K, K] for every input type. */       \
  /* fast (float32/16/bf16 input only): both sums from the float blocks of */             \
  /* math/pairwise.h (sq_diff_block, dot_block), flushed to double: distances */          \
  /* within ~6.6e-7 relative, Gram entries within ~6.6e-7 |u_i| |u_j|. A float */         \
  /* square or product that overflows leaves a non-finite entry: the caller */            \
  /* checks and recomputes with fast = false (robustagg/ops.py does). Otherwise */        \
  /* every sum in double (~1e-12 relative). */                                            \
  void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d,         \
      double* sqdist, double* gram, bool fast, int num_threads);                          \
  /* cos[i, j] = <u_i, u_j> / sqrt(|u_i|^2 |u_j|^2), clamped to [-1, 1]; exactly 1 */     \
  /* for identical non-zero rows; 0 where either row is all zero (diagonal too). */       \
  void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d,          \
      void* out, int num_threads);
namespace cpu { ROBUSTAGG_PAIRWISE_CPU_API }

// CUDA twins (csrc/cuda/pairwise.cu) (also compiled for the CPU under
// csrc/emulate/, as device_math): 32 x 32 client tiles staged through shared memory, each thread the
// blocked sums of four pairs (math::pair_partials), d cut into
// math::PairwiseSegments whose [segments, K, K] double partials in
// `workspace` (pairwise_workspace_bytes) are added in segment order. Same
// accuracy contract as the CPU; the two may differ in the last bits (other
// blocking of the sums). pairwise_stats_f64's `only_if` (a device int32, or
// null): when it holds 0 every kernel returns at once and nothing is written,
// so ops.py redoes a float call in float64 where the device says so, without
// reading anything back to the host.
#define ROBUSTAGG_PAIRWISE_DEVICE_API                                                                \
  size_t pairwise_workspace_bytes(DType dtype, int64_t K, int64_t d);                                \
  void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d, void* sqdist,          \
                      void* gram, void* workspace, void* stream);                                    \
  void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d, double* sqdist,    \
                          double* gram, bool fast, const int32_t* only_if, void* workspace,          \
                          void* stream);                                                             \
  void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d, void* out,          \
                         void* workspace, void* stream);
namespace cuda { ROBUSTAGG_PAIRWISE_DEVICE_API }
namespace device_math { ROBUSTAGG_PAIRWISE_DEVICE_API }

}  // namespace robustagg
