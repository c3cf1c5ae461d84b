// Test driver of the CUDA emulation (python_tests/test_emulation.py builds it
// with g++ against csrc/emulate/runtime.cpp and the emulated .cu files).
//
//   driver selftest         small kernels with a known defect each (divergent
//                           barriers, partial shuffles, bad launch shapes, a
//                           race) and one correct block reduction: one line
//                           per case, "case: <what the emulation said>"
//   driver ops <schedule>   every device op over a few shapes on fixed
//                           pseudo-random data, under schedule 0 (in order),
//                           1 (reversed) or 2 (shuffled): one line per call,
//                           "<op> K d dtype <FNV-1a of the output bytes>".
//                           Every buffer (input, output, workspace) is
//                           allocated with exactly its size (the workspace as
//                           device_plan.h gives it): an AddressSanitizer
//                           build finds any access out of bounds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#define ROBUSTAGG_EMULATE_CUDA 1
#include "../../csrc/cuda/launch.cuh"
#include "robustagg/norms.h"
#include "robustagg/pairwise.h"
#include "robustagg/repeated_median.h"
#include "robustagg/sign_vote.h"
#include "robustagg/trimmed_mean.h"

namespace ra = robustagg;
namespace dm = robustagg::device_math;

// --- selftest kernels ----------------------------------------------------------

__global__ void barrier_in_branch(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void barrier_after_exit(int* out) {
  if (threadIdx.x == 3) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void two_barriers(int* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}
__global__ void partial_shuffle(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 31) v = __shfl_sync(0xffffffffu, v, 0);
  out[threadIdx.x] = v;
}
__global__ void shuffle_without_lanes(int* out) {  // launched with 16 threads
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}
__global__ void broken_invariant(int* out) {  // thread 5 of block 1 finds its invariant false
  out[threadIdx.x] = 1;
  ROBUSTAGG_KERNEL_INVARIANT(!(blockIdx.x == 1 && threadIdx.x == 5), "five is not allowed");
}
__global__ void empty_kernel(int*) {}
__global__ void racy_neighbour(int* out) {  // no barrier between the write and the read
  __shared__ int s[64];
  s[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}
__global__ void block_sum(const int* in, int* out) {  // correct: shared tree, then a warp shuffle
  __shared__ int s[256];
  s[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half >= 32; half /= 2) {
    if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x < 32) {
    int v = s[threadIdx.x];
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
  }
}

template <auto Kernel, typename... Args>
void report(const char* name, dim3 grid, dim3 block, size_t smem, Args... args) {
  try {
    dm::launch<Kernel>(grid, block, smem, nullptr, args...);
    std::printf("%s: ok\n", name);
  } catch (const std::exception& e) {
    std::printf("%s: %s\n", name, e.what());
  }
}

int selftest() {
  std::vector<int> out(1024, 0);
  report<barrier_in_branch>("barrier_in_branch", dim3(2), dim3(32), 0, out.data());
  report<barrier_after_exit>("barrier_after_exit", dim3(1), dim3(64), 0, out.data());
  report<two_barriers>("two_barriers", dim3(1), dim3(32), 0, out.data());
  report<partial_shuffle>("partial_shuffle", dim3(1), dim3(32), 0, out.data());
  report<shuffle_without_lanes>("shuffle_without_lanes", dim3(1), dim3(16), 0, out.data());
  report<broken_invariant>("broken_invariant", dim3(2), dim3(32), 0, out.data());
  report<empty_kernel>("block_too_large", dim3(1), dim3(2048), 0, out.data());
  report<empty_kernel>("grid_y_too_large", dim3(1, 70000), dim3(32), 0, out.data());
  report<empty_kernel>("dynamic_shared_too_large", dim3(1), dim3(32), 64 * 1024, out.data());
  report<empty_kernel>("after_an_error", dim3(1), dim3(32), 0, out.data());  // errors are not sticky past a check
  for (int schedule = 0; schedule < 3; ++schedule) {
    ra::emu::set_schedule(static_cast<ra::emu::Schedule>(schedule), 7);
    report<racy_neighbour>("racy_neighbour", dim3(1), dim3(64), 0, out.data());
    long sum = 0;
    for (int i = 0; i < 64; ++i) sum = sum * 31 + out[i];
    std::printf("racy_neighbour schedule %d: %ld\n", schedule, sum);
    std::vector<int> in(256 * 3), sums(3, 0);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 97) - 40;
    report<block_sum>("block_sum", dim3(3), dim3(256), 0, static_cast<const int*>(in.data()), sums.data());
    std::printf("block_sum schedule %d: %d %d %d\n", schedule, sums[0], sums[1], sums[2]);
  }
  return 0;
}

// --- ops -----------------------------------------------------------------------

// A buffer of exactly `bytes` bytes on the heap (ASan: its own redzones).
struct Buffer {
  std::vector<unsigned char>* v;
  explicit Buffer(size_t bytes) : v(new std::vector<unsigned char>(bytes)) {}
  ~Buffer() { delete v; }
  void* data() { return v->empty() ? nullptr : v->data(); }
  uint64_t hash() const {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : *v) h = (h ^ c) * 1099511628211ull;
    return h;
  }
};

uint64_t g_state = 88172645463325252ull;
double next_value() {  // xorshift64, values in [-2, 2) with ties (quarters)
  g_state ^= g_state << 13;
  g_state ^= g_state >> 7;
  g_state ^= g_state << 17;
  return static_cast<double>(static_cast<int64_t>(g_state % 16) - 8) / 4.0 + static_cast<double>(g_state % 1000) * 1e-4;
}

