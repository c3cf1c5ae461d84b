#include "robustagg/math/no_contraction.h"  // the same roundings as the CUDA kernel (--fmad=false)

#include "robustagg/norms.h"

#include <vector>

#include "robustagg/math/norms.h"

namespace robustagg {
namespace cpu {
namespace {

// One (row, segment) task: the kNormLanes lane sums of math/norms.h, swept a
// full row of lanes at a time (the inner loop vectorises), then the tree.
template <typename T>
double segment_sum(const T* __restrict__ row, const T* __restrict__ point, int64_t s0, int64_t s1) {
  double lanes[math::kNormLanes] = {0.0};
  int64_t c0 = s0;
  for (; c0 + math::kNormLanes <= s1; c0 += math::kNormLanes)
    for (int l = 0; l < math::kNormLanes; ++l) lanes[l] += math::sq_dev(row, point, c0 + l);
  for (int l = 0; c0 + l < s1; ++l) lanes[l] += math::sq_dev(row, point, c0 + l);
  math::lane_tree(lanes);
  return lanes[0];
}

}  // namespace

void sq_distances_to(const void* updates, DType dtype, int64_t K, int64_t d, const void* point, double* out,
                     int num_threads) {
  if (K <= 0 || d <= 0) return;
  const int64_t S = math::norm_segments(d);
  std::vector<double> part(K * S);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    const T* u = static_cast<const T*>(updates);
    const T* p = static_cast<const T*>(point);
    parallel_for(K * S, threads_for(K * d, num_threads), [&](int64_t task) {
      const int64_t k = task / S, s = task % S;
      const int64_t s0 = s * math::kNormSegment, s1 = std::min(d, s0 + math::kNormSegment);
      part[task] = segment_sum(u + k * d, p, s0, s1);
    });
  });
  for (int64_t k = 0; k < K; ++k) out[k] = math::segments_in_order(part.data() + k * S, S);
}

}  // namespace cpu
}  // namespace robustagg
