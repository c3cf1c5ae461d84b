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
#include <array>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <utility>
#include <type_traits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "robustagg/common.h"
#include "robustagg/math/order.h"

namespace robustagg {
namespace cpu {

using Network = std::vector<std::pair<int32_t, int32_t>>;

// Above this K the selection path (nth_element per coordinate) beats a full network.
constexpr int64_t kMaxNetworkK = 512;

using math::for_each_batcher;
using math::kRegRows;

inline Network batcher_network(int64_t n, int64_t first_stage = 1) {
  Network net;
  for_each_batcher(n, first_stage, [&](int64_t a, int64_t b) {
    net.emplace_back(static_cast<int32_t>(a), static_cast<int32_t>(b));
  });
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

// ---------------------------------------------------------------------------
// Register-resident networks. Comparators that go through memory cost two
// loads and two stores each, and consecutive layers stall on store-to-load
// forwarding; for up to kRegRows rows the whole network runs on vector
// registers instead (one register per row, the network unrolled at compile
// time). Larger K sorts aligned blocks of kRegRows rows this way first (the
// first stages of Batcher's network only sort those blocks) and runs only the
// merging stages through memory.
#if defined(__GNUC__)
#define ROBUSTAGG_REGISTER_NETWORKS 1
// One row's vector is one machine register of the instruction set this file is
// compiled for (csrc/cpu is compiled once per instruction set, setup.py): a
// wider generic vector would be split by the compiler into several, at a
// great cost in compile time and code size.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
template <typename V> struct VecOf;
template <> struct VecOf<float>  { typedef float  type __attribute__((vector_size(kVecBytes))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(kVecBytes))); };

}  // namespace cpu
// GCC does not turn a vector `x < y ? x : y` into min/max instructions (it
// emits a compare and two blends), so AVX-512 builds say it directly. (The
// masked forms with a full mask avoid GCC 12's false -Wuninitialized on the
// unmasked intrinsics.) The generic math::lane_min / lane_max serve the other
// vector widths.
#if defined(__AVX512F__)
namespace math {
template <> inline cpu::VecOf<float>::type lane_min(cpu::VecOf<float>::type x, cpu::VecOf<float>::type y) {
  return _mm512_mask_min_ps(x, 0xFFFF, x, y);
}
template <> inline cpu::VecOf<float>::type lane_max(cpu::VecOf<float>::type x, cpu::VecOf<float>::type y) {
  return _mm512_mask_max_ps(x, 0xFFFF, x, y);
}
template <> inline cpu::VecOf<double>::type lane_min(cpu::VecOf<double>::type x, cpu::VecOf<double>::type y) {
  return _mm512_mask_min_pd(x, 0xFF, x, y);
}
template <> inline cpu::VecOf<double>::type lane_max(cpu::VecOf<double>::type x, cpu::VecOf<double>::type y) {
  return _mm512_mask_max_pd(x, 0xFF, x, y);
}
}  // namespace math
#endif
namespace cpu {

// Sorts (or, with kMedian, places the median positions of) rows [0, N) of
// tile[., T] in every lane, one vector of lanes at a time.
template <typename V, int T, int N, bool kMedian>
void sort_rows_fixed(V* __restrict__ tile) {
  using Vec = typename VecOf<V>::type;
  constexpr int L = static_cast<int>(sizeof(Vec) / sizeof(V));
  static_assert(T % L == 0, "tile width must be a multiple of the vector width");
  for (int g = 0; g < T; g += L) {
    Vec r[N > 0 ? N : 1];
    for (int k = 0; k < N; ++k) std::memcpy(&r[k], tile + k * T + g, sizeof(Vec));
    math::sort_fixed<Vec, N, kMedian>(r);
    for (int k = 0; k < N; ++k) std::memcpy(tile + k * T + g, &r[k], sizeof(Vec));
  }
}

// The median (midpoint of the two middle values for even N) of rows [0, N)
// of tile[., T] into out[T], on registers; the tile is left as it was.
template <typename V, int T, int N>
void median_rows_fixed(const V* __restrict__ tile, V* __restrict__ out) {
  if constexpr (N == 0) return;
  using Vec = typename VecOf<V>::type;
  constexpr int L = static_cast<int>(sizeof(Vec) / sizeof(V));
  for (int g = 0; g < T; g += L) {
    Vec r[N > 0 ? N : 1];
    for (int k = 0; k < N; ++k) std::memcpy(&r[k], tile + k * T + g, sizeof(Vec));
    math::sort_fixed<Vec, N, true>(r);
    Vec m = r[N / 2];
    if (N % 2 == 0) m = V(0.5) * r[(N - 1) / 2] + V(0.5) * r[N / 2];
    std::memcpy(out + g, &m, sizeof(Vec));
  }
}

template <typename V, int T, size_t... N>
constexpr auto fixed_medians(std::index_sequence<N...>) {
  using Fn = void (*)(const V*, V*);
  return std::array<Fn, sizeof...(N)>{&median_rows_fixed<V, T, static_cast<int>(N)>...};
}

template <typename V, int T, bool kMedian, size_t... N>
constexpr auto fixed_sorters(std::index_sequence<N...>) {
  using Fn = void (*)(V*);
  return std::array<Fn, sizeof...(N)>{&sort_rows_fixed<V, T, static_cast<int>(N), kMedian>...};
}
#endif

// A network through memory over tile[rows, T]. Where lanes fill whole vector
// registers, each comparator is a vector min/max (the compiler makes a scalar
// loop's `x < y ? x : y` a compare and two blends).
template <typename V, int T>
inline void apply_network(V* __restrict__ tile, const Network& net) {
#if ROBUSTAGG_REGISTER_NETWORKS
  using Vec = typename VecOf<V>::type;
  constexpr int L = static_cast<int>(sizeof(Vec) / sizeof(V));
  if constexpr (T % L == 0) {
    for (const auto& c : net) {
      V* __restrict__ a = tile + static_cast<int64_t>(c.first) * T;
      V* __restrict__ b = tile + static_cast<int64_t>(c.second) * T;
      for (int g = 0; g < T; g += L) {
        Vec x, y;
        std::memcpy(&x, a + g, sizeof(Vec));
        std::memcpy(&y, b + g, sizeof(Vec));
        math::compare_exchange(x, y);
        std::memcpy(a + g, &x, sizeof(Vec));
        std::memcpy(b + g, &y, sizeof(Vec));
      }
    }
    return;
  }
#endif
  for (const auto& c : net) {
    V* __restrict__ a = tile + static_cast<int64_t>(c.first) * T;
    V* __restrict__ b = tile + static_cast<int64_t>(c.second) * T;
    for (int t = 0; t < T; ++t) math::compare_exchange(a[t], b[t]);
  }
}

// Orders the K rows of a tile[K, T] in every lane: fully (sort) or only as far
// as the two median positions (median_only).
template <typename V, int T>
class TileSorter {
 public:
  TileSorter(int64_t K, bool median_only) : K_(K), median_only_(median_only) {
#if ROBUSTAGG_REGISTER_NETWORKS
    // The register phase sorts each aligned block of kRegRows rows (Batcher's
    // stages p < kRegRows act only inside those blocks); memory keeps the rest.
    Network net = batcher_network(K, kRegRows);
#else
    Network net = batcher_network(K);
#endif
    mem_ = median_only ? prune_network(net, K, (K - 1) / 2, K / 2) : net;
  }