void fill(Buffer& b, ra::DType dtype, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double x = next_value();
    if (dtype == ra::DType::Float64) static_cast<double*>(b.data())[i] = x;
    else static_cast<float*>(b.data())[i] = static_cast<float>(x);
  }
}

void print(const char* op, int64_t K, int64_t d, ra::DType dtype, std::initializer_list<const Buffer*> outs) {
  std::printf("%s %ld %ld %s", op, static_cast<long>(K), static_cast<long>(d),
              dtype == ra::DType::Float64 ? "f64" : "f32");
  for (const Buffer* b : outs) std::printf(" %016llx", static_cast<unsigned long long>(b->hash()));
  std::printf("\n");
}

int run_ops(int schedule) {
  ra::emu::set_schedule(static_cast<ra::emu::Schedule>(schedule), 12345);
  for (ra::DType dtype : {ra::DType::Float32, ra::DType::Float64}) {
    const size_t vb = dtype == ra::DType::Float64 ? 8 : 4;
    for (int64_t K : {1, 2, 3, 5, 17, 33, 40, 70, 110, 120, 129, 130}) {
      for (int64_t d : {1, 7, 300}) {
        g_state = 88172645463325252ull + static_cast<uint64_t>(K * 1000 + d);
        Buffer u(K * d * vb);
        fill(u, dtype, static_cast<size_t>(K * d));
        Buffer w(K * sizeof(double));
        // Weights differ from call to call: a block reading shared memory that
        // another thread has not written yet (a removed barrier) must not find
        // the previous launch's equal value there.
        for (int64_t k = 0; k < K; ++k) static_cast<double*>(w.data())[k] = static_cast<double>(k + 1 + d);
        {
          Buffer votes(d * 4), weighted(d * vb), mean(d * vb), flipped(8);
          dm::sign_vote(u.data(), dtype, K, d, nullptr, votes.data(), nullptr);
          dm::sign_vote(u.data(), dtype, K, d, static_cast<double*>(w.data()), weighted.data(), nullptr);
          dm::robust_lr_mean(u.data(), dtype, K, d, 1.0, static_cast<double*>(w.data()), mean.data(),
                             static_cast<int64_t*>(flipped.data()), nullptr);
          print("sign", K, d, dtype, {&votes, &weighted, &mean, &flipped});
        }
        {
          // ROBUSTAGG_DRIVER_SHORT=1: one value too few for the trimmed mean (the
          // AddressSanitizer test's proof that an overflow would be seen).
          const size_t short_by = std::getenv("ROBUSTAGG_DRIVER_SHORT") && d > 1 ? vb : 0;
          Buffer ws(dm::order_workspace_bytes(dtype, K, d)), tm(d * vb - short_by), med(d * vb), mtm(d * vb),
              cmm(d * vb);
          const int64_t trim = (K - 1) / 2;
          dm::trimmed_mean(u.data(), dtype, K, d, trim, tm.data(), ws.data(), nullptr);
          dm::median(u.data(), dtype, K, d, med.data(), ws.data(), nullptr);
          dm::masked_trimmed_mean(u.data(), dtype, K, d, 0.4, trim > 0 ? trim - 1 : 0, mtm.data(), ws.data(), nullptr);
          dm::closest_to_median_mean(u.data(), dtype, K, d, trim / 2, cmm.data(), ws.data(), nullptr);
          print("order", K, d, dtype, {&tm, &med, &mtm, &cmm});
        }
        {
          Buffer ws(dm::residual_workspace_bytes(dtype, K, d)), slope(d * vb), icept(d * vb), cw(K * vb),
              agg(d * vb), sums(K * sizeof(double));
          dm::repeated_median_line(u.data(), dtype, K, d, ra::InterceptMode::Siegel, slope.data(), icept.data(),
                                   ws.data(), nullptr);
          dm::residual_reweight(u.data(), dtype, K, d, 2.0, 0.1, 1.0, ra::InterceptMode::Siegel, cw.data(),
                                agg.data(), ws.data(), nullptr);
          dm::residual_client_sums(u.data(), dtype, K, d, 2.0, 0.1, ra::InterceptMode::Median,
                                   static_cast<double*>(sums.data()), ws.data(), nullptr);
          print("residual", K, d, dtype, {&slope, &icept, &cw, &agg, &sums});
        }
        {
          Buffer ws(dm::pairwise_workspace_bytes(dtype, K, d)), dist(K * K * vb), gram(K * K * vb),
              cos(K * K * vb), dist64(K * K * 8), gram64(K * K * 8), norms(K * 8),
              nws(dm::norms_workspace_bytes(K, d)), point(d * vb);
          fill(point, dtype, static_cast<size_t>(d));
          dm::pairwise_stats(u.data(), dtype, K, d, dist.data(), gram.data(), ws.data(), nullptr);
          dm::cosine_similarity(u.data(), dtype, K, d, cos.data(), ws.data(), nullptr);
          dm::pairwise_stats_f64(u.data(), dtype, K, d, static_cast<double*>(dist64.data()),
                                 static_cast<double*>(gram64.data()), false, nullptr, ws.data(), nullptr);
          dm::sq_distances_to(u.data(), dtype, K, d, point.data(), static_cast<double*>(norms.data()), nws.data(),
                              nullptr);
          print("pairwise", K, d, dtype, {&dist, &gram, &cos, &dist64, &gram64, &norms});
        }
      }
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "selftest") return selftest();
    if (mode == "ops" && argc > 2) return run_ops(std::atoi(argv[2]));
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: driver selftest | driver ops <schedule 0|1|2>\n");
  return 2;
}
