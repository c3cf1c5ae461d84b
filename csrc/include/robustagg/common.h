// Shared plumbing of the CPU core: dtype dispatch, fixed work decomposition
// and the thread pool. Torch-free by design (see docs/design.md).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "robustagg/math/load.h"

namespace robustagg {

// Element types and their exact loads are shared with the device code.
using math::load;
using math::Traits;

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
