// Shared plumbing of the native core: dtype codes, element loads, fixed work
// decomposition and the thread pool. Torch-free by design (see DESIGN.md).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace robustagg {

// Element type of `updates`, as passed from Python. Keep in sync with ops.py.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// IEEE binary16 -> binary32, exact (subnormals, inf and NaN included).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa
  const uint32_t exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;                                // re-bias the exponent
  if (exp == 0x0f800000u) {
    o += (128u - 16u) << 23;                              // inf / NaN
  } else if (exp == 0) {
    o += 1u << 23;                                        // subnormal: renormalise
    const float f = bits_to_float(o) - bits_to_float(113u << 23);
    uint32_t u; std::memcpy(&u, &f, 4);
    return bits_to_float(u | sign);
  }
  return bits_to_float(o | sign);
}

inline float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// Value type used for comparisons and per-coordinate arithmetic, and the
// accumulator type of sums over clients or coordinates. Sums are accumulated
// in double on the CPU for every input type: K values of 1e38 in float32 then
// average to a finite number instead of overflowing.
template <typename T> struct Traits;
template <> struct Traits<float>    { using val_t = float;  };
template <> struct Traits<double>   { using val_t = double; };
template <> struct Traits<Half>     { using val_t = float;  };
template <> struct Traits<BFloat16> { using val_t = float;  };

template <typename T> inline typename Traits<T>::val_t load(const T* p) { return *p; }
template <> inline float load<Half>(const Half* p) { return half_to_float(p->bits); }
template <> inline float load<BFloat16>(const BFloat16* p) { return bf16_to_float(p->bits); }

// Calls `body` with a null pointer of the element type named by `dtype`.
template <typename F> void dispatch_dtype(DType dtype, F&& body) {
  switch (dtype) {
    case DType::Float32:  body(static_cast<const float*>(nullptr)); break;
    case DType::Float64:  body(static_cast<const double*>(nullptr)); break;
    case DType::Float16:  body(static_cast<const Half*>(nullptr)); break;
    case DType::BFloat16: body(static_cast<const BFloat16*>(nullptr)); break;
    default: throw std::invalid_argument("robustagg: unknown dtype code " +
                                         std::to_string(static_cast<int>(dtype)));
  }
}

// Runs fn(task) for task in [0, n_tasks) on up to `num_threads` threads (the
// caller included). Tasks must write disjoint outputs: every reduction across
// tasks is done afterwards in task order, so results never depend on the
// thread count. Nested calls and calls made while another call holds the pool
// run serially on the calling thread (never oversubscribing).
void parallel_for(int64_t n_tasks, int num_threads, const std::function<void(int64_t)>& fn);

// Number of worker threads the pool has started so far (for native_info / tests).
int pool_size();

}  // namespace robustagg

namespace robustagg {

// Below this many element-operations a call runs on the calling thread: waking
// the pool would cost more than it saves.
constexpr int64_t kMinParallelWork = int64_t(1) << 15;

inline int threads_for(int64_t work, int num_threads) {
  return work < kMinParallelWork ? 1 : num_threads;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace robustagg
