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

// The per-thread work of the sign ops on N coordinates j0 + i * step (i < N;
// only i < valid exist): each coordinate's clients in order, so the result of
// a coordinate does not depend on N or step, and the CPU kernels, which add in
// the same order, are bitwise equal. N independent loads per client row give a
// GPU thread N loads in flight (times the unroll over rows); N = 1 is one
// coordinate (the *_column forms below). Lanes are indexed only by unrolled
// compile-time i: the arrays stay in registers.
// kFull: every lane exists, so the loads of a row carry no condition and the
// compiler issues them together; the tail (valid < N) tests each lane.
template <int N, bool kFull, typename T>
ROBUSTAGG_HD inline void sign_vote_rows(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step, int valid,
                                        int32_t (&votes)[N]) {
  ROBUSTAGG_UNROLL
  for (int i = 0; i < N; ++i) votes[i] = 0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) {
    const T* row = u + k * d + j0;
    ROBUSTAGG_UNROLL
    for (int i = 0; i < N; ++i)
      if (kFull || i < valid) votes[i] += sgn(load(row + i * step));
  }
}

template <int N, typename T>
ROBUSTAGG_HD inline void sign_vote_lanes(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step, int valid,
                                         int32_t (&votes)[N]) {
  if (valid >= N) sign_vote_rows<N, true>(u, K, d, j0, step, valid, votes);
  else sign_vote_rows<N, false>(u, K, d, j0, step, valid, votes);
}

// Weighted: sum_k w_k sgn, in double, 0 then clients in order.
template <int N, bool kFull, typename T>
ROBUSTAGG_HD inline void weighted_sign_vote_rows(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step,
                                                 int valid, const double* w, double (&acc)[N]) {
  ROBUSTAGG_UNROLL
  for (int i = 0; i < N; ++i) acc[i] = 0.0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) {
    const T* row = u + k * d + j0;
    const double wk = w[k];
    ROBUSTAGG_UNROLL
    for (int i = 0; i < N; ++i)
      if (kFull || i < valid) acc[i] += wk * sgn(load(row + i * step));
  }
}

template <int N, typename T>
ROBUSTAGG_HD inline void weighted_sign_vote_lanes(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step,
                                                  int valid, const double* w, double (&acc)[N]) {
  if (valid >= N) weighted_sign_vote_rows<N, true>(u, K, d, j0, step, valid, w, acc);
  else weighted_sign_vote_rows<N, false>(u, K, d, j0, step, valid, w, acc);
}

template <typename T>
ROBUSTAGG_HD inline int32_t sign_vote_column(const T* u, int64_t K, int64_t d) {
  int32_t votes[1];
  sign_vote_lanes<1>(u, K, d, 0, 0, 1, votes);
  return votes[0];
}

template <typename T>
ROBUSTAGG_HD inline double weighted_sign_vote_column(const T* u, int64_t K, int64_t d, const double* w) {
  double acc[1];
  weighted_sign_vote_lanes<1>(u, K, d, 0, 0, 1, w, acc);
  return acc[0];
}

// sum_k w_k in client order (K when w is null): the divisor of the RLR mean.
ROBUSTAGG_HD inline double weight_sum(const double* w, int64_t K) {
  double wsum = 0.0;
  for (int64_t k = 0; k < K; ++k) wsum += w ? w[k] : 1.0;
  return wsum;
}

// robust_lr_mean on N coordinates (as sign_vote_lanes): the mean summed in
// double in client order (weighted by w, or uniform when w is null), divided
// by wsum, times the learning rate of the unweighted vote; flipped[i] is 1
// where that learning rate is -1, else 0.
template <int N, bool kFull, typename T>
ROBUSTAGG_HD inline void robust_lr_mean_rows(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step,
                                             int valid, const double* w, double (&acc)[N], int32_t (&votes)[N]) {
  using V = typename Traits<T>::val_t;
  ROBUSTAGG_UNROLL
  for (int i = 0; i < N; ++i) acc[i] = 0.0, votes[i] = 0;
  ROBUSTAGG_UNROLL4
  for (int64_t k = 0; k < K; ++k) {
    const T* row = u + k * d + j0;
    const double wk = w ? w[k] : 1.0;
    ROBUSTAGG_UNROLL
    for (int i = 0; i < N; ++i) {
      if (kFull || i < valid) {
        const V x = load(row + i * step);
        acc[i] += w ? wk * static_cast<double>(x) : static_cast<double>(x);
        votes[i] += sgn(x);
      }
    }
  }
}

template <int N, typename T>
ROBUSTAGG_HD inline void robust_lr_mean_lanes(const T* u, int64_t K, int64_t d, int64_t j0, int64_t step,
                                              int valid, const double* w, double wsum, double threshold,
                                              typename Traits<T>::val_t (&out)[N], int (&flipped)[N]) {
  using V = typename Traits<T>::val_t;
  double acc[N];
  int32_t votes[N];
  if (valid >= N) robust_lr_mean_rows<N, true>(u, K, d, j0, step, valid, w, acc, votes);
  else robust_lr_mean_rows<N, false>(u, K, d, j0, step, valid, w, acc, votes);
  ROBUSTAGG_UNROLL
  for (int i = 0; i < N; ++i) {
    const double lr = rlr_learning_rate(votes[i], threshold);
    flipped[i] = i < valid && lr < 0.0;
    out[i] = static_cast<V>((acc[i] / wsum) * lr);
  }
}

// One coordinate of robust_lr_mean (N = 1); `flipped`, when not null, is set.
template <typename T>
ROBUSTAGG_HD inline typename Traits<T>::val_t robust_lr_mean_column(const T* u, int64_t K, int64_t d,
                                                                    const double* w, double wsum,
                                                                    double threshold, int* flipped = nullptr) {
  typename Traits<T>::val_t out[1];
  int flip[1];
  robust_lr_mean_lanes<1>(u, K, d, 0, 0, 1, w, wsum, threshold, out, flip);
  if (flipped) *flipped = flip[0];
  return out[0];
}

}  // namespace math
}  // namespace robustagg
