// The runtime of the CUDA emulation (cuda_emulation.h): grids, blocks of
// fibers, barriers, warp shuffles, schedules and the checks that report a
// bad launch or a divergent barrier as an error naming the kernel.
//
// A block is run by the Runner of the OS thread that took it: one fiber per
// CUDA thread (own stack, reused across blocks), and a scheduler
// loop that runs every runnable fiber, in the schedule's order, until it
// blocks (barrier, shuffle) or returns; then releases the warps whose lanes
// all wait at one shuffle; then, when every live thread waits at one barrier,
// releases the barrier and starts the next phase. Anything else is a
// divergence and stops the block.
#include "cuda_emulation.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "robustagg/common.h"

// Fibers: on x86-64 a switch is the callee-saved registers, the SSE/x87
// control words and the stack pointer (a few nanoseconds; ucontext's
// swapcontext makes two system calls per switch). Elsewhere, and under
// AddressSanitizer (which follows swapcontext's stacks), ucontext.
#if defined(__SANITIZE_ADDRESS__)
#define ROBUSTAGG_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ROBUSTAGG_EMU_ASAN 1
#endif
#endif
#if defined(__x86_64__) && !defined(ROBUSTAGG_EMU_ASAN)
#define ROBUSTAGG_EMU_ASM_SWITCH 1
// robustagg_emu_switch(save, to): saves this context's stack pointer in *save
// and resumes the context whose stack pointer is `to`.
extern "C" void robustagg_emu_switch(void** save, void* to);
asm(R"(
  .text
  .p2align 4
  .globl robustagg_emu_switch
  .hidden robustagg_emu_switch
  .type robustagg_emu_switch, @function
robustagg_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size robustagg_emu_switch, .-robustagg_emu_switch
)");
#endif

namespace robustagg {
namespace emu {

thread_local const BlockState* t_block = nullptr;
thread_local const uint3* t_thread_idx = nullptr;

namespace {

constexpr int kWarp = 32;
// sm_80 / sm_90 limits of a launch (the stricter of the two where they differ).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimX = 2147483647u;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr size_t kMaxDefaultDynamicShared = 48 << 10;  // more needs cudaFuncSetAttribute (not used here)

// Fiber stacks: kernels keep per-thread state in registers (a few hundred
// bytes); the stack also holds the runtime's frames. Reserved, not committed:
// pages are touched on use. A guard page below each catches an overflow.
constexpr size_t kStackBytes = size_t(256) << 10;

std::atomic<int> g_schedule{0};
std::atomic<uint64_t> g_seed{0};

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_message;

#if defined(ROBUSTAGG_EMU_ASM_SWITCH)
struct Context {
  void* sp = nullptr;
};
// A new context that starts in start() on the stack [lo, lo + size): the
// frame robustagg_emu_switch pops (control words, six registers, the return
// address), aligned as if start had been called.
void context_init(Context& c, char* lo, size_t size, void (*start)()) {
  void** sp = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(lo + size) & ~uintptr_t(15));
  *--sp = nullptr;                             // start's return address slot: it never returns
  *--sp = reinterpret_cast<void*>(start);      // popped by ret
  for (int r = 0; r < 6; ++r) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  uint32_t csr[2] = {0, 0};
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
  uint64_t word;
  std::memcpy(&word, csr, 8);
  *--sp = reinterpret_cast<void*>(word);
  c.sp = sp;
}
inline void context_switch(Context& from, Context& to) { robustagg_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
void context_init(Context& c, char* lo, size_t size, void (*start)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = lo;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;  // start() never returns: it switches back for good
  makecontext(&c.uc, start, 0);
}
inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum class State { Runnable, Barrier, Shuffle, Done };

struct Fiber {
  Context ctx;
  uint3 idx;
  State state;
  const char* file;
  int line;
  unsigned mask;
  ShuffleKind kind;
  int arg, width;
  uint64_t value, result;
};

struct Grid {
  const char* kernel;
  void (*body)(void*);
  void* closure;
  dim3 grid, block;
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string error;
  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu);
    if (!failed.load()) error = message;
    failed.store(true);
  }
};

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string where(const char* file, int line) {
  std::string f = file ? file : "?";
  const size_t slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || (f1 && f2 && std::strcmp(f1, f2) == 0));
}

