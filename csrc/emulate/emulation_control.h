// The knobs of the CUDA emulation that bindings.cpp exposes to the tests
// (declared in cuda_emulation.h, which only the emulated .cu files include:
// it defines CUDA's keywords as macros).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace robustagg {
namespace emu {

enum class Schedule : int { InOrder = 0, Reversed = 1, Shuffled = 2 };
void set_schedule(Schedule schedule, uint64_t seed);
Schedule schedule();
uint64_t schedule_seed();
int64_t& max_grid_blocks();

// Every kernel launched since the last clear: how often, and its largest block
// and dynamic shared memory (tests set these beside ptxas's resource report).
struct LaunchRecord {
  uint64_t launches = 0;
  uint64_t max_threads = 0;
  uint64_t max_dynamic_shared = 0;
};
std::map<std::string, LaunchRecord> launch_log(bool clear);

}  // namespace emu
}  // namespace robustagg
