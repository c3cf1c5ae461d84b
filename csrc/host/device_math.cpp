// The host runner of the device math: runs the exact per-thread functions of
// the CUDA kernels (csrc/include/robustagg/math/) over every coordinate, on
// the same chunks and the same workspace layout (device_plan.h), with the
// cooperative parts (W's block sums, the pairwise segments) reduced in the
// order the kernels reduce them. The tests push the parity grid through it
// (ops.py backend "device_math"), which proves the device arithmetic on
// machines without a GPU. It is a test entry, not a fast path.
//
// No fused multiply-adds here, as in the CUDA files (--fmad=false) and the CPU
// residual kernel: the same expressions must round the same way.
#include "robustagg/math/no_contraction.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "robustagg/device_plan.h"
#include "robustagg/math/norms.h"
#include "robustagg/norms.h"
#include "robustagg/pairwise.h"
#include "robustagg/repeated_median.h"
#include "robustagg/sign_vote.h"
#include "robustagg/trimmed_mean.h"

namespace robustagg {
namespace device_math {
namespace {

constexpr int64_t kThreadsPerTask = 4096;  // "threads" (coordinates) per host task

// Host threads for the runner: every core (results do not depend on it: each
// coordinate is independent, and every reduction runs in a fixed order).
int host_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Runs body(j) for every "thread" j in [0, n) on the host pool.
template <typename Body> void for_each_thread(int64_t n, const Body& body) {
  parallel_for(ceil_div(n, kThreadsPerTask), host_threads(), [&](int64_t task) {
    const int64_t j1 = std::min(n, (task + 1) * kThreadsPerTask);
    for (int64_t j = task * kThreadsPerTask; j < j1; ++j) body(j);
  });
}

template <typename F> void with_type(DType dtype, F&& f) {
  dispatch_dtype(dtype, [&](auto tag) { f(static_cast<std::remove_const_t<std::remove_pointer_t<decltype(tag)>>*>(nullptr)); });
}

template <typename T> using val_t = typename Traits<T>::val_t;

template <int kRows, typename T>
void order_registers(const T* u, int64_t K, int64_t d, math::OrderStat stat, int64_t trim, double tau,
                     val_t<T>* out) {
  for_each_thread(d, [&](int64_t j) {
    out[j] = math::order_column_registers<kRows>(u + j, K, d, stat, trim, tau);
  });
}

void order(const void* updates, DType dtype, int64_t K, int64_t d, math::OrderStat stat, int64_t trim,
           double tau, void* out, void* workspace) {
  if (K <= 0 || d <= 0) return;
  const plan::OrderLayout layout(dtype, K, d);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using V = val_t<T>;
    const T* u = static_cast<const T*>(updates);
    V* o = static_cast<V*>(out);
    if (plan::with_register_rows(layout.register_rows, [&](auto rows) {
          order_registers<decltype(rows)::value>(u, K, d, stat, trim, tau, o);
        }))
      return;
    V* scratch = static_cast<V*>(workspace);  // [K, cols]
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = std::min(layout.cols, d - c0);
      for_each_thread(n, [&](int64_t t) {
        const math::Strided<V> col{scratch + t, layout.cols};
        o[c0 + t] = math::order_column_buffer(u + c0 + t, K, d, col, stat, trim, tau);
      });
    }
  });
}

}  // namespace

void sign_vote(const void* updates, DType dtype, int64_t K, int64_t d, const double* weights, void* out,
               void*) {
  if (K <= 0 || d <= 0) return;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    if (weights) {
      val_t<T>* o = static_cast<val_t<T>*>(out);
      for_each_thread(d, [&](int64_t j) {
        o[j] = static_cast<val_t<T>>(math::weighted_sign_vote_column(u + j, K, d, weights));
      });
    } else {
      int32_t* o = static_cast<int32_t*>(out);
      for_each_thread(d, [&](int64_t j) { o[j] = math::sign_vote_column(u + j, K, d); });
    }
  });
}

