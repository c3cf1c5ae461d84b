// How a device launch is shaped: chunks of coordinates and the layout of the
// workspace that ops.py allocates on the tensor's device (so that launches
// never allocate and can be captured in a CUDA graph). Shared by the CUDA
// launchers, compiled for the GPU and, under csrc/emulate/, for the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "robustagg/math/load.h"
#include "robustagg/math/order.h"
#include "robustagg/math/pairwise.h"
#include "robustagg/math/residual.h"

namespace robustagg {
namespace plan {

// Column scratch is bounded by this many bytes: large d is walked in chunks.
// (Settable for tests, so that small inputs are walked in several chunks too.)
inline int64_t& scratch_bytes_limit() {
  static int64_t limit = int64_t(256) << 20;
  return limit;
}
constexpr size_t kAlign = 256;

inline size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
inline int64_t value_bytes(DType dtype) { return dtype == DType::Float64 ? 8 : 4; }

// Coordinates per chunk when each coordinate needs `bytes_per_column` of
// scratch; a multiple of `multiple`.
inline int64_t chunk_cols(int64_t d, int64_t bytes_per_column, int64_t multiple) {
  int64_t cols = scratch_bytes_limit() / (bytes_per_column > 0 ? bytes_per_column : 1);
  cols = cols / multiple * multiple;
  if (cols < multiple) cols = multiple;
  const int64_t d_up = (d + multiple - 1) / multiple * multiple;
  return cols < d_up ? cols : d_up;
}

// Family 2: a thread's column in registers for K <= 128 values of 4 bytes
// (float, and half/bfloat16 held as float), K <= 16 doubles. 32 doubles are
// 64 registers before the network's own: ptxas spills the 32-row double
// network on sm_80 (255 registers, 48-byte stack;
// python_tests/test_cuda_resources.py).
constexpr int max_register_rows(int64_t value_bytes) { return value_bytes > 4 ? 16 : math::kDeviceRegRows; }

// Beyond the registers the thread's column in a static shared-memory tile of
// 32 KB per block (no workspace): kSharedRows rows x shared_threads(value,
// rows) threads, 128 rows (64 threads of floats, 32 of doubles) or, for
// 4-byte values, 256 rows (32 threads). Larger K: a [K, cols] scratch in
// global memory, walked in chunks.
constexpr int64_t kSharedRows = 128;
constexpr int64_t kSharedTileBytes = 32 * 1024;
constexpr int64_t shared_rows_for(int64_t value_bytes, int64_t K) {
  return K <= kSharedRows ? kSharedRows : (value_bytes <= 4 && K <= 2 * kSharedRows ? 2 * kSharedRows : 0);
}
constexpr int shared_threads(int64_t value_bytes, int64_t rows = kSharedRows) {
  return static_cast<int>(kSharedTileBytes / (rows * value_bytes));
}

struct OrderLayout {
  int64_t register_rows, shared_rows, cols;
  size_t bytes;
  OrderLayout(DType dtype, int64_t K, int64_t d) {
    register_rows = math::register_rows_for(K, max_register_rows(value_bytes(dtype)));
    shared_rows = shared_rows_for(value_bytes(dtype), K);
    const bool scratch = !register_rows && !shared_rows;
    cols = scratch ? chunk_cols(d, K * value_bytes(dtype), 256) : d;
    bytes = scratch ? align_up(static_cast<size_t>(K * cols * value_bytes(dtype))) : 0;
  }
};

// Calls f(std::integral_constant<int, rows>{}) for the register rows of an
// OrderLayout: one instantiation for each size n <= kMax that
// math::register_rows_for gives (register_rows_for(n) == n: 1, 2, 4, 8, 16,
// 24, ..., 64, 80, ..., 128); false for 0 (the buffer path).
template <int kMax, int N, typename F> bool with_register_rows_at(int64_t rows, F& f) {
  if constexpr (math::register_rows_for(N, kMax) == N) {
    if (rows == N) {
      f(std::integral_constant<int, N>{});
      return true;
    }
  }
  return false;
}
template <int kMax, typename F, int... I>
bool with_register_rows_in(int64_t rows, F& f, std::integer_sequence<int, I...>) {
  return (with_register_rows_at<kMax, I + 1>(rows, f) || ...);
}
template <int kMax, typename F> bool with_register_rows(int64_t rows, F&& f) {
  return with_register_rows_in<kMax>(rows, f, std::make_integer_sequence<int, kMax>{});
}

// Family 3: a block of kResidualThreads threads (one warp) walks
// kResidualBlock coordinates in order (the CPU kernel's tasks: W's partial
// sums are the same). Each thread takes rows of the repeated medians and
// computes a row's K - 1 pair values as float keys: up to
// kResidualRegisterRows keys it holds them in registers and selects the two
// middle ones with a compile-time network (residual_register_rows(K) rows,
// padded), beyond in its own column of the shared tile, by quickselect. The
// working set for one coordinate (csrc/cuda/repeated_median.cu, BlockColumn)
// is residual_tile_doubles(K) doubles: sorted values, client of each rank,
// the reciprocals of the rank gaps, 2K exact row medians, 2K rows' two middle
// float keys, a list of 2K rows, and the rows' area: with the register
// networks, residual_rows_area(K, rows) doubles (residual_exact_rows
// columns of K - 1 exact pair values, the outer bounds' copies, the
// candidates: 8K; past 64 rows also each thread's first half of rows / 2 keys);
// else each thread's column of K - 1 float keys (the same bytes as 16
// columns of K - 1 doubles). The register networks' tile is static shared
// memory of residual_static_tile(rows) doubles (14 KB at 112 rows);
// the quickselect one (K > 113) a slice of the workspace per block. Line
// parameters and scales for all d
// (pass 2 reuses them); W partials of the chunk's blocks [blocks_per_chunk,
// K]; W and the client weights [K].
constexpr int kResidualThreads = 32;
// Blocks per SM the residual kernels are compiled for (__launch_bounds__):
// a register cap of 168 (64K / (12 x 32), in units of 8), what the 112-row
// network needs without a spill.
constexpr int kResidualBlocksPerSM = 12;
constexpr int kResidualRegisterRows = 112;
// Network rows for a row's K - 1 keys: 16, 32, 64, 100 or 112 (one compiled
// network each; past 64 two sorted halves, of 50 for K up to 101, a common
// round size, and of 56 up to 113), 0 past 112 (the shared column and
// quickselect).
constexpr int residual_register_rows(int64_t K) {
  const int64_t n = K - 1;
  return n <= 16 ? 16 : n <= 32 ? 32 : n <= 64 ? 64 : n <= 100 ? 100
       : n <= kResidualRegisterRows ? kResidualRegisterRows : 0;
}
// Rows computed again in double at a time (threads of the block).
constexpr int residual_exact_rows(int rows) { return rows > 0 ? kResidualThreads / 4 : kResidualThreads / 2; }
// The rows' area of the register networks: 8K doubles, and past 64 rows at
// least the threads' first halves (kResidualThreads x rows / 2 floats).
constexpr int64_t residual_rows_area(int64_t K, int rows) {
  const int64_t halves = rows > 64 ? kResidualThreads * (rows / 2) / 2 : 0;
  return 8 * K > halves ? 8 * K : halves;
}
constexpr int64_t residual_tile_doubles(int64_t K) {
  const int rows = residual_register_rows(K);
  return rows > 0 ? 8 * K + residual_rows_area(K, rows) : 8 * K + (K > 1 ? K - 1 : 1) * residual_exact_rows(0);
}
// The static shared tile of a kernel instantiated for `rows` network rows: K
// up to rows + 1 (one unused double for the quickselect path, whose tile is
// the workspace's).
constexpr int64_t residual_static_tile(int rows) {
  return rows > 0 ? 8 * (rows + 1) + residual_rows_area(rows + 1, rows) : 1;
}
static_assert(residual_static_tile(kResidualRegisterRows) == 1808, "14 KB at 112 rows");
// Pass 2 (apply) uses 13K + 4 doubles (sorted values, clients, the ranks'
// constants and their reciprocals, the raw column, then four coordinates'
// terms K | 1 apart): a static tile for K up to the networks' (11.5 KB).
// It is compiled for 16 blocks per SM (a cap of 128 registers, which it
// meets without a spill; 133 uncapped would leave 12), and 16 of its tiles
// fit the SM's shared memory.
constexpr int64_t kResidualPass2Tile = 13 * (kResidualRegisterRows + 1) + 4;
constexpr int kResidualPass2BlocksPerSM = 16;
static_assert(kResidualPass2BlocksPerSM * (kResidualPass2Tile * 8 + 1024) <= 227 * 1024, "16 tiles a SM");

struct ResidualLayout {
  int64_t cols, blocks_per_chunk, tile_doubles;
  bool shared;
  size_t tiles, beta0, beta1, tau, partial, W, cw, bytes;
  ResidualLayout(int64_t K, int64_t d) {
    tile_doubles = residual_tile_doubles(K);
    shared = residual_register_rows(K) > 0;
    // Per coordinate: its share of its block's W partials (and of its tile).
    const int64_t per_block = K + (shared ? 0 : tile_doubles);
    cols = chunk_cols(d, (per_block * 8 + math::kResidualBlock - 1) / math::kResidualBlock, math::kResidualBlock);
    blocks_per_chunk = cols / math::kResidualBlock;
    size_t off = 0;
    tiles = off;   off += align_up(static_cast<size_t>(shared ? 0 : blocks_per_chunk * tile_doubles * 8));
    beta0 = off;   off += align_up(static_cast<size_t>(d * 8));
    beta1 = off;   off += align_up(static_cast<size_t>(d * 8));
    tau = off;     off += align_up(static_cast<size_t>(d * 8));
    partial = off; off += align_up(static_cast<size_t>(blocks_per_chunk * K * 8));
    W = off;       off += align_up(static_cast<size_t>(K * 8));
    cw = off;      off += align_up(static_cast<size_t>(K * 8));
    bytes = off;
  }
};

// The pointers of a ResidualLayout in a workspace (tiles: null when shared).
struct ResidualWorkspace {
  double *tiles, *beta0, *beta1, *tau, *partial, *W, *cw;
  ResidualWorkspace(const ResidualLayout& l, void* workspace) {
    char* base = static_cast<char*>(workspace);
    const auto at = [base](size_t offset) { return reinterpret_cast<double*>(base + offset); };
    tiles = l.shared ? nullptr : at(l.tiles);
    beta0 = at(l.beta0); beta1 = at(l.beta1); tau = at(l.tau);
    partial = at(l.partial); W = at(l.W); cw = at(l.cw);
  }
};

// Family 4: d in segments; [segments, K, K] double partials of distances and
// Gram, then the Gram itself [K, K] (cosine reads its diagonal).
constexpr int64_t kDeviceMaxSegments = 256;
constexpr int64_t kMinSegment = 4096;
constexpr int64_t kPartialBudget = int64_t(1) << 22;

struct PairwiseLayout {
  math::PairwiseSegments seg;
  size_t part_dist, part_gram, gram, bytes;
  PairwiseLayout(int64_t K, int64_t d) : seg(K, d, kDeviceMaxSegments, kMinSegment, kPartialBudget) {
    const size_t part = align_up(static_cast<size_t>(seg.segments * K * K * 8));
    part_dist = 0;
    part_gram = part;
    gram = 2 * part;
    bytes = gram + align_up(static_cast<size_t>(K * K * 8));
  }
};

}  // namespace plan
}  // namespace robustagg
