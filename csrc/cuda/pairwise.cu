// Kernel family 4 on CUDA: squared distances and Gram from direct differences.
// A block owns a 32 x 32 tile of client pairs (upper-triangular tiles only)
// and one segment of d (math::PairwiseSegments); it stages 32 columns of its
// 64 rows at a time through shared memory (a warp reads 32 consecutive
// coordinates of one row: coalesced) and each of its 256 threads adds the
// blocked sums of four pairs with math::pair_block (float blocks: a fused
// multiply-add per step, math::madd), exactly the sums that
// math::pair_partials forms (and the emulated launchers check). The [segments, K, K]
// double partials are then added in segment order: deterministic.
#include "robustagg/pairwise.h"

#include "launch.cuh"
#include "robustagg/device_plan.h"
#include "robustagg/math/pairwise.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

constexpr int kTile = 32;              // clients per tile side
constexpr int kCols = 32;              // columns staged per round: two pair_block blocks
constexpr int kPairThreads = 256;      // 16 x 16 threads, 2 x 2 pairs each
static_assert(kCols == 2 * math::kSqBlock, "a staged round is two blocks of the per-thread sum");

// Invariant: in each round, A[r][c] / B[r][c] hold column c0 + c of rows
// I0 + r / J0 + r (zero outside [s0, s1) and past K), and every thread has
// added the blocks of its four pairs up to column c0.
// Two blocks per SM for the float blocks (ptxas keeps them within 128
// registers without a spill; the cost model's issue time counts on the 16
// warps); the exact double path needs more and keeps one.
template <typename T, bool kFloatBlocks>
__global__ void __launch_bounds__(kPairThreads, kFloatBlocks ? 2 : 1) partials_kernel(
    const T* __restrict__ u,  // [K, d]
    int64_t K, int64_t d, int64_t seg_len, int tiles, bool want_dist, bool want_gram,
    const int32_t* __restrict__ only_if,                               // see pairwise.h
    double* __restrict__ part_dist, double* __restrict__ part_gram) {  // [segments, K, K]
  using V = val_t<T>;
  if (only_if && *only_if == 0) return;  // the whole block: no barrier is reached
  __shared__ V A[kTile][kCols + 1];
  __shared__ V B[kTile][kCols + 1];
  // Upper-triangular tile pair (ti <= tj) of this block.
  int ti = 0, rest = static_cast<int>(blockIdx.x);
  while (rest >= tiles - ti) { rest -= tiles - ti; ++ti; }
  const int tj = ti + rest;
  const int64_t I0 = static_cast<int64_t>(ti) * kTile, J0 = static_cast<int64_t>(tj) * kTile;
  const int64_t seg = blockIdx.y, s0 = seg * seg_len, s1 = s0 + seg_len < d ? s0 + seg_len : d;
  // A warp holds two columns tx (and tx + 16) of the J tile and all 32 rows
  // of the I tile: past K its columns are padding, and a thread whose
  // columns (or rows) are all padding skips the sums (a warp-uniform branch
  // once the J tile ends within it), so the last tile of K = 100 (4 rows)
  // costs 2 warps of 8, not 8. The barriers stay outside the branch.
  const int ty = threadIdx.x % 16, tx = threadIdx.x / 16;
  const bool busy = I0 + ty < K && J0 + tx < K;
  double acc_d[2][2] = {{0.0, 0.0}, {0.0, 0.0}}, acc_g[2][2] = {{0.0, 0.0}, {0.0, 0.0}};
  for (int64_t c0 = s0; c0 < s1; c0 += kCols) {
    for (int e = threadIdx.x; e < kTile * kCols; e += kPairThreads) {
      const int r = e / kCols, c = e % kCols;
      const bool in_col = c0 + c < s1;
      A[r][c] = (in_col && I0 + r < K) ? V(math::load(u + (I0 + r) * d + c0 + c)) : V(0);
      B[r][c] = (in_col && J0 + r < K) ? V(math::load(u + (J0 + r) * d + c0 + c)) : V(0);
    }
    __syncthreads();
    for (int half = 0; busy && half < kCols && c0 + half < s1; half += math::kSqBlock)
#pragma unroll
      for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) {
          const V* ra = &A[ty + 16 * a][half];
          const V* rb = &B[tx + 16 * b][half];
          math::pair_block<V, kFloatBlocks>([ra](int s) { return ra[s]; }, [rb](int s) { return rb[s]; }, want_dist,
                                          want_gram, acc_d[a][b], acc_g[a][b]);
        }
    __syncthreads();
  }
#pragma unroll
  for (int a = 0; a < 2; ++a)
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int64_t i = I0 + ty + 16 * a, j = J0 + tx + 16 * b;
      if (i >= K || j >= K) continue;
      const int64_t at = (seg * K + i) * K + j;
      if (want_dist) part_dist[at] = acc_d[a][b];
      if (want_gram) part_gram[at] = acc_g[a][b];
    }
}