void robust_lr_mean(const void* updates, DType dtype, int64_t K, int64_t d, double threshold,
                    const double* weights, void* out, int64_t* flipped, void*) {
  if (flipped) *flipped = 0;
  if (K <= 0 || d <= 0) return;
  std::vector<int> flips(flipped ? d : 0);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    val_t<T>* o = static_cast<val_t<T>*>(out);
    const double wsum = math::weight_sum(weights, K);  // once, as each CUDA thread does before its loop
    for_each_thread(d, [&](int64_t j) {
      o[j] = math::robust_lr_mean_column(u + j, K, d, weights, wsum, threshold, flipped ? &flips[j] : nullptr);
    });
  });
  if (flipped)
    for (const int f : flips) *flipped += f;  // the CUDA warps' atomic adds: an integer sum, any order
}

size_t order_workspace_bytes(DType dtype, int64_t K, int64_t d) { return plan::OrderLayout(dtype, K, d).bytes; }

void trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim, void* out,
                  void* workspace, void*) {
  order(updates, dtype, K, d, math::OrderStat::Trimmed, trim, 0.0, out, workspace);
}

void median(const void* updates, DType dtype, int64_t K, int64_t d, void* out, void* workspace, void*) {
  order(updates, dtype, K, d, math::OrderStat::Median, 0, 0.0, out, workspace);
}

void masked_trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, double tau, int64_t trim,
                         void* out, void* workspace, void*) {
  order(updates, dtype, K, d, math::OrderStat::Masked, trim, tau, out, workspace);
}

void closest_to_median_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim, void* out,
                            void* workspace, void*) {
  order(updates, dtype, K, d, math::OrderStat::Closest, trim, 0.0, out, workspace);
}

size_t residual_workspace_bytes(DType, int64_t K, int64_t d) { return plan::ResidualLayout(K, d).bytes; }

void repeated_median_line(const void* updates, DType dtype, int64_t K, int64_t d, InterceptMode mode,
                          void* slope, void* intercept, void* workspace, void*) {
  if (K <= 0 || d <= 0) return;
  const plan::ResidualLayout layout(K, d);
  double* scratch = plan::ResidualWorkspace(layout, workspace).scratch;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using V = val_t<T>;
    const T* u = static_cast<const T*>(updates);
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = std::min(layout.cols, d - c0);
      for_each_thread(n, [&](int64_t t) {
        math::ResidualColumn col(scratch + t, K, layout.cols);
        double b1 = 0.0, b0 = 0.0;
        const bool finite = math::load_sorted_column(u + c0 + t, K, d, col);
        math::fit_line_column(col, K, mode, b1, b0);
        static_cast<V*>(slope)[c0 + t] = static_cast<V>(finite ? b1 : math::quiet_nan<double>());
        static_cast<V*>(intercept)[c0 + t] = static_cast<V>(finite ? b0 : math::quiet_nan<double>());
      });
    }
  });
}

