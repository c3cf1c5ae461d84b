// Kernel family 3: repeated-median lines and residual-based reweighting
// (residual_reweighting.txt, Algorithm 1; docs/design.md, "Residual-based reweighting").
//
// Per coordinate n the K values are sorted; the value of rank x (0..K-1) is
// y_(x), ties broken by client index. Medians of an even count are the
// midpoint of the two middle values. Arithmetic is done in double for every
// input type. NaN sorts above +inf; a column with NaN or Inf produces NaN/Inf
// in its line and residuals (the aggregator layer excludes such clients).
#pragma once
#include "robustagg/common.h"
#include "robustagg/math/residual.h"

namespace robustagg {

using InterceptMode = math::InterceptMode;

// The CPU kernels: csrc/cpu is compiled once per x86-64 instruction set and
// callers reach the one chosen at run time through ROBUSTAGG_CPU(name)
// (robustagg/cpu_isa.h).
#define ROBUSTAGG_REPEATED_MEDIAN_CPU_API                                                                             \
  /* Siegel's repeated medians on (rank, sorted value): */                                                            \
  /* slope     = med_i med_{j != i} (y_j - y_i) / (j - i)                    eq. (1) */                               \
  /* intercept = med_i med_{j != i} (j y_i - i y_j) / (j - i)   (Siegel)     eq. (2) */                               \
  /* = med(y) - slope (K - 1) / 2                      (Median) */                                                    \
  /* K = 1: slope 0, intercept y_0. slope, intercept: out_t [d]. */                                                   \
  void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d,                                   \
      InterceptMode mode, void* slope, void* intercept, int num_threads);                                             \
  /* Algorithm 1 of residual_reweighting.txt. client_weights: out_t [K], */                                           \
  /* aggregate: out_t [d]. K < 3: plain mean, uniform weights. Two passes over */                                     \
  /* `updates`; the only temporaries are O(d) line parameters and O(K) sums. */                                       \
  void residual_reweight(const void* updates, DType dtype, int64_t K, int64_t d,                                      \
      double lam, double delta, double power, InterceptMode mode,                                                     \
      void* client_weights, void* aggregate, int num_threads);                                                        \
  /* Algorithm 1 in two parts, for coordinate shards (robustagg.distributed): */                                      \
  /* residual_client_sums writes the client sums W [K] (double) of eq. (10) over */                                   \
  /* this tensor's coordinates (zeros for K < 3); residual_apply takes the sums of */                                 \
  /* every shard, normalises them (eq. 11, with power) into client_weights and */                                     \
  /* writes this tensor's aggregate. residual_apply(u, residual_client_sums(u)) */                                    \
  /* is residual_reweight(u), bitwise. */                                                                             \
  void residual_client_sums(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,         \
      InterceptMode mode, double* client_sums, int num_threads);                                                      \
  void residual_apply(const void* updates, DType dtype, int64_t K, int64_t d, const double* client_sums, double lam,  \
      double delta, double power, InterceptMode mode, void* client_weights, void* aggregate,                          \
      int num_threads);
namespace cpu { ROBUSTAGG_REPEATED_MEDIAN_CPU_API }

// CUDA twins (csrc/cuda/repeated_median.cu) (also compiled for the CPU under
// csrc/emulate/, as device_math): a block of 32 threads per
// math::kResidualBlock coordinates, one coordinate at a time in a shared tile
// (K <= 113; beyond, a tile per block in `workspace`): the column ranked, the
// pair rows as float keys and their middle keys split among the threads, the
// few rows whose median decides the outer ones again in double (the CPU
// kernel's float-key path, math/residual.h), no pair value in global memory. W of eq. (10) is summed per block in coordinate order and the
// blocks in order, as the CPU kernel's tasks do, so every result is bitwise
// the CPU kernel's except client weights with power != 1 (CUDA's pow is
// within 2 ulp, not correctly rounded).
#define ROBUSTAGG_RESIDUAL_DEVICE_API                                                                \
  size_t residual_workspace_bytes(DType dtype, int64_t K, int64_t d);                                \
  void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d,                  \
                            InterceptMode mode, void* slope, void* intercept, void* workspace,       \
                            void* stream);                                                           \
  void residual_reweight(const void* updates, DType dtype, int64_t K, int64_t d, double lam,         \
                         double delta, double power, InterceptMode mode, void* client_weights,       \
                         void* aggregate, void* workspace, void* stream);                   \
  void residual_client_sums(const void* updates, DType dtype, int64_t K, int64_t d, double lam,      \
                            double delta, InterceptMode mode, double* client_sums, void* workspace,  \
                            void* stream);                                                           \
  void residual_apply(const void* updates, DType dtype, int64_t K, int64_t d,                        \
                      const double* client_sums, double lam, double delta, double power,             \
                      InterceptMode mode, void* client_weights, void* aggregate, void* workspace,    \
                      void* stream);
namespace cuda { ROBUSTAGG_RESIDUAL_DEVICE_API }
namespace device_math { ROBUSTAGG_RESIDUAL_DEVICE_API }

}  // namespace robustagg