// Segment partials of pair (min(i, j), max(i, j)) added in segment order.
__device__ inline double segment_sum(const double* part, int64_t S, int64_t K, int64_t i, int64_t j) {
  const int64_t a = i < j ? i : j, b = i < j ? j : i;
  double acc = 0.0;
  for (int64_t s = 0; s < S; ++s) acc += part[(s * K + a) * K + b];
  return acc;
}

template <typename O>
__global__ void finish_kernel(int64_t K, int64_t S, const double* __restrict__ part_dist,
                              const double* __restrict__ part_gram, O* __restrict__ sqdist,  // [K, K] or null
                              double* __restrict__ gram_ws, O* __restrict__ gram_out,        // [K, K] or null
                              const int32_t* __restrict__ only_if) {
  if (only_if && *only_if == 0) return;
  for (int64_t e = thread_index(); e < K * K; e += grid_stride()) {
    const int64_t i = e / K, j = e % K;
    if (sqdist) sqdist[e] = static_cast<O>(i == j ? 0.0 : segment_sum(part_dist, S, K, i, j));
    if (gram_ws) {
      const double g = segment_sum(part_gram, S, K, i, j);
      gram_ws[e] = g;
      if (gram_out) gram_out[e] = static_cast<O>(g);
    }
  }
}

template <typename O>
__global__ void cosine_kernel(int64_t K, const double* __restrict__ gram, O* __restrict__ out) {  // [K, K]
  for (int64_t e = thread_index(); e < K * K; e += grid_stride()) {
    const int64_t i = e / K, j = e % K;
    out[e] = static_cast<O>(math::cosine_from_gram(gram[e], gram[i * K + i], gram[j * K + j]));
  }
}

template <typename O>
void run(const void* updates, DType dtype, int64_t K, int64_t d, O* sqdist, O* gram_out, O* cos_out,
         bool float_blocks, const int32_t* only_if, void* workspace, void* stream) {
  const plan::PairwiseLayout layout(K, d);
  const cudaStream_t s = as_stream(stream);
  char* ws = static_cast<char*>(workspace);
  double* pd = reinterpret_cast<double*>(ws + layout.part_dist);
  double* pg = reinterpret_cast<double*>(ws + layout.part_gram);
  double* g = reinterpret_cast<double*>(ws + layout.gram);
  const bool want_dist = sqdist != nullptr, want_gram = gram_out != nullptr || cos_out != nullptr;
  const int tiles = static_cast<int>((K + kTile - 1) / kTile);
  const dim3 grid(static_cast<unsigned>(tiles * (tiles + 1) / 2), static_cast<unsigned>(layout.seg.segments));
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* u = static_cast<const T*>(updates);
    // Float blocks only for values held as float (no instantiation for double).
    if constexpr (sizeof(val_t<T>) == 4) {
      if (float_blocks) {
        launch<partials_kernel<T, true>>(grid, dim3(kPairThreads), 0, s, u, K, d, layout.seg.seg_len, tiles,
                                         want_dist, want_gram, only_if, pd, pg);
        return;
      }
    }
    launch<partials_kernel<T, false>>(grid, dim3(kPairThreads), 0, s, u, K, d, layout.seg.seg_len, tiles,
                                      want_dist, want_gram, only_if, pd, pg);
  });
  launch<finish_kernel<O>>(dim3(blocks_for(K * K)), dim3(kThreads), 0, s, K, layout.seg.segments, pd, pg, sqdist,
                           want_gram ? g : nullptr, gram_out, only_if);
  if (cos_out) launch<cosine_kernel<O>>(dim3(blocks_for(K * K)), dim3(kThreads), 0, s, K, g, cos_out);
}

}  // namespace

size_t pairwise_workspace_bytes(DType, int64_t K, int64_t d) { return plan::PairwiseLayout(K, d).bytes; }

void pairwise_stats(const void* updates, DType dtype, int64_t K, int64_t d, void* sqdist, void* gram,
                    void* workspace, void* stream) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  if (dtype == DType::Float64)
    run<double>(updates, dtype, K, d, static_cast<double*>(sqdist), static_cast<double*>(gram), nullptr, false,
                nullptr, workspace, stream);
  else
    run<float>(updates, dtype, K, d, static_cast<float*>(sqdist), static_cast<float*>(gram), nullptr, true,
               nullptr, workspace, stream);
}

void pairwise_stats_f64(const void* updates, DType dtype, int64_t K, int64_t d, double* sqdist, double* gram,
                        bool fast, const int32_t* only_if, void* workspace, void* stream) {
  if (K <= 0 || d <= 0 || (!sqdist && !gram)) return;
  run<double>(updates, dtype, K, d, sqdist, gram, nullptr, fast, only_if, workspace, stream);
}

void cosine_similarity(const void* updates, DType dtype, int64_t K, int64_t d, void* out, void* workspace,
                       void* stream) {
  if (K <= 0 || d <= 0) return;
  if (dtype == DType::Float64)
    run<double>(updates, dtype, K, d, nullptr, nullptr, static_cast<double*>(out), false, nullptr, workspace, stream);
  else
    run<float>(updates, dtype, K, d, nullptr, nullptr, static_cast<float*>(out), false, nullptr, workspace, stream);
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