namespace {

enum class ResidualPart { Whole, ClientSums, Apply };  // as in the CPU kernel

void residual(ResidualPart part, const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
              double power, InterceptMode mode, const double* W_given, double* W_out, void* client_weights,
              void* aggregate, void* workspace) {
  if (K <= 0 || d <= 0) return;
  const plan::ResidualLayout layout(K, d);
  const plan::ResidualWorkspace w(layout, workspace);
  double *scratch = w.scratch, *beta0 = w.beta0, *beta1 = w.beta1, *tau = w.tau, *partial = w.partial, *W = w.W,
         *cw = w.cw;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using V = val_t<T>;
    const T* u = static_cast<const T*>(updates);
    V* cw_out = static_cast<V*>(client_weights);
    V* agg = static_cast<V*>(aggregate);
    if (K < 3) {  // degenerate: plain mean, uniform client weights, no client sums
      if (part == ResidualPart::ClientSums) {
        for (int64_t k = 0; k < K; ++k) W_out[k] = 0.0;
        return;
      }
      for (int64_t k = 0; k < K; ++k) cw_out[k] = static_cast<V>(1.0 / static_cast<double>(K));
      for_each_thread(d, [&](int64_t j) { agg[j] = static_cast<V>(math::plain_mean_column(u + j, K, d)); });
      return;
    }
    for (int64_t k = 0; k < K; ++k) W[k] = 0.0;
    // Pass 1 per chunk: one "thread block" of kResidualBlock coordinates sums
    // its contributions to W per client in coordinate order (the kernel's
    // shared-memory reduction), then the blocks are added to W in order.
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = std::min(layout.cols, d - c0);
      const int64_t blocks = ceil_div(n, math::kResidualBlock);
      parallel_for(blocks, host_threads(), [&](int64_t b) {
        double* Wb = partial + b * K;
        for (int64_t k = 0; k < K; ++k) Wb[k] = 0.0;
        const int64_t t1 = std::min(n, (b + 1) * math::kResidualBlock);
        for (int64_t t = b * math::kResidualBlock; t < t1; ++t) {
          math::ResidualColumn col(scratch + t, K, layout.cols);
          const int64_t j = c0 + t;
          const bool finite = math::load_sorted_column(u + j, K, d, col);
          math::fit_line_column(col, K, mode, beta1[j], beta0[j]);
          const double sigma = math::confidences_column(col, K, beta0[j], beta1[j], lam, delta, tau[j]);
          if (!finite) continue;  // non-finite columns add nothing to W
          for (int64_t x = 0; x < K; ++x) Wb[static_cast<int64_t>(col.idx[x])] += col.conf[x] * sigma;
        }
      });
      for (int64_t k = 0; k < K; ++k)
        for (int64_t b = 0; b < blocks; ++b) W[k] += partial[b * K + k];
    }
    if (part == ResidualPart::ClientSums) {
      for (int64_t k = 0; k < K; ++k) W_out[k] = W[k];
      return;
    }
    math::client_weights_from_sums(part == ResidualPart::Apply ? W_given : W, K, power, cw);
    for (int64_t k = 0; k < K; ++k) cw_out[k] = static_cast<V>(cw[k]);
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {
      const int64_t n = std::min(layout.cols, d - c0);
      for_each_thread(n, [&](int64_t t) {
        math::ResidualColumn col(scratch + t, K, layout.cols);
        const int64_t j = c0 + t;
        agg[j] = static_cast<V>(math::corrected_sum_column(u + j, K, d, col, cw, beta0[j], beta1[j], tau[j],
                                                            lam, delta));
      });
    }
  });
}

}  // namespace

void residual_reweight(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                       double power, InterceptMode mode, void* client_weights, void* aggregate, void* workspace,
                       void*) {
  residual(ResidualPart::Whole, updates, dtype, K, d, lam, delta, power, mode, nullptr, nullptr, client_weights,
           aggregate, workspace);
}

void residual_client_sums(const void* updates, DType dtype, int64_t K, int64_t d, double lam, double delta,
                          InterceptMode mode, double* client_sums, void* workspace, void*) {
  residual(ResidualPart::ClientSums, updates, dtype, K, d, lam, delta, 1.0, mode, nullptr, client_sums, nullptr,
           nullptr, workspace);
}

void residual_apply(const void* updates, DType dtype, int64_t K, int64_t d, const double* client_sums, double lam,
                    double delta, double power, InterceptMode mode, void* client_weights, void* aggregate,
                    void* workspace, void*) {
  residual(ResidualPart::Apply, updates, dtype, K, d, lam, delta, power, mode, client_sums, nullptr,
           client_weights, aggregate, workspace);
}

size_t pairwise_workspace_bytes(DType, int64_t K, int64_t d) { return plan::PairwiseLayout(K, d).bytes; }

namespace {

// Partials of every pair (i <= j) and segment, then the segment sums in order
// into the [K, K] results (distances with a zero diagonal; Gram into the
// workspace for cosine).
template <typename T, bool kFloatBlocks>
void pairwise_partials(const T* u, int64_t K, int64_t d, bool want_dist, bool want_gram,
                       const plan::PairwiseLayout& layout, char* ws) {
  double* pd = reinterpret_cast<double*>(ws + layout.part_dist);
  double* pg = reinterpret_cast<double*>(ws + layout.part_gram);
  const int64_t S = layout.seg.segments, L = layout.seg.seg_len;
  parallel_for(S, host_threads(), [&](int64_t s) {
    const int64_t s0 = s * L, s1 = std::min(d, s0 + L);
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = i; j < K; ++j) {
        double dist = 0.0, gram = 0.0;
        math::pair_partials<T, kFloatBlocks>(u + i * d, u + j * d, s0, s1, want_dist, want_gram, dist, gram);
        pd[(s * K + i) * K + j] = dist;
        pg[(s * K + i) * K + j] = gram;
      }
  });
}

