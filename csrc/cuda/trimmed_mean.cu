// Kernel family 2 on CUDA: one thread per coordinate. K <= 128 (K <= 16 for
// doubles, plan::max_register_rows): the K values of the thread's column on
// registers, padded with +inf to math::register_rows_for(K) rows (a power of
// two up to 16, then a multiple of 8) and sorted by that size's compile-time
// network (math/order.h); a NaN is replaced by +inf and accounted for
// afterwards (NaN sorts last). Closest's window (a second register copy of
// the column) is compiled only into its own kernels, up to kWindowRows.
// Otherwise, up to 128 values (256 of 4 bytes): the column in a static 32 KB
// shared-memory tile (64 threads a block for 4-byte values, 32 for doubles;
// 32 threads for 256 4-byte values), sorted there by the run-time network.
// Larger K: the column in a [K, cols] global scratch (consecutive threads own
// consecutive scratch columns: coalesced).
// Results are bitwise those of the CPU kernels, up to the sign of a zero.
#include "robustagg/trimmed_mean.h"

#include "launch.cuh"
#include "robustagg/device_plan.h"
#include "robustagg/math/order.h"

namespace robustagg {
namespace ROBUSTAGG_CUDA_NS {
namespace {

constexpr int kWindowRows = 64;  // Closest on registers up to here: 2 x 64 values fit in 168 registers

template <int kRows, bool kWindow, typename T>
__global__ void order_registers_kernel(const T* __restrict__ u,  // [K, d]
                                       int64_t K, int64_t d, math::OrderStat stat, int64_t trim, double tau,
                                       val_t<T>* __restrict__ out) {  // [d]
  for (int64_t j = thread_index(); j < d; j += grid_stride())
    out[j] = math::order_column_registers<kRows, val_t<T>, kWindow>([=](int k) { return math::load(u + k * d + j); },
                                                                    K, stat, trim, tau);
}

// K <= kRows (plan::shared_rows_for) beyond the registers: each thread's
// column in a static 32 KB shared tile (column t at col[k * threads + t]:
// consecutive threads, consecutive banks), sorted by the run-time network
// there. A thread touches only its own column: no barrier.
template <int kRows, typename T>
__global__ void order_shared_kernel(const T* __restrict__ u,  // [K, d]
                                    int64_t K, int64_t d, math::OrderStat stat, int64_t trim, double tau,
                                    val_t<T>* __restrict__ out) {  // [d]
  using V = val_t<T>;
  constexpr int kCols = plan::shared_threads(sizeof(V), kRows);
  __shared__ V tile[kRows * kCols];
  const math::Strided<V> col{tile + threadIdx.x, kCols};
  for (int64_t j = thread_index(); j < d; j += grid_stride())
    out[j] = math::order_column_buffer(u + j, K, d, col, stat, trim, tau);
}

template <typename T>
__global__ void order_buffer_kernel(const T* __restrict__ u,  // [K, d]
                                    int64_t K, int64_t d, int64_t c0, int64_t n, int64_t cols,
                                    math::OrderStat stat, int64_t trim, double tau,
                                    val_t<T>* __restrict__ scratch,  // [K, cols]
                                    val_t<T>* __restrict__ out) {    // [d]
  for (int64_t t = thread_index(); t < n; t += grid_stride()) {
    const math::Strided<val_t<T>> col{scratch + t, cols};
    out[c0 + t] = math::order_column_buffer(u + c0 + t, K, d, col, stat, trim, tau);
  }
}

void order(const void* updates, DType dtype, int64_t K, int64_t d, math::OrderStat stat, int64_t trim,
           double tau, void* out, void* workspace, void* stream) {
  if (K <= 0 || d <= 0) return;
  const plan::OrderLayout layout(dtype, K, d);
  const cudaStream_t s = as_stream(stream);
  with_type(dtype, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using V = val_t<T>;
    const T* u = static_cast<const T*>(updates);
    V* o = static_cast<V*>(out);
    const bool window = stat == math::OrderStat::Closest;
    const bool registers = plan::with_register_rows<plan::max_register_rows(sizeof(V))>(
        window && layout.register_rows > kWindowRows ? 0 : layout.register_rows, [&](auto rows) {
          constexpr int n = decltype(rows)::value;
          // Past 16 rows a thread may take more than 128 registers (Closest's window at 24 rows
          // on sm_80: 148): blocks of 128 let 3 or more share an SM's registers (at 168
          // registers: 3 x 128 = 384 threads, where blocks of 256 would fit once).
          constexpr int threads = n > 16 ? 128 : kThreads;
          if (window) {
            if constexpr (n <= kWindowRows)
              launch<order_registers_kernel<n, true, T>>(dim3(blocks_for(d, threads)), dim3(threads), 0, s, u, K,
                                                         d, stat, trim, tau, o);
          } else {
            launch<order_registers_kernel<n, false, T>>(dim3(blocks_for(d, threads)), dim3(threads), 0, s, u, K, d,
                                                        stat, trim, tau, o);
          }
        });
    if (registers) return;
    if (layout.shared_rows == plan::kSharedRows) {  // also Closest past kWindowRows
      constexpr int threads = plan::shared_threads(sizeof(V), plan::kSharedRows);
      launch<order_shared_kernel<plan::kSharedRows, T>>(dim3(blocks_for(d, threads)), dim3(threads), 0, s, u, K, d,
                                                        stat, trim, tau, o);
      return;
    }
    if constexpr (sizeof(V) <= 4) {
      if (layout.shared_rows == 2 * plan::kSharedRows) {
        constexpr int threads = plan::shared_threads(sizeof(V), 2 * plan::kSharedRows);
        launch<order_shared_kernel<2 * plan::kSharedRows, T>>(dim3(blocks_for(d, threads)), dim3(threads), 0, s, u,
                                                              K, d, stat, trim, tau, o);
        return;
      }
    }
    V* scratch = static_cast<V*>(workspace);
    for (int64_t c0 = 0; c0 < d; c0 += layout.cols) {  // chunks run in stream order, sharing the scratch
      const int64_t n = layout.cols < d - c0 ? layout.cols : d - c0;
      launch<order_buffer_kernel<T>>(dim3(blocks_for(n)), dim3(kThreads), 0, s, u, K, d, c0, n, layout.cols, stat,
                                     trim, tau, scratch, o);
    }
  });
}

}  // namespace

size_t order_workspace_bytes(DType dtype, int64_t K, int64_t d) { return plan::OrderLayout(dtype, K, d).bytes; }

void trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim, void* out,
                  void* workspace, void* stream) {
  order(updates, dtype, K, d, math::OrderStat::Trimmed, trim, 0.0, out, workspace, stream);
}

void median(const void* updates, DType dtype, int64_t K, int64_t d, void* out, void* workspace, void* stream) {
  order(updates, dtype, K, d, math::OrderStat::Median, 0, 0.0, out, workspace, stream);
}

void masked_trimmed_mean(const void* updates, DType dtype, int64_t K, int64_t d, double tau, int64_t trim,
                         void* out, void* workspace, void* stream) {
  order(updates, dtype, K, d, math::OrderStat::Masked, trim, tau, out, workspace, stream);
}

void closest_to_median_mean(const void* updates, DType dtype, int64_t K, int64_t d, int64_t trim, void* out,
                            void* workspace, void* stream) {
  order(updates, dtype, K, d, math::OrderStat::Closest, trim, 0.0, out, workspace, stream);
}

}  // namespace ROBUSTAGG_CUDA_NS
}  // namespace robustagg