  void apply(V* tile) const {
#if ROBUSTAGG_REGISTER_NETWORKS
    static constexpr auto full = fixed_sorters<V, T, false>(std::make_index_sequence<kRegRows + 1>{});
    static constexpr auto med = fixed_sorters<V, T, true>(std::make_index_sequence<kRegRows + 1>{});
    if (K_ <= kRegRows) {
      (median_only_ ? med : full)[K_](tile);
      return;
    }
    for (int64_t b = 0; b < K_; b += kRegRows)
      full[std::min<int64_t>(kRegRows, K_ - b)](tile + b * T);
#endif
    apply_network<V, T>(tile, mem_);
  }

 private:
  int64_t K_;
  bool median_only_;
  Network mem_;
};

// Strict weak order with NaN above everything (torch.sort's order).
template <typename V> inline bool nan_last_less(V a, V b) {
  return a < b || (b != b && a == a);
}

template <typename V> inline void sort_column(V* first, V* last) {
  std::sort(first, last, nan_last_less<V>);
}

// Loads a tile of n <= T coordinates starting at column j0 into tile[K, T];
// lanes past n are zero. Marks in `nan_lanes` the lanes whose K values sum to
// NaN: every lane holding a NaN, plus (rarely) lanes where +inf meets -inf.
// Those lanes are redone by the exact scalar path, so a false alarm costs time,
// never correctness. Returns whether any lane is marked.
template <typename T_in, typename V, int T>
inline bool load_tile(const T_in* __restrict__ u, int64_t K, int64_t d, int64_t j0, int64_t n,
                      V* __restrict__ tile, bool* __restrict__ nan_lanes) {
  V sum[T];
  for (int t = 0; t < T; ++t) sum[t] = V(0);
  if (n == T) {
    for (int64_t k = 0; k < K; ++k) {
      const T_in* __restrict__ row = u + k * d + j0;
      V* __restrict__ dst = tile + k * T;
      for (int t = 0; t < T; ++t) {
        const V x = load(row + t);
        dst[t] = x;
        sum[t] += x;
      }
    }
  } else {
    for (int64_t k = 0; k < K; ++k) {
      const T_in* row = u + k * d + j0;
      V* dst = tile + k * T;
      for (int t = 0; t < T; ++t) {
        const V x = t < n ? load(row + t) : V(0);
        dst[t] = x;
        sum[t] += x;
      }
    }
  }
  int any = 0;
  for (int t = 0; t < T; ++t) {
    const bool bad = sum[t] != sum[t];
    nan_lanes[t] = bad;
    any |= bad;
  }
  return any != 0;
}

// Copies column j of `updates` into col[K].
template <typename T_in, typename V>
inline void gather_column(const T_in* __restrict__ u, int64_t K, int64_t d, int64_t j, V* col) {
  for (int64_t k = 0; k < K; ++k) col[k] = load(u + k * d + j);
}

}  // namespace cpu
}  // namespace robustagg