std::string coords(uint3 v) {
  return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}

class Runner {
 public:
  ~Runner() {
    for (char* s : stacks_) munmap(s, kStackBytes + page());
  }

  // Runs block `bidx` of grid g; false (with g failed) on a divergence.
  void run_block(Grid& g, uint3 bidx, uint64_t linear_block) {
    const int n = static_cast<int>(g.block.x * g.block.y * g.block.z);
    ensure(n);
    grid_ = &g;
    state_.block_idx = bidx;
    state_.block_dim = g.block;
    state_.grid_dim = g.grid;
    block_error_.clear();
    for (int i = 0; i < n; ++i) {
      Fiber& f = fibers_[i];
      f.idx = uint3{i % g.block.x, (i / g.block.x) % g.block.y, i / (g.block.x * g.block.y)};
      f.state = State::Runnable;
      context_init(f.ctx, stacks_[i] + page(), kStackBytes, &Runner::entry);
    }
    const BlockState* saved_block = t_block;
    const uint3* saved_idx = t_thread_idx;
    t_block = &state_;
    std::vector<int> order(n);
    for (uint64_t phase = 0;; ++phase) {
      make_order(order, linear_block, phase);
      for (;;) {
        for (const int i : order)
          if (fibers_[i].state == State::Runnable) resume(i);
        if (!block_error_.empty() || !release_shuffles(n)) break;
        if (!any_runnable(n)) break;
      }
      if (!block_error_.empty()) break;
      if (release_barrier(n, phase)) continue;
      break;  // every thread returned, or a divergence was recorded
    }
    t_block = saved_block;
    t_thread_idx = saved_idx;
    if (!block_error_.empty())
      g.fail(std::string(g.kernel) + ", block " + coords(bidx) + ": " + block_error_);
  }

  // Called on a fiber: yield to the scheduler until released.
  void wait_barrier(const char* file, int line) {
    Fiber& f = fibers_[current_];
    f.state = State::Barrier;
    f.file = file;
    f.line = line;
    yield(f);
  }

  uint64_t wait_shuffle(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width, const char* file,
                        int line) {
    Fiber& f = fibers_[current_];
    f.state = State::Shuffle;
    f.mask = mask;
    f.value = bits;
    f.kind = kind;
    f.arg = arg;
    f.width = width;
    f.file = file;
    f.line = line;
    yield(f);
    return f.result;
  }

  void fail_invariant(const char* what, const char* file, int line) {
    const uint3 b = state_.block_idx;
    grid_->fail(std::string(grid_->kernel) + ", block " + coords(b) + ", thread " + coords(fibers_[current_].idx) +
                ": " + what + " at " + where(file, line));
  }

  static Runner& of_this_thread() {
    thread_local Runner runner;
    return runner;
  }

