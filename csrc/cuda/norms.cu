// Row statistics on CUDA: one block of math::kNormLanes threads per (row,
// segment), segment-major; thread l adds lane l of math/norms.h (coalesced: consecutive threads
// read consecutive coordinates), the block reduces the lanes with the tree of
// math::lane_tree (one level per __syncthreads), and a second kernel adds the
// [K, segments] partials in segment order. Bitwise the CPU kernel's result.
#include "robustagg/norms.h"

#include "launch.cuh"
#include "robustagg/math/norms.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

static_assert(math::kNormLanes == kThreads, "a block is one segment's lanes");

template <typename T>
__global__ void __launch_bounds__(math::kNormLanes) segment_kernel(const T* __restrict__ u, int64_t d, int64_t S,
                                                                   const T* __restrict__ point,
                                                                   double* __restrict__ part) {  // [K, S]
  __shared__ double lanes[math::kNormLanes];
  // Blocks in segment-major order: the K blocks of one segment are launched
  // together, so the point's segment comes from DRAM once and from L2 for the
  // other rows (row-major order read it once per row when d outgrows L2).
  const int64_t K = gridDim.x / S, s = blockIdx.x / K, k = blockIdx.x % K;
  const int64_t s0 = s * math::kNormSegment, s1 = s0 + math::kNormSegment < d ? s0 + math::kNormSegment : d;
  const int l = threadIdx.x;
  lanes[l] = math::sq_dev_lane(u + k * d, point, s0, s1, l);
  __syncthreads();
  for (int w = math::kNormLanes / 2; w >= 1; w /= 2) {  // math::lane_tree, level by level
    if (l < w) lanes[l] += lanes[l + w];
    __syncthreads();
  }
  if (l == 0) part[k * S + s] = lanes[0];
}

__global__ void rows_kernel(int64_t K, int64_t S, const double* __restrict__ part, double* __restrict__ out) {
  for (int64_t k = thread_index(); k < K; k += grid_stride()) out[k] = math::segments_in_order(part + k * S, S);
}

}  // namespace

size_t norms_workspace_bytes(int64_t K, int64_t d) {
  return static_cast<size_t>(K * math::norm_segments(d)) * sizeof(double);
}

void sq_distances_to(const void* updates, DType dtype, int64_t K, int64_t d, const void* point, double* out,
                     void* workspace, void* stream) {
  if (K <= 0 || d <= 0) return;
  const int64_t S = math::norm_segments(d);
  const cudaStream_t s = as_stream(stream);
  double* part = static_cast<double*>(workspace);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    launch<segment_kernel<T>>(dim3(static_cast<unsigned>(K * S)), dim3(math::kNormLanes), 0, s,
                              static_cast<const T*>(updates), d, S, static_cast<const T*>(point), part);
  });
  launch<rows_kernel>(dim3(blocks_for(K)), dim3(kThreads), 0, s, K, S, part, out);
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
