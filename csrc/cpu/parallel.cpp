// A small persistent thread pool. Work is handed out as task indices through
// an atomic counter; which thread runs a task never affects results because
// tasks own disjoint outputs (see common.h).
#include "robustagg/common.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <vector>

namespace robustagg {
namespace {

thread_local bool t_inside_pool = false;

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int size() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(workers_.size());
  }

  // Returns false when the pool is busy with another caller.
  bool run(int64_t n_tasks, int n_threads, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    const int helpers = n_threads - 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < helpers)
        workers_.emplace_back([this] { worker_loop(); });
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      active_helpers_ = helpers;
      pending_helpers_ = helpers;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    t_inside_pool = true;
    drain();
    t_inside_pool = false;
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_helpers_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void drain() {
    for (;;) {
      const int64_t task = next_.fetch_add(1);
      if (task >= n_tasks_) return;
      try {
        (*fn_)(task);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);
      }
    }
  }

  void worker_loop() {
    t_inside_pool = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (generation_ != seen && active_helpers_ > 0); });
        if (stop_) return;
        seen = generation_;
        --active_helpers_;  // claim one helper slot of this generation
      }
      drain();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_helpers_ == 0) done_cv_.notify_all();
      }
    }
  }

  std::mutex busy_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_helpers_ = 0;
  int pending_helpers_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The pool is leaked on purpose (no join at interpreter exit). After fork()
// the child has none of the parent's workers (only the forking thread is
// copied) and the pool's mutexes may be held by threads that no longer exist,
// so the child starts a new pool and leaks the old one without touching it
// (DataLoader workers and multiprocessing's 'fork' call kernels after a fork).
std::atomic<Pool*> g_pool{nullptr};

void fresh_pool_after_fork() { g_pool.store(new Pool()); }

Pool& pool() {
  static const bool registered = [] {
    g_pool.store(new Pool());
    pthread_atfork(nullptr, nullptr, &fresh_pool_after_fork);
    return true;
  }();
  (void)registered;
  return *g_pool.load();
}

}  // namespace

void parallel_for(int64_t n_tasks, int num_threads, const std::function<void(int64_t)>& fn) {
  if (n_tasks <= 0) return;
  int n_threads = num_threads < 1 ? 1 : num_threads;
  if (n_threads > n_tasks) n_threads = static_cast<int>(n_tasks);
  if (n_threads > 1 && !t_inside_pool && pool().run(n_tasks, n_threads, fn)) return;
  for (int64_t t = 0; t < n_tasks; ++t) fn(t);
}

int pool_size() { return pool().size(); }

}  // namespace robustagg
