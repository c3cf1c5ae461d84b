#include "robustagg/sign_vote.h"

#include "robustagg/math/sign.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace robustagg {
namespace cpu {
namespace {

// Coordinates per task: each task streams 32 KB of each float32 row (long
// enough runs for the prefetchers); its accumulators (64 KB) stay in L2.
constexpr int64_t kChunk = 8192;

using math::sgn;  // NaN, +-0 -> 0

// Rows [k, k + G) from column j0, with their weights (1 unweighted).
template <typename T, int G, bool kWeighted>
struct RowGroup {
  const T* r[G];
  double w[G];
  RowGroup(const T* u, int64_t k, int64_t d, int64_t j0, const double* weights) {
    for (int g = 0; g < G; ++g) {
      r[g] = u + (k + g) * d + j0;
      w[g] = kWeighted ? weights[k + g] : 1.0;
    }
  }
};

// One sweep of sign_vote over rows [k, k + G) of a task's n coordinates, into
// acc (double: weighted) or out (int32 counts: unweighted); the first sweep
// starts at 0 without reading, the last writes the weighted output. Weighted
// sums keep the order of math::weighted_sign_vote_column (0, then clients in order).
template <int G, bool kFirst, bool kLast, typename T, bool kWeighted>
inline void sign_sweep(const T* __restrict__ u, int64_t k, int64_t d, int64_t j0, int64_t n,
                       const double* __restrict__ w, double* __restrict__ acc, void* out_ptr) {
  using V = typename Traits<T>::val_t;
  const RowGroup<T, G, kWeighted> rg(u, k, d, j0, w);
  const auto& r = rg.r;
  const auto& wk = rg.w;
  if (kWeighted) {
    V* __restrict__ out = static_cast<V*>(out_ptr) + j0;
    for (int64_t j = 0; j < n; ++j) {
      double a = kFirst ? 0.0 : acc[j];
      for (int g = 0; g < G; ++g) a += wk[g] * sgn(load(r[g] + j));
      if (kLast) out[j] = static_cast<V>(a);
      else acc[j] = a;
    }
  } else {
    int32_t* __restrict__ out = static_cast<int32_t*>(out_ptr) + j0;
    for (int64_t j = 0; j < n; ++j) {
      int32_t c = 0;
      for (int g = 0; g < G; ++g) c += sgn(load(r[g] + j));
      out[j] = kFirst ? c : out[j] + c;
    }
  }
}

// Calls sweep<G, first, last>(k) over rows [0, K) in groups of four, the last
// group of 1-4 rows: the accumulators go through L1 once per group.
template <typename Sweep>
inline void for_each_row_group(int64_t K, Sweep&& sweep) {
  const int64_t head = K <= 4 ? 0 : ((K - 1) / 4) * 4;  // rows before the last group
  auto last = [&](auto first) {
    constexpr bool F = decltype(first)::value;
    switch (K - head) {
      case 1: sweep(std::integral_constant<int, 1>{}, first, std::true_type{}, head); break;
      case 2: sweep(std::integral_constant<int, 2>{}, first, std::true_type{}, head); break;
      case 3: sweep(std::integral_constant<int, 3>{}, first, std::true_type{}, head); break;
      default: sweep(std::integral_constant<int, 4>{}, std::integral_constant<bool, F>{}, std::true_type{}, head);
    }
  };
  if (head == 0) {
    last(std::true_type{});
    return;
  }
  sweep(std::integral_constant<int, 4>{}, std::true_type{}, std::false_type{}, int64_t{0});
  for (int64_t k = 4; k < head; k += 4) sweep(std::integral_constant<int, 4>{}, std::false_type{}, std::false_type{}, k);
  last(std::false_type{});
}

template <typename T, bool kWeighted>
void sign_vote_impl(const T* __restrict__ u,        // [K, d]
                    int64_t K, int64_t d,
                    const double* __restrict__ w,   // [K] or nullptr
                    void* out_ptr,                  // [d] int32 or val_t
                    int num_threads) {
  const int64_t tasks = ceil_div(d, kChunk);
  parallel_for(tasks, threads_for(K * d, num_threads), [&](int64_t task) {
    const int64_t j0 = task * kChunk, n = std::min(kChunk, d - j0);
    double acc[kWeighted ? kChunk : 1];
    for_each_row_group(K, [&](auto G, auto first, auto last, int64_t k) {
      sign_sweep<decltype(G)::value, decltype(first)::value, decltype(last)::value, T, kWeighted>(u, k, d, j0, n, w,
                                                                                                    acc, out_ptr);
    });
  });
}

// One sweep of robust_lr_mean over rows [k, k + G) of a task's n coordinates:
// the first sweep starts the accumulators at 0 (no read), the last one writes
// the output instead of the accumulators (eq. 5-6), so that the accumulators
// go through L1 once per group of up to four rows. The sum's order (0, then the
// clients in order) is that of math::robust_lr_mean_column, whatever the grouping.
template <int G, bool kFirst, bool kLast, typename T, bool kWeighted, bool kVotes>
inline void rlr_sweep(const T* __restrict__ u, int64_t k, int64_t d, int64_t j0, int64_t n,
                      const double* __restrict__ w, double* __restrict__ acc, int32_t* __restrict__ votes,
                      double wsum, double threshold, typename Traits<T>::val_t* __restrict__ o, int64_t& count) {
  using V = typename Traits<T>::val_t;
  const RowGroup<T, G, kWeighted> rg(u, k, d, j0, w);
  const auto& r = rg.r;
  const auto& wk = rg.w;
  int64_t flips = 0;
  for (int64_t j = 0; j < n; ++j) {
    double a = kFirst ? 0.0 : acc[j];
    int32_t v = kFirst ? 0 : votes[j];
    int32_t s = 0;
    for (int g = 0; g < G; ++g) {
      const V x = load(r[g] + j);
      a += kWeighted ? wk[g] * static_cast<double>(x) : static_cast<double>(x);
      if (kVotes) s += sgn(x);
    }
    if (kVotes) v += s;
    if (kLast) {
      const double lr = kVotes ? math::rlr_learning_rate(v, threshold) : 1.0;
      flips += lr < 0.0;
      o[j] = static_cast<V>((a / wsum) * lr);
    } else {
      acc[j] = a;
      if (kVotes) votes[j] = v;
    }
  }
  count += flips;
}

// kVotes = false when threshold <= 0: every |vote| passes, the learning rate
// is +1 everywhere (the plain weighted mean), and the counts are skipped.
template <typename T, bool kWeighted, bool kVotes>
void robust_lr_mean_impl(const T* __restrict__ u,        // [K, d]
                         int64_t K, int64_t d, double threshold,
                         const double* __restrict__ w,   // [K] or nullptr
                         typename Traits<T>::val_t* __restrict__ out,  // [d]
                         int64_t* flipped, int num_threads) {
  const double wsum = math::weight_sum(kWeighted ? w : nullptr, K);
  const int64_t tasks = ceil_div(d, kChunk);
  std::vector<int64_t> flips(kVotes && flipped ? tasks : 0, 0);  // per task: integer, order-free
  parallel_for(tasks, threads_for(K * d, num_threads), [&](int64_t task) {
    const int64_t j0 = task * kChunk, n = std::min(kChunk, d - j0);
    // One pass over the updates: the mean summed in double, clients in order,
    // the vote in int32; rows in groups of four, the last group of 1-4.
    double acc[kChunk];
    int32_t votes[kChunk];
    auto* o = out + j0;
    int64_t count = 0;
    for_each_row_group(K, [&](auto G, auto first, auto last, int64_t k) {
      rlr_sweep<decltype(G)::value, decltype(first)::value, decltype(last)::value, T, kWeighted, kVotes>(
          u, k, d, j0, n, w, acc, votes, wsum, threshold, o, count);
    });
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