 private:
  static size_t page() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
  }

  void ensure(int n) {
    if (static_cast<int>(fibers_.size()) < n) fibers_.resize(n);
    while (static_cast<int>(stacks_.size()) < n) {
      void* p = mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      mprotect(p, page(), PROT_NONE);  // guard page: the stack grows down into it
      stacks_.push_back(static_cast<char*>(p));
    }
  }

  [[noreturn]] static void entry() {
    Runner& r = of_this_thread();
    r.grid_->body(r.grid_->closure);
    Fiber& f = r.fibers_[r.current_];
    f.state = State::Done;
    context_switch(f.ctx, r.scheduler_);  // never resumed
    __builtin_unreachable();
  }

  void resume(int i) {
    current_ = i;
    t_thread_idx = &fibers_[i].idx;
    context_switch(scheduler_, fibers_[i].ctx);
    current_ = -1;
  }

  void yield(Fiber& f) { context_switch(f.ctx, scheduler_); }

  bool any_runnable(int n) const {
    for (int i = 0; i < n; ++i)
      if (fibers_[i].state == State::Runnable) return true;
    return false;
  }

  void make_order(std::vector<int>& order, uint64_t linear_block, uint64_t phase) const {
    const int n = static_cast<int>(order.size());
    const Schedule s = static_cast<Schedule>(g_schedule.load());
    for (int i = 0; i < n; ++i) order[i] = s == Schedule::Reversed ? n - 1 - i : i;
    if (s == Schedule::Shuffled) {  // Fisher-Yates from (seed, block, phase): any host thread, same order
      uint64_t x = splitmix(g_seed.load() ^ splitmix(linear_block ^ splitmix(phase)));
      for (int i = n - 1; i > 0; --i) {
        x = splitmix(x);
        std::swap(order[i], order[static_cast<int>(x % static_cast<uint64_t>(i + 1))]);
      }
    }
  }

  std::string describe(int lane) const {
    const Fiber& f = fibers_[lane];
    switch (f.state) {
      case State::Done: return "thread " + coords(f.idx) + " has exited";
      case State::Barrier: return "thread " + coords(f.idx) + " waits at __syncthreads() at " + where(f.file, f.line);
      case State::Shuffle: return "thread " + coords(f.idx) + " waits at a shuffle at " + where(f.file, f.line);
      default: return "thread " + coords(f.idx) + " is running";
    }
  }

  // Completes every warp whose lanes all wait at one shuffle. False (with a
  // block error) when a warp has lanes at a shuffle that cannot complete.
  bool release_shuffles(int n) {
    for (int w0 = 0; w0 < n; w0 += kWarp) {
      int first = -1;
      for (int l = w0; l < std::min(n, w0 + kWarp); ++l)
        if (fibers_[l].state == State::Shuffle) { first = l; break; }
      if (first < 0) continue;
      const Fiber& a = fibers_[first];
      const std::string site = "shuffle at " + where(a.file, a.line) + " with mask 0x";
      char mask_hex[16];
      std::snprintf(mask_hex, sizeof mask_hex, "%08x", a.mask);
      for (int lane = 0; lane < kWarp; ++lane) {
        if (!(a.mask >> lane & 1u)) continue;
        const int t = w0 + lane;
        if (t >= n) {
          block_error_ = site + mask_hex + ": lane " + std::to_string(lane) + " of warp " + std::to_string(w0 / kWarp) +
                         " does not exist (the block has " + std::to_string(n) + " threads)";
          return false;
        }
        const Fiber& f = fibers_[t];
        if (f.state != State::Shuffle || !same_site(f.file, f.line, a.file, a.line) || f.mask != a.mask) {
          block_error_ = site + mask_hex + " not executed by every lane of the mask: " + describe(t);
          return false;
        }
      }
      for (int lane = 0; lane < kWarp; ++lane) {
        if (!(a.mask >> lane & 1u)) continue;
        Fiber& f = fibers_[w0 + lane];
        const int width = f.width, base = lane / width * width, in = lane % width;
        int src = lane;
        switch (f.kind) {
          case ShuffleKind::Index: src = base + (f.arg % width + width) % width; break;
          case ShuffleKind::Up: src = in >= f.arg ? lane - f.arg : lane; break;
          case ShuffleKind::Down: src = in + f.arg < width ? lane + f.arg : lane; break;
          case ShuffleKind::Xor: src = (lane ^ f.arg) < base + width && (lane ^ f.arg) >= base ? lane ^ f.arg : lane; break;
        }
        if (!(a.mask >> src & 1u)) {
          block_error_ = site + mask_hex + ": lane " + std::to_string(lane) + " reads lane " + std::to_string(src) +
                         ", which is not in the mask";
          return false;
        }
        f.result = fibers_[w0 + src].value;
      }
      for (int lane = 0; lane < kWarp; ++lane)
        if (a.mask >> lane & 1u) fibers_[w0 + lane].state = State::Runnable;
    }
    return true;
  }

  // With no thread runnable: true when all live threads wait at one barrier
  // (released: the next phase); false when all returned, or on a divergence.
  bool release_barrier(int n, uint64_t phase) {
    int done = 0, waiting = -1;
    for (int i = 0; i < n; ++i) {
      const Fiber& f = fibers_[i];
      if (f.state == State::Done) ++done;
      else if (f.state == State::Barrier && waiting < 0) waiting = i;
    }
    if (done == n) return false;
    const Fiber& a = fibers_[waiting < 0 ? 0 : waiting];
    const std::string site = "__syncthreads() at " + where(a.file, a.line);
    for (int i = 0; i < n; ++i) {
      const Fiber& f = fibers_[i];
      if (f.state == State::Barrier && same_site(f.file, f.line, a.file, a.line)) continue;
      block_error_ = "divergent barrier: " + site + " (phase " + std::to_string(phase) + ") is reached by thread " +
                     coords(a.idx) + " while " + describe(i);
      return false;
    }
    for (int i = 0; i < n; ++i) fibers_[i].state = State::Runnable;
    return true;
  }

  std::vector<Fiber> fibers_;
  std::vector<char*> stacks_;
  Context scheduler_;
  int current_ = -1;
  Grid* grid_ = nullptr;
  BlockState state_{};
  std::string block_error_;
};

