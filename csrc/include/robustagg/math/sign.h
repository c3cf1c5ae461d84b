// Per-coordinate math of kernel family 1 (sign voting): one definition for the
// CPU lanes, the CUDA threads (on the GPU and emulated).
#pragma once

#include "robustagg/math/load.h"

namespace robustagg {
namespace math {

// +1, -1, or 0 for zeros of either sign and NaN (an abstention, as in the RLR
// authors' code where torch.sign(0) = 0). Generic over the register type.
template <typename V> ROBUSTAGG_HD inline int sgn(V x) { return (x > V(0)) - (x < V(0)); }

// RLR eq. (5)-(6): the server learning rate is +1 where |votes| >= theta and
// -1 elsewhere; applied as a multiplication, which is an exact sign flip.
ROBUSTAGG_HD inline double rlr_learning_rate(int32_t votes, double threshold) {
  const double vote = static_cast<double>(votes < 0 ? -votes : votes);
  return vote >= threshold ? 1.0 : -1.0;
}

// Invariant aggregator's AND-mask (Definitions 7-9): |sum sgn| / K >= tau.
ROBUSTAGG_HD inline bool sign_mask_passes(int64_t votes, int64_t K, double tau) {
  return static_cast<double>(votes < 0 ? -votes : votes) / static_cast<double>(K) >= tau;
}

// One coordinate (column j0 of `u`, rows k * d): the whole per-thread work of
// sign_vote. Unweighted: the int32 count. Weighted: sum_k w_k sgn, in double,
// clients in order (the CPU kernel adds in the same order: bitwise equal).
template <typename T>
ROBUSTAGG_HD inline int32_t sign_vote_column(const T* u, int64_t K, int64_t d) {
  int32_t votes = 0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) votes += sgn(load(u + k * d));
  return votes;
}

template <typename T>
ROBUSTAGG_HD inline double weighted_sign_vote_column(const T* u, int64_t K, int64_t d, const double* w) {
  double acc = 0.0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) acc += w[k] * sgn(load(u + k * d));
  return acc;
}

// sum_k w_k in client order (K when w is null): the divisor of the RLR mean.
ROBUSTAGG_HD inline double weight_sum(const double* w, int64_t K) {
  double wsum = 0.0;
  for (int64_t k = 0; k < K; ++k) wsum += w ? w[k] : 1.0;
  return wsum;
}

// One coordinate of robust_lr_mean: the mean summed in double in client order
// (weighted by w, or uniform when w is null), divided by wsum, times the
// learning rate of the unweighted vote; `flipped` (when not null) is set to 1
// where that learning rate is -1, else 0.
template <typename T>
ROBUSTAGG_HD inline typename Traits<T>::val_t robust_lr_mean_column(const T* u, int64_t K, int64_t d,
                                                                    const double* w, double wsum,
                                                                    double threshold, int* flipped = nullptr) {
  using V = typename Traits<T>::val_t;
  double acc = 0.0;
  int32_t votes = 0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) {
    const V x = load(u + k * d);
    acc += w ? w[k] * static_cast<double>(x) : static_cast<double>(x);
    votes += sgn(x);
  }
  const double lr = rlr_learning_rate(votes, threshold);
  if (flipped) *flipped = lr < 0.0;
  return static_cast<V>((acc / wsum) * lr);
}

}  // namespace math
}  // namespace robustagg
