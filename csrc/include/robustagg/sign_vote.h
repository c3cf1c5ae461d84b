// Kernel family 1: per-coordinate sign voting.
//
// Contract (clients are rows):
//   updates : [K, d] C-contiguous, element type `dtype`
//   weights : [K] float64, non-negative, not all zero, or nullptr (unweighted)
//   out_t   : float for float32/float16/bfloat16 inputs, double for float64
//
// sgn(x) is +1 for x > 0, -1 for x < 0 and 0 otherwise: zeros of either sign
// and NaN abstain (as in the RLR authors' code, where torch.sign(0) = 0).
// Sums over clients are accumulated in double in client order, so results do
// not depend on the thread count.
#pragma once
#include "robustagg/common.h"

namespace robustagg {
// The CPU kernels: csrc/cpu is compiled once per x86-64 instruction set and
// callers reach the one chosen at run time through ROBUSTAGG_CPU(name)
// (robustagg/cpu_isa.h).
#define ROBUSTAGG_SIGN_VOTE_CPU_API                                                         \
  /* out[j] = sum_k sgn(u[k, j])                 (int32_t* out) when weights == nullptr */  \
  /* out[j] = sum_k weights[k] * sgn(u[k, j])    (out_t* out)   otherwise */                \
  void sign_vote(const void* updates, DType dtype, int64_t K, int64_t d,                    \
      const double* weights, void* out, int num_threads);                                   \
  /* RLR eq. (5)-(6): m[j] = sum_k w_k u[k, j] / sum_k w_k (uniform w when */               \
  /* weights == nullptr); out[j] = m[j] if |sum_k sgn(u[k, j])| >= threshold, */            \
  /* else -m[j]. The vote is the unweighted count of clients (theta is a number */          \
  /* of agents). NaN in a column makes m[j] NaN there. out: out_t [d]. */                   \
  /* flipped (nullable): the number of coordinates whose learning rate is -1, */            \
  /* counted in the same pass (RobustLR's info). */                                         \
  void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d,               \
      double threshold, const double* weights, void* out, int64_t* flipped,                 \
      int num_threads);
namespace cpu { ROBUSTAGG_SIGN_VOTE_CPU_API }

// CUDA twins (csrc/cuda/sign_vote.cu) (also compiled for the CPU under
// csrc/emulate/, as device_math): same contract, device pointers, launched on `stream`
// (a cudaStream_t) on the current device; no synchronisation. `flipped` is a
// device int64 (zeroed and counted on the stream: warp sums, one atomic add
// per warp; an integer sum, so the count is exact whatever the order).
#define ROBUSTAGG_SIGN_VOTE_DEVICE_API                                                               \
  void sign_vote(const void* updates, DType dtype, int64_t K, int64_t d, const double* weights,      \
                 void* out, void* stream);                                                           \
  void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d, double threshold,      \
                      const double* weights, void* out, int64_t* flipped, void* stream);
namespace cuda { ROBUSTAGG_SIGN_VOTE_DEVICE_API }
namespace device_math { ROBUSTAGG_SIGN_VOTE_DEVICE_API }

}  // namespace robustagg
