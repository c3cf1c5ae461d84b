// The CPU kernels' instruction sets. A default (portable) build compiles the
// kernels of csrc/cpu three times, for baseline x86-64, AVX2 (x86-64 + AVX2,
// FMA, BMI1/2, F16C) and AVX-512 (+ F, CD, BW, DQ, VL), each copy under its
// own names (setup.py renames robustagg::cpu to robustagg::cpu_<isa> and
// makes every other symbol of the copy local, so no inline function compiled
// for one set can serve another); the first call picks the best set this
// CPU and its OS support. A ROBUSTAGG_MARCH build (e.g. "native") compiles
// them once, with that -march, under robustagg::cpu.
#pragma once

#include "robustagg/norms.h"
#include "robustagg/pairwise.h"
#include "robustagg/repeated_median.h"
#include "robustagg/sign_vote.h"
#include "robustagg/trimmed_mean.h"

namespace robustagg {

enum class CpuIsa : int { Base = 0, Avx2 = 1, Avx512 = 2 };
constexpr int kCpuIsaCount = 3;

// "x86-64", "avx2", "avx512".
const char* cpu_isa_name(CpuIsa isa);
// Whether this CPU and its OS can run code compiled for `isa`.
bool cpu_isa_supported(CpuIsa isa);
// Whether this build holds a copy of the kernels for `isa` (all three in a
// portable build, none in a ROBUSTAGG_MARCH build).
bool cpu_isa_built(CpuIsa isa);
// The copy in use: the best one built and supported, unless set_cpu_isa chose.
CpuIsa cpu_isa();
// Chooses a copy (tests, and ROBUSTAGG_CPU_ISA); throws std::invalid_argument
// when it is not built or this CPU cannot run it.
void set_cpu_isa(CpuIsa isa);

#if ROBUSTAGG_CPU_DISPATCH
#define ROBUSTAGG_CPU_API                                                                      \
  ROBUSTAGG_SIGN_VOTE_CPU_API ROBUSTAGG_TRIMMED_MEAN_CPU_API ROBUSTAGG_REPEATED_MEDIAN_CPU_API \
      ROBUSTAGG_PAIRWISE_CPU_API ROBUSTAGG_NORMS_CPU_API
namespace cpu_base { ROBUSTAGG_CPU_API }
namespace cpu_avx2 { ROBUSTAGG_CPU_API }
namespace cpu_avx512 { ROBUSTAGG_CPU_API }
// The chosen copy of kernel `fn` (all copies have one signature).
#define ROBUSTAGG_CPU(fn)                                                           \
  (::robustagg::cpu_isa() == ::robustagg::CpuIsa::Avx512 ? ::robustagg::cpu_avx512::fn \
   : ::robustagg::cpu_isa() == ::robustagg::CpuIsa::Avx2 ? ::robustagg::cpu_avx2::fn   \
                                                         : ::robustagg::cpu_base::fn)
#else
#define ROBUSTAGG_CPU(fn) ::robustagg::cpu::fn
#endif

}  // namespace robustagg
