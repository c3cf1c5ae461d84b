// Kernel family 2: coordinate-wise order statistics.
//
// Contract (clients are rows):
//   updates : [K, d] C-contiguous, element type `dtype`; out : out_t [d]
//   (out_t is float for float32/float16/bfloat16 inputs, double for float64).
//
// Ordering: values are ordered by value with NaN above +inf (as torch.sort);
// -0.0 and +0.0 compare equal, so which of them is dropped by trimming is
// unspecified, and a result can be -0.0 where the reference gives +0.0.
// The kept values are summed in double; the order of that sum is fixed for a
// given K (not for a given thread count), so results are bitwise identical
// for any thread count. CPU and CUDA may differ in the last bit.
#pragma once
#include "robustagg/common.h"

namespace robustagg {
// The CPU kernels: csrc/cpu is compiled once per x86-64 instruction set and
// callers reach the one chosen at run time through ROBUSTAGG_CPU(name)
// (robustagg/cpu_isa.h).
#define ROBUSTAGG_TRIMMED_MEAN_CPU_API                                                               \
  /* Drop `trim` smallest and `trim` largest values per coordinate (0 <= 2*trim < K) */              \
  /* and average the remaining K - 2*trim. */                                                        \
  void trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d,                          \
      int64_t trim, void* out, int num_threads);                                                     \
  /* Median per coordinate: the middle value for odd K, the midpoint of the two */                   \
  /* middle values for even K (computed as a/2 + b/2, which cannot overflow). */                     \
  void median(const void* updates, DType dtype, int64_t K, int64_t d, void* out, int num_threads);   \
  /* Invariant aggregator (Algorithm 1, Definitions 7-9): trimmed mean where */                      \
  /* |sum_k sgn(u[k, j])| / K >= tau, else 0. sgn as in sign_vote.h. */                              \
  void masked_trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d,                   \
      double tau, int64_t trim, void* out, int num_threads);                                         \
  /* Bulyan's coordinate step (El Mhamdi et al. 2018): the mean of the */                            \
  /* K - 2*trim values nearest the median (math/order.h, OrderStat::Closest: */                      \
  /* at equal distance the lower value is kept), 0 <= 2*trim < K. */                                 \
  void closest_to_median_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim,  \
      void* out, int num_threads);
namespace cpu { ROBUSTAGG_TRIMMED_MEAN_CPU_API }

// CUDA twins (csrc/cuda/trimmed_mean.cu) (also compiled for the CPU under
// csrc/emulate/, as device_math): one thread per coordinate; K <= 32 on registers with the
// compile-time network of the next power of two, larger K in a [K, cols]
// column scratch of `workspace` (order_workspace_bytes) with the run-time
// network. Results are bitwise those of the CPU kernels (up to the sign of a
// zero result, see above).
#define ROBUSTAGG_ORDER_DEVICE_API                                                                   \
  size_t order_workspace_bytes(DType dtype, int64_t K, int64_t d);                                   \
  void trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim, void* out, \
                    void* workspace, void* stream);                                                  \
  void median(const void* updates, DType dtype, int64_t K, int64_t d, void* out, void* workspace,    \
              void* stream);                                                                         \
  void masked_trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, double tau,       \
                           int64_t trim, void* out, void* workspace, void* stream);                  \
  void closest_to_median_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim,  \
                              void* out, void* workspace, void* stream);
namespace cuda { ROBUSTAGG_ORDER_DEVICE_API }
namespace device_math { ROBUSTAGG_ORDER_DEVICE_API }

}  // namespace robustagg
