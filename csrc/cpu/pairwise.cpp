#include "robustagg/pairwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace robustagg {
namespace cpu {
namespace {

constexpr int kLanes = 8;                  // independent double accumulators per pair
constexpr int64_t kMaxSegments = 32;       // d is cut into at most this many segments...
constexpr int64_t kMinSegment = 4096;      // ...of at least this many coordinates...
constexpr int64_t kPartialBudget = 1 << 22;  // ...while segments * K * K stays below this
constexpr int64_t kRowBlock = 16;          // rows i per task

// Sums over the pairs of one block of columns, converted to double in tile[K, B].
template <bool kDist, bool kGram>
void accumulate_block(const double* __restrict__ tile, int64_t K, int64_t B, int64_t i0,
                      int64_t i1, double* __restrict__ dist, double* __restrict__ gram) {
  for (int64_t i = i0; i < i1; ++i) {
    const double* __restrict__ a = tile + i * B;
    for (int64_t j = i; j < K; ++j) {
      const double* __restrict__ b = tile + j * B;
      double acc_d[kLanes] = {0}, acc_g[kLanes] = {0};
      for (int64_t t = 0; t < B; t += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          if (kDist) { const double diff = a[t + l] - b[t + l]; acc_d[l] += diff * diff; }
          if (kGram) acc_g[l] += a[t + l] * b[t + l];
        }
      }
      double sd = 0.0, sg = 0.0;
      for (int l = 0; l < kLanes; ++l) { sd += acc_d[l]; sg += acc_g[l]; }
      if (kDist) dist[i * K + j] += sd;
      if (kGram) gram[i * K + j] += sg;
    }
  }
}

template <typename T, bool kDist, bool kGram>
void pairwise_impl(const T* __restrict__ u, int64_t K, int64_t d, double* dist, double* gram,
                   int num_threads) {
  int64_t segments = std::min<int64_t>(kMaxSegments, ceil_div(d, kMinSegment));
  segments = std::max<int64_t>(1, std::min<int64_t>(segments, kPartialBudget / (K * K)));
  const int64_t seg_len = ceil_div(d, segments);
  // Columns per block: the K rows of a block stay in L2.
  const int64_t B = std::max<int64_t>(kLanes, std::min<int64_t>(512, (1 << 16) / K) / kLanes * kLanes);
  const int64_t row_blocks = ceil_div(K, kRowBlock);
  std::vector<double> pd(kDist ? segments * K * K : 0), pg(kGram ? segments * K * K : 0);
  parallel_for(segments * row_blocks, threads_for(K * K * d / 2, num_threads), [&](int64_t task) {
    const int64_t seg = task / row_blocks, rb = task % row_blocks;
    const int64_t i0 = rb * kRowBlock, i1 = std::min(K, i0 + kRowBlock);
    const int64_t s0 = seg * seg_len, s1 = std::min(d, s0 + seg_len);
    std::vector<double> tile(K * B);
    double* dseg = kDist ? pd.data() + seg * K * K : nullptr;
    double* gseg = kGram ? pg.data() + seg * K * K : nullptr;
    for (int64_t c0 = s0; c0 < s1; c0 += B) {
      const int64_t n = std::min(B, s1 - c0);
      for (int64_t k = i0; k < K; ++k) {  // rows < i0 are never read by this task
        const T* row = u + k * d + c0;
        double* dst = tile.data() + k * B;
        int64_t t = 0;
        for (; t < n; ++t) dst[t] = static_cast<double>(load(row + t));
        for (; t < B; ++t) dst[t] = 0.0;  // zero padding adds nothing to either sum
      }
      accumulate_block<kDist, kGram>(tile.data(), K, B, i0, i1, dseg, gseg);
    }
  });
  // Segment partials are added in segment order: independent of the thread count.
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = i; j < K; ++j) {
      double sd = 0.0, sg = 0.0;
      for (int64_t s = 0; s < segments; ++s) {
        if (kDist) sd += pd[s * K * K + i * K + j];
        if (kGram) sg += pg[s * K * K + i * K + j];
      }
      if (kDist) { dist[i * K + j] = (i == j) ? 0.0 : sd; dist[j * K + i] = dist[i * K + j]; }
      if (kGram) { gram[i * K + j] = sg; gram[j * K + i] = sg; }
    }
}

template <typename T>
void pairwise_double(const T* u, int64_t K, int64_t d, double* dist, double* gram, int threads) {
  if (dist && gram) pairwise_impl<T, true, true>(u, K, d, dist, gram, threads);
  else if (dist) pairwise_impl<T, true, false>(u, K, d, dist, nullptr, threads);
  else if (gram) pairwise_impl<T, false, true>(u, K, d, nullptr, gram, threads);
}

template <typename V> void store(const std::vector<double>& src, void* dst) {
  V* out = static_cast<V*>(dst);
  for (size_t i = 0; i < src.size(); ++i) out[i] = static_cast<V>(src[i]);
}

}  // namespace

void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d, void* sqdist,
                    void* gram, int num_threads) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    std::vector<double> dist(sqdist ? K * K : 0), g(gram ? K * K : 0);
    pairwise_double(static_cast<const T*>(updates), K, d, sqdist ? dist.data() : nullptr,
                    gram ? g.data() : nullptr, num_threads);
    if (sqdist) store<V>(dist, sqdist);
    if (gram) store<V>(g, gram);
  });
}

void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d, double* sqdist,
                        double* gram, int num_threads) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    pairwise_double(static_cast<const T*>(updates), K, d, sqdist, gram, num_threads);
  });
}

void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d, void* out,
                       int num_threads) {
  if (K <= 0 || d <= 0) return;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    using V = typename Traits<T>::val_t;
    std::vector<double> g(K * K), cos(K * K);
    pairwise_double(static_cast<const T*>(updates), K, d, nullptr, g.data(), num_threads);
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j) {
        const double nii = g[i * K + i], njj = g[j * K + j];
        double c = 0.0;
        // Identical rows have bitwise equal dot products and norms (same summation
        // order), and sqrt(x * x) == x in IEEE arithmetic, so c is exactly 1 there.
        if (nii > 0.0 && njj > 0.0) c = g[i * K + j] / std::sqrt(nii * njj);
        cos[i * K + j] = std::min(1.0, std::max(-1.0, c));
      }
    store<V>(cos, out);
  });
}

}  // namespace cpu
}  // namespace robustagg
