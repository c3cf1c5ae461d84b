#include "robustagg/sign_vote.h"

#include "robustagg/math/sign.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace robustagg {
namespace cpu {
namespace {

// Coordinates per task: each task streams 32 KB of each float32 row (long
// enough runs for the prefetchers); its accumulators (64 KB) stay in L2.
constexpr int64_t kChunk = 8192;

using math::sgn;  // NaN, +-0 -> 0

template <typename T, bool kWeighted>
void sign_vote_impl(const T* __restrict__ u,        // [K, d]
                    int64_t K, int64_t d,
                    const double* __restrict__ w,   // [K] or nullptr
                    void* out_ptr,                  // [d] int32 or val_t
                    int num_threads) {
  using V = typename Traits<T>::val_t;
  const int64_t tasks = ceil_div(d, kChunk);
  parallel_for(tasks, threads_for(K * d, num_threads), [&](int64_t task) {
    const int64_t j0 = task * kChunk, n = std::min(kChunk, d - j0);
    if (kWeighted) {
      double acc[kChunk];
      std::fill(acc, acc + n, 0.0);
      for (int64_t k = 0; k < K; ++k) {
        const T* row = u + k * d + j0;
        const double wk = w[k];
        for (int64_t j = 0; j < n; ++j) acc[j] += wk * sgn(load(row + j));
      }
      V* out = static_cast<V*>(out_ptr) + j0;
      for (int64_t j = 0; j < n; ++j) out[j] = static_cast<V>(acc[j]);
    } else {
      // Four rows per sweep: the counts go through L1 a quarter as often
      // (integer sums: the order cannot change the result).
      int32_t* out = static_cast<int32_t*>(out_ptr) + j0;
      std::fill(out, out + n, 0);
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        const T* __restrict__ r0 = u + k * d + j0;
        const T* __restrict__ r1 = r0 + d;
        const T* __restrict__ r2 = r1 + d;
        const T* __restrict__ r3 = r2 + d;
        for (int64_t j = 0; j < n; ++j)
          out[j] += (sgn(load(r0 + j)) + sgn(load(r1 + j))) + (sgn(load(r2 + j)) + sgn(load(r3 + j)));
      }
      for (; k < K; ++k) {
        const T* row = u + k * d + j0;
        for (int64_t j = 0; j < n; ++j) out[j] += sgn(load(row + j));
      }
    }
  });
}

// kVotes = false when threshold <= 0: every |vote| passes, the learning rate
// is +1 everywhere (the plain weighted mean), and the counts are skipped.
template <typename T, bool kWeighted, bool kVotes>
void robust_lr_mean_impl(const T* __restrict__ u,        // [K, d]
                         int64_t K, int64_t d, double threshold,
                         const double* __restrict__ w,   // [K] or nullptr
                         typename Traits<T>::val_t* __restrict__ out,  // [d]
                         int64_t* flipped, int num_threads) {
  using V = typename Traits<T>::val_t;
  const double wsum = math::weight_sum(kWeighted ? w : nullptr, K);
  const int64_t tasks = ceil_div(d, kChunk);
  std::vector<int64_t> flips(kVotes && flipped ? tasks : 0, 0);  // per task: integer, order-free
  parallel_for(tasks, threads_for(K * d, num_threads), [&](int64_t task) {
    const int64_t j0 = task * kChunk, n = std::min(kChunk, d - j0);
    // One pass. The mean is summed in double, clients in order; the vote in
    // int32 lanes. Four rows are taken per sweep so that the accumulators go
    // through L1 a quarter as often (the sum's order is unchanged).
    double acc[kChunk];
    int32_t votes[kChunk];
    std::fill(acc, acc + n, 0.0);
    std::fill(votes, votes + n, 0);
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const T* __restrict__ r0 = u + k * d + j0;
      const T* __restrict__ r1 = r0 + d;
      const T* __restrict__ r2 = r1 + d;
      const T* __restrict__ r3 = r2 + d;
      const double w0 = kWeighted ? w[k] : 1.0, w1 = kWeighted ? w[k + 1] : 1.0;
      const double w2 = kWeighted ? w[k + 2] : 1.0, w3 = kWeighted ? w[k + 3] : 1.0;
      for (int64_t j = 0; j < n; ++j) {
        const V x0 = load(r0 + j), x1 = load(r1 + j), x2 = load(r2 + j), x3 = load(r3 + j);
        double a = acc[j];
        a += kWeighted ? w0 * static_cast<double>(x0) : static_cast<double>(x0);
        a += kWeighted ? w1 * static_cast<double>(x1) : static_cast<double>(x1);
        a += kWeighted ? w2 * static_cast<double>(x2) : static_cast<double>(x2);
        a += kWeighted ? w3 * static_cast<double>(x3) : static_cast<double>(x3);
        acc[j] = a;
        if (kVotes) votes[j] += (sgn(x0) + sgn(x1)) + (sgn(x2) + sgn(x3));
      }
    }
    for (; k < K; ++k) {
      const T* __restrict__ row = u + k * d + j0;
      const double wk = kWeighted ? w[k] : 1.0;
      for (int64_t j = 0; j < n; ++j) {
        const V x = load(row + j);
        acc[j] += kWeighted ? wk * static_cast<double>(x) : static_cast<double>(x);
        if (kVotes) votes[j] += sgn(x);
      }
    }
    // eq. (5)-(6): server learning rate +1 where the vote is strong enough, -1 elsewhere.
    V* __restrict__ o = out + j0;
    int64_t count = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double mean = acc[j] / wsum;
      const double lr = kVotes ? math::rlr_learning_rate(votes[j], threshold) : 1.0;
      count += lr < 0.0;
      o[j] = static_cast<V>(mean * lr);
    }
    if (!flips.empty()) flips[task] = count;
  });
  if (flipped) {
    int64_t total = 0;
    for (const int64_t c : flips) total += c;
    *flipped = total;
  }
}

}  // namespace

void sign_vote(const void* updates, DType dtype, int64_t K, int64_t d,
               const double* weights, void* out, int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    const T* u = static_cast<const T*>(updates);
    if (weights) sign_vote_impl<T, true>(u, K, d, weights, out, num_threads);
    else sign_vote_impl<T, false>(u, K, d, nullptr, out, num_threads);
  });
}

void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d,
                    double threshold, const double* weights, void* out, int64_t* flipped,
                    int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    auto* o = static_cast<typename Traits<T>::val_t*>(out);
    const T* u = static_cast<const T*>(updates);
    const bool votes = threshold > 0.0;
    if (weights && votes) robust_lr_mean_impl<T, true, true>(u, K, d, threshold, weights, o, flipped, num_threads);
    else if (weights) robust_lr_mean_impl<T, true, false>(u, K, d, threshold, weights, o, flipped, num_threads);
    else if (votes) robust_lr_mean_impl<T, false, true>(u, K, d, threshold, nullptr, o, flipped, num_threads);
    else robust_lr_mean_impl<T, false, false>(u, K, d, threshold, nullptr, o, flipped, num_threads);
  });
}

}  // namespace cpu
}  // namespace robustagg
