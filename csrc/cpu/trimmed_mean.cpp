#include "robustagg/trimmed_mean.h"

#include "robustagg/math/order.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "sorting.h"

namespace robustagg {
namespace cpu {
namespace {

enum class Stat { Trimmed, Median, Masked, Closest };

constexpr int64_t kTilesPerTask = 8;

using math::sgn;

// Median (midpoint for even K) of col[0, K) under the NaN-last order; reorders col.
template <typename V> double select_median(V* col, int64_t K) {
  const int64_t hi = K / 2;
  std::nth_element(col, col + hi, col + K, nan_last_less<V>);
  const double b = static_cast<double>(col[hi]);
  if (K % 2 == 1) return b;
  const double a = static_cast<double>(*std::max_element(col, col + hi, nan_last_less<V>));
  return math::midpoint(a, b);
}

// Mean of col after dropping `trim` values per tail; sorts col.
template <typename V> double select_trimmed_mean(V* col, int64_t K, int64_t trim) {
  // Sorted, so that the sum's order (and so its last bit) does not depend on
  // the order of the clients.
  std::sort(col, col + K, nan_last_less<V>);
  double acc = 0.0;
  for (int64_t k = trim; k < K - trim; ++k) acc += static_cast<double>(col[k]);
  return acc / static_cast<double>(K - 2 * trim);
}

// Bulyan's step on one column: sorted NaN-last, then math::order_finish (the
// definition every backend shares) with the NaNs counted.
template <typename V> double select_closest_mean(V* col, int64_t K, int64_t trim) {
  std::sort(col, col + K, nan_last_less<V>);
  int64_t nans = 0;
  for (int64_t k = 0; k < K; ++k) nans += col[k] != col[k];
  return static_cast<double>(math::order_finish<0, V>(col, K, nans, math::OrderStat::Closest, trim, 0.0, 0));
}

template <typename V> double column_stat(Stat stat, V* col, int64_t K, int64_t trim, double tau) {
  if (stat == Stat::Median) return select_median(col, K);
  if (stat == Stat::Closest) return select_closest_mean(col, K, trim);
  if (stat == Stat::Masked) {
    int64_t votes = 0;
    for (int64_t k = 0; k < K; ++k) votes += sgn(col[k]);
    if (!math::sign_mask_passes(votes, K, tau)) return 0.0;
  }
  return select_trimmed_mean(col, K, trim);
}

template <typename T, int TL>
void network_path(Stat stat, const T* __restrict__ u, int64_t K, int64_t d, int64_t trim,
                  double tau, typename Traits<T>::val_t* __restrict__ out, int num_threads) {
  using V = typename Traits<T>::val_t;
  // Trimmed means are summed in sorted order even for trim = 0, so that the
  // result is bitwise invariant to the order of the clients.
  const TileSorter<V, TL> sorter(K, stat == Stat::Median);
  const int64_t tiles = ceil_div(d, TL);
  const int64_t tasks = ceil_div(tiles, kTilesPerTask);
  const int64_t work = K * d * 4;  // a few operations per value: only decides whether to use threads
  parallel_for(tasks, threads_for(work, num_threads), [&](int64_t task) {
    std::vector<V> tile(K * TL), col(K);
    bool nan_lanes[TL];
    int32_t votes[TL];
    double acc[TL];
    const int64_t tile_end = std::min(tiles, (task + 1) * kTilesPerTask);
    for (int64_t ti = task * kTilesPerTask; ti < tile_end; ++ti) {
      const int64_t j0 = ti * TL, n = std::min<int64_t>(TL, d - j0);
      const bool any_nan = load_tile<T, V, TL>(u, K, d, j0, n, tile.data(), nan_lanes);
      if (stat == Stat::Masked) {
        std::fill(votes, votes + TL, 0);
        for (int64_t k = 0; k < K; ++k)
          for (int t = 0; t < TL; ++t) votes[t] += sgn(tile[k * TL + t]);
      }
      sorter.apply(tile.data());
      if (stat == Stat::Closest) {  // the window moves per lane: each lane through the shared finish
        for (int64_t t = 0; t < n; ++t) {
          const math::Strided<const V> col{tile.data() + t, TL};
          out[j0 + t] = math::order_finish<0, V>(col, K, 0, math::OrderStat::Closest, trim, 0.0, 0);
        }
      } else if (stat == Stat::Median) {
        const V* a = tile.data() + ((K - 1) / 2) * TL;
        const V* b = tile.data() + (K / 2) * TL;
        for (int64_t t = 0; t < n; ++t)
          out[j0 + t] = (K % 2 == 1) ? b[t]
              : static_cast<V>(math::midpoint(static_cast<double>(a[t]), static_cast<double>(b[t])));
      } else {
        std::fill(acc, acc + TL, 0.0);
        for (int64_t k = trim; k < K - trim; ++k) {
          const V* row = tile.data() + k * TL;
          for (int t = 0; t < TL; ++t) acc[t] += static_cast<double>(row[t]);
        }
        const double kept = static_cast<double>(K - 2 * trim);
        for (int64_t t = 0; t < n; ++t) {
          const bool pass = stat != Stat::Masked || math::sign_mask_passes(votes[t], K, tau);
          out[j0 + t] = pass ? static_cast<V>(acc[t] / kept) : V(0);
        }
      }
      if (any_nan) {  // min/max scramble NaN: redo those coordinates in NaN-last order
        for (int64_t t = 0; t < n; ++t) {
          if (!nan_lanes[t]) continue;
          gather_column(u, K, d, j0 + t, col.data());
          out[j0 + t] = static_cast<V>(column_stat(stat, col.data(), K, trim, tau));
        }
      }
    }
  });
}

template <typename T>
void selection_path(Stat stat, const T* __restrict__ u, int64_t K, int64_t d, int64_t trim,
                    double tau, typename Traits<T>::val_t* __restrict__ out, int num_threads) {
  using V = typename Traits<T>::val_t;
  constexpr int64_t kCols = 16;  // columns gathered together: 16 loads per cache line walk
  const int64_t tasks = ceil_div(d, kCols);
  parallel_for(tasks, num_threads, [&](int64_t task) {
    const int64_t j0 = task * kCols, n = std::min(kCols, d - j0);
    std::vector<V> cols(kCols * K);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t t = 0; t < n; ++t) cols[t * K + k] = load(u + k * d + j0 + t);
    for (int64_t t = 0; t < n; ++t)
      out[j0 + t] = static_cast<V>(column_stat(stat, cols.data() + t * K, K, trim, tau));
  });
}

void run(Stat stat, const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim,
         double tau, void* out, int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    constexpr int TL = sizeof(V) == 4 ? 64 : 32;
    const T* u = static_cast<const T*>(updates);
    V* o = static_cast<V*>(out);
    if (K <= kMaxNetworkK) network_path<T, TL>(stat, u, K, d, trim, tau, o, num_threads);
    else selection_path<T>(stat, u, K, d, trim, tau, o, num_threads);
  });
}

}  // namespace

void trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim,
                  void* out, int num_threads) {
  run(Stat::Trimmed, updates, dtype, K, d, trim, 0.0, out, num_threads);
}

void median(const void* updates, DType dtype, int64_t K, int64_t d, void* out, int num_threads) {
  run(Stat::Median, updates, dtype, K, d, 0, 0.0, out, num_threads);
}

void masked_trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, double tau,
                         int64_t trim, void* out, int num_threads) {
  run(Stat::Masked, updates, dtype, K, d, trim, tau, out, num_threads);
}

void closest_to_median_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim,
                            void* out, int num_threads) {
  run(Stat::Closest, updates, dtype, K, d, trim, 0.0, out, num_threads);
}

}  // namespace cpu
}  // namespace robustagg