void set_error(cudaError_t err, const std::string& message) {
  t_last_error = err;
  t_last_message = message;
}

int host_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace

void set_schedule(Schedule schedule, uint64_t seed) {
  g_schedule.store(static_cast<int>(schedule));
  g_seed.store(seed);
}
Schedule schedule() { return static_cast<Schedule>(g_schedule.load()); }
uint64_t schedule_seed() { return g_seed.load(); }

int64_t& max_grid_blocks() {
  static int64_t blocks = int64_t(1) << 20;
  return blocks;
}

void sync_threads(const char* file, int line) { Runner::of_this_thread().wait_barrier(file, line); }

void kernel_invariant_failed(const char* what, const char* file, int line) {
  Runner::of_this_thread().fail_invariant(what, file, line);
}

uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width, const char* file, int line) {
  return Runner::of_this_thread().wait_shuffle(mask, bits, kind, arg, width, file, line);
}

cudaError_t get_last_error(bool clear) {
  const cudaError_t err = t_last_error;
  if (clear) t_last_error = cudaSuccess;
  return err;
}

const char* error_string(cudaError_t err) {
  if (err == cudaSuccess) return "no error";
  return t_last_message.empty() ? "emulated CUDA error" : t_last_message.c_str();
}

std::mutex g_log_mutex;
std::map<std::string, LaunchRecord> g_log;

std::map<std::string, LaunchRecord> launch_log(bool clear) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::map<std::string, LaunchRecord> out = g_log;
  if (clear) g_log.clear();
  return out;
}

void run_grid(const char* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*),
              void* closure) {
  if (t_last_error != cudaSuccess) return;  // a sticky error: later launches do not run
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  std::string bad;
  if (threads == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    bad = "an empty grid or block";
  else if (threads > kMaxThreadsPerBlock || block.x > kMaxThreadsPerBlock || block.y > kMaxThreadsPerBlock ||
           block.z > kMaxBlockDimZ)
    bad = "block " + coords(uint3{block.x, block.y, block.z}) + " exceeds " + std::to_string(kMaxThreadsPerBlock) +
          " threads (z <= " + std::to_string(kMaxBlockDimZ) + ")";
  else if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ)
    bad = "grid " + coords(uint3{grid.x, grid.y, grid.z}) + " exceeds x <= 2^31 - 1, y, z <= 65535";
  else if (dynamic_shared_bytes > kMaxDefaultDynamicShared)
    bad = std::to_string(dynamic_shared_bytes) + " bytes of dynamic shared memory exceed 48 KB without an opt-in";
  if (!bad.empty()) {
    set_error(cudaErrorInvalidConfiguration, std::string(kernel) + ": invalid launch: " + bad);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    LaunchRecord& r = g_log[kernel];
    ++r.launches;
    r.max_threads = std::max<uint64_t>(r.max_threads, threads);
    r.max_dynamic_shared = std::max<uint64_t>(r.max_dynamic_shared, dynamic_shared_bytes);
  }
  Grid g;
  g.kernel = kernel;
  g.body = body;
  g.closure = closure;
  g.grid = grid;
  g.block = block;
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  parallel_for(static_cast<int64_t>(blocks), host_threads(), [&g](int64_t b) {
    if (g.failed.load(std::memory_order_relaxed)) return;
    const uint64_t lb = static_cast<uint64_t>(b);
    const uint3 bidx{static_cast<unsigned>(lb % g.grid.x), static_cast<unsigned>(lb / g.grid.x % g.grid.y),
                     static_cast<unsigned>(lb / (uint64_t(g.grid.x) * g.grid.y))};
    Runner::of_this_thread().run_block(g, bidx, lb);
  });
  if (g.failed.load()) set_error(cudaErrorLaunchFailure, g.error);
}

}  // namespace emu
}  // namespace robustagg
