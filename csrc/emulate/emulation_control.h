// The knobs of the CUDA emulation that bindings.cpp exposes to the tests
// (declared in cuda_emulation.h, which only the emulated .cu files include:
// it defines CUDA's keywords as macros).
#pragma once

#include <cstdint>

namespace robustagg {
namespace emu {

enum class Schedule : int { InOrder = 0, Reversed = 1, Shuffled = 2 };
void set_schedule(Schedule schedule, uint64_t seed);
Schedule schedule();
uint64_t schedule_seed();
int64_t& max_grid_blocks();

}  // namespace emu
}  // namespace robustagg
