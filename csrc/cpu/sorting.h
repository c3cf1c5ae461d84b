// Sorting networks over tiles of coordinates, shared by the order-statistic
// kernels. A tile holds T coordinates of all K clients as K rows of T lanes;
// one compare-exchange of rows p < q is a branch-free min/max over T lanes,
// which the compiler vectorises. Networks are Batcher's odd-even merge sort
// on the next power of two, with comparators that touch padding dropped
// (padding would hold +inf and never move).
//
// min/max order NaN arbitrarily, so lanes holding NaN are redone by the
// scalar path (`sort_column`, NaN last as torch.sort does).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "robustagg/common.h"

namespace robustagg {
namespace cpu {

using Network = std::vector<std::pair<int32_t, int32_t>>;

// Above this K the selection path (nth_element per coordinate) beats a full network.
constexpr int64_t kMaxNetworkK = 512;

inline Network batcher_network(int64_t n) {
  Network net;
  int64_t N = 1;
  while (N < n) N <<= 1;
  for (int64_t p = 1; p < N; p <<= 1)
    for (int64_t k = p; k >= 1; k >>= 1)
      for (int64_t j = k % p; j + k < N; j += 2 * k)
        for (int64_t i = 0; i < std::min(k, N - j - k); ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < n)
            net.emplace_back(static_cast<int32_t>(i + j), static_cast<int32_t>(i + j + k));
  return net;
}

// Keeps only the comparators that can influence the outputs in [lo, hi].
inline Network prune_network(const Network& net, int64_t n, int64_t lo, int64_t hi) {
  std::vector<char> needed(n, 0);
  for (int64_t i = lo; i <= hi; ++i) needed[i] = 1;
  Network kept;
  for (auto it = net.rbegin(); it != net.rend(); ++it) {
    if (needed[it->first] || needed[it->second]) {
      needed[it->first] = needed[it->second] = 1;
      kept.push_back(*it);
    }
  }
  std::reverse(kept.begin(), kept.end());
  return kept;
}

// The median positions of n sorted values: (n-1)/2 and n/2.
inline Network median_network(int64_t n) {
  return prune_network(batcher_network(n), n, (n - 1) / 2, n / 2);
}

template <typename V, int T>
inline void apply_network(V* __restrict__ tile, const Network& net) {  // tile: [rows, T]
  for (const auto& c : net) {
    V* __restrict__ a = tile + static_cast<int64_t>(c.first) * T;
    V* __restrict__ b = tile + static_cast<int64_t>(c.second) * T;
    for (int t = 0; t < T; ++t) {
      const V x = a[t], y = b[t];
      a[t] = std::min(x, y);
      b[t] = std::max(x, y);
    }
  }
}

// Strict weak order with NaN above everything (torch.sort's order).
template <typename V> inline bool nan_last_less(V a, V b) {
  return a < b || (std::isnan(b) && !std::isnan(a));
}

template <typename V> inline void sort_column(V* first, V* last) {
  std::sort(first, last, nan_last_less<V>);
}

// Loads a tile of n <= T coordinates starting at column j0 into tile[K, T];
// lanes past n are zero. Returns a bit set of lanes holding NaN in `nan_lanes`.
template <typename T_in, typename V, int T>
inline bool load_tile(const T_in* __restrict__ u, int64_t K, int64_t d, int64_t j0, int64_t n,
                      V* __restrict__ tile, bool* __restrict__ nan_lanes) {
  bool any_nan = false;
  for (int t = 0; t < T; ++t) nan_lanes[t] = false;
  for (int64_t k = 0; k < K; ++k) {
    const T_in* row = u + k * d + j0;
    V* dst = tile + k * T;
    int64_t t = 0;
    for (; t < n; ++t) dst[t] = load(row + t);
    for (; t < T; ++t) dst[t] = V(0);
  }
  for (int64_t k = 0; k < K; ++k)
    for (int t = 0; t < T; ++t) nan_lanes[t] |= (tile[k * T + t] != tile[k * T + t]);
  for (int t = 0; t < T; ++t) any_nan |= nan_lanes[t];
  return any_nan;
}

// Copies column j of `updates` into col[K].
template <typename T_in, typename V>
inline void gather_column(const T_in* __restrict__ u, int64_t K, int64_t d, int64_t j, V* col) {
  for (int64_t k = 0; k < K; ++k) col[k] = load(u + k * d + j);
}

}  // namespace cpu
}  // namespace robustagg
