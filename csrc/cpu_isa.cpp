// Which copy of the CPU kernels runs (robustagg/cpu_isa.h). Compiled for
// baseline x86-64 in every build.
#include "robustagg/cpu_isa.h"

#include <atomic>
#include <stdexcept>
#include <string>

namespace robustagg {
namespace {

// __builtin_cpu_supports reads CPUID and, for AVX and AVX-512, whether the
// OS saves the wider registers (XGETBV), as libgcc's cpu model does.
bool detect(CpuIsa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  switch (isa) {
    case CpuIsa::Base: return true;
    case CpuIsa::Avx2: return avx2;
    case CpuIsa::Avx512: return avx512;
  }
  return false;
#else
  return isa == CpuIsa::Base;
#endif
}

CpuIsa best() {
  for (int i = kCpuIsaCount - 1; i > 0; --i)
    if (cpu_isa_built(static_cast<CpuIsa>(i)) && cpu_isa_supported(static_cast<CpuIsa>(i)))
      return static_cast<CpuIsa>(i);
  return CpuIsa::Base;
}

std::atomic<int>& chosen() {
  static std::atomic<int> isa{static_cast<int>(best())};
  return isa;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Base: return "x86-64";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

bool cpu_isa_supported(CpuIsa isa) {
  static const bool ok[kCpuIsaCount] = {detect(CpuIsa::Base), detect(CpuIsa::Avx2), detect(CpuIsa::Avx512)};
  const int i = static_cast<int>(isa);
  return i >= 0 && i < kCpuIsaCount && ok[i];
}

bool cpu_isa_built(CpuIsa isa) {
#if ROBUSTAGG_CPU_DISPATCH
  const int i = static_cast<int>(isa);
  return i >= 0 && i < kCpuIsaCount;
#else
  (void)isa;
  return false;
#endif
}

CpuIsa cpu_isa() { return static_cast<CpuIsa>(chosen().load(std::memory_order_relaxed)); }

void set_cpu_isa(CpuIsa isa) {
  const std::string name = cpu_isa_name(isa);
  if (!cpu_isa_built(isa))
    throw std::invalid_argument("robustagg: this build has no " + name +
                                " copy of the CPU kernels (it was built with ROBUSTAGG_MARCH)");
  if (!cpu_isa_supported(isa))
    throw std::invalid_argument("robustagg: this CPU cannot run the " + name + " copy of the CPU kernels");
  chosen().store(static_cast<int>(isa), std::memory_order_relaxed);
}

}  // namespace robustagg