// Sum over segments in order of the partials of pair (min, max).
inline double segment_sum(const double* part, int64_t S, int64_t K, int64_t i, int64_t j) {
  const int64_t a = std::min(i, j), b = std::max(i, j);
  double acc = 0.0;
  for (int64_t s = 0; s < S; ++s) acc += part[(s * K + a) * K + b];
  return acc;
}

template <typename O>
void pairwise_run(const void* updates, DType dtype, int64_t K, int64_t d, O* sqdist, O* gram_out, O* cos_out,
                  bool float_blocks, void* workspace) {
  const plan::PairwiseLayout layout(K, d);
  char* ws = static_cast<char*>(workspace);
  const bool want_dist = sqdist != nullptr, want_gram = gram_out != nullptr || cos_out != nullptr;
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    if (float_blocks && sizeof(val_t<T>) == 4) pairwise_partials<T, true>(u, K, d, want_dist, want_gram, layout, ws);
    else pairwise_partials<T, false>(u, K, d, want_dist, want_gram, layout, ws);
  });
  const double* pd = reinterpret_cast<const double*>(ws + layout.part_dist);
  const double* pg = reinterpret_cast<const double*>(ws + layout.part_gram);
  double* g = reinterpret_cast<double*>(ws + layout.gram);
  const int64_t S = layout.seg.segments;
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      if (want_dist) sqdist[i * K + j] = static_cast<O>(i == j ? 0.0 : segment_sum(pd, S, K, i, j));
      if (want_gram) g[i * K + j] = segment_sum(pg, S, K, i, j);
      if (gram_out) gram_out[i * K + j] = static_cast<O>(g[i * K + j]);
    }
  if (cos_out)
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j)
        cos_out[i * K + j] = static_cast<O>(math::cosine_from_gram(g[i * K + j], g[i * K + i], g[j * K + j]));
}

}  // namespace

void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d, void* sqdist, void* gram,
                    void* workspace, void*) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  if (dtype == DType::Float64)
    pairwise_run<double>(updates, dtype, K, d, static_cast<double*>(sqdist), static_cast<double*>(gram), nullptr,
                         false, workspace);
  else
    pairwise_run<float>(updates, dtype, K, d, static_cast<float*>(sqdist), static_cast<float*>(gram), nullptr,
                        true, workspace);
}

void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d, double* sqdist, double* gram,
                        bool fast, void* workspace, void*) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  pairwise_run<double>(updates, dtype, K, d, sqdist, gram, nullptr, fast, workspace);
}

void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d, void* out, void* workspace,
                       void*) {
  if (K <= 0 || d <= 0) return;
  if (dtype == DType::Float64)
    pairwise_run<double>(updates, dtype, K, d, nullptr, nullptr, static_cast<double*>(out), false, workspace);
  else
    pairwise_run<float>(updates, dtype, K, d, nullptr, nullptr, static_cast<float*>(out), false, workspace);
}

size_t norms_workspace_bytes(int64_t K, int64_t d) {
  return static_cast<size_t>(K * math::norm_segments(d)) * sizeof(double);
}

// Each block: its kNormLanes lane sums (the threads), the tree, one partial;
// then each row's partials in segment order, as the two CUDA kernels do.
void sq_distances_to(const void* updates, DType dtype, int64_t K, int64_t d, const void* point, double* out,
                     void* workspace, void*) {
  if (K <= 0 || d <= 0) return;
  const int64_t S = math::norm_segments(d);
  double* part = static_cast<double*>(workspace);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    const T* p = static_cast<const T*>(point);
    parallel_for(K * S, host_threads(), [&](int64_t block) {
      const int64_t k = block / S, s = block % S;
      const int64_t s0 = s * math::kNormSegment, s1 = std::min(d, s0 + math::kNormSegment);
      double lanes[math::kNormLanes];
      for (int l = 0; l < math::kNormLanes; ++l) lanes[l] = math::sq_dev_lane(u + k * d, p, s0, s1, l);
      math::lane_tree(lanes);
      part[block] = lanes[0];
    });
  });
  for (int64_t k = 0; k < K; ++k) out[k] = math::segments_in_order(part + k * S, S);
}

}  // namespace device_math
}  // namespace robustagg
