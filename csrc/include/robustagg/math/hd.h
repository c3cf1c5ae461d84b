// One macro for code shared by the CPU kernels, and the CUDA kernels, on the GPU
// or emulated on the CPU (see docs/design.md, "Device code: written once, run on the CPU").
//
// ROBUSTAGG_HD marks a function callable from host and device code:
// `__host__ __device__` under nvcc, nothing under a plain C++ compiler. Code
// behind it uses no CUDA-only construct and no std:: facility that the device
// lacks (no allocation, no std::sort, no exceptions); the few places where
// exact arithmetic needs different spellings on the two sides are behind
// ROBUSTAGG_DEVICE_PASS (true while nvcc compiles device code) and say why.
#pragma once

#include <cstdint>
#include <cstring>
#include <math.h>

#if defined(__CUDACC__)
#define ROBUSTAGG_HD __host__ __device__
#else
#define ROBUSTAGG_HD
#endif

#if defined(__CUDA_ARCH__)
#define ROBUSTAGG_DEVICE_PASS 1
#else
#define ROBUSTAGG_DEVICE_PASS 0
#endif

// Full unrolling of loops whose trip count is a compile-time constant.
#if defined(__CUDACC__) || defined(__clang__)
#define ROBUSTAGG_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ROBUSTAGG_UNROLL _Pragma("GCC unroll 64")
#else
#define ROBUSTAGG_UNROLL
#endif

// Partial unrolling by 4 of the loops over clients (loads in flight on the device).
#if defined(__CUDACC__) || defined(__clang__)
#define ROBUSTAGG_UNROLL4 _Pragma("unroll 4")
#elif defined(__GNUC__)
#define ROBUSTAGG_UNROLL4 _Pragma("GCC unroll 4")
#else
#define ROBUSTAGG_UNROLL4
#endif

namespace robustagg {
namespace math {

ROBUSTAGG_HD inline float bits_to_float(uint32_t u) {
#if ROBUSTAGG_DEVICE_PASS
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

ROBUSTAGG_HD inline uint32_t float_to_bits(float f) {
#if ROBUSTAGG_DEVICE_PASS
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

ROBUSTAGG_HD inline uint64_t double_to_bits(double x) {
#if ROBUSTAGG_DEVICE_PASS
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return u;
#endif
}

ROBUSTAGG_HD inline double bits_to_double(uint64_t u) {
#if ROBUSTAGG_DEVICE_PASS
  return __longlong_as_double(static_cast<long long>(u));
#else
  double x;
  std::memcpy(&x, &u, 8);
  return x;
#endif
}

// Order keys: unsigned integers whose order is the values' (for values that
// are not NaN): the sign bit set for a positive sign, every bit flipped for a
// negative one. -0.0 comes just below +0.0, a refinement of the values'
// order (a selection by key gives a value equal to the selection by value,
// but for the sign of a zero); callers that need the two zeros tied add +0.0
// first. The inverses give the value back.
ROBUSTAGG_HD inline uint32_t float_order_key(float x) {
  const uint32_t u = float_to_bits(x);
  return (u >> 31) ? ~u : u | 0x80000000u;
}
ROBUSTAGG_HD inline float float_of_order_key(uint32_t k) { return bits_to_float((k >> 31) ? k & 0x7fffffffu : ~k); }
ROBUSTAGG_HD inline uint64_t double_order_key(double x) {
  const uint64_t u = double_to_bits(x);
  return (u >> 63) ? ~u : u | (uint64_t(1) << 63);
}
ROBUSTAGG_HD inline double double_of_order_key(uint64_t k) {
  return bits_to_double((k >> 63) ? k & ~(uint64_t(1) << 63) : ~k);
}

// n as a double, exactly, for 0 <= n < 2^31, without a conversion
// instruction (a quarter-rate pipe on the device): the double whose bits are
// 2^52's with n in the low word is 2^52 + n; one subtraction leaves n.
ROBUSTAGG_HD inline double small_int_to_double(int32_t n) {
#if ROBUSTAGG_DEVICE_PASS
  return __hiloint2double(0x43300000, n) - 0x1p52;
#else
  const uint64_t u = (uint64_t(0x43300000) << 32) | static_cast<uint32_t>(n);
  double x;
  std::memcpy(&x, &u, 8);
  return x - 0x1p52;
#endif
}

template <typename V> ROBUSTAGG_HD inline bool is_nan(V x) { return x != x; }
// x * 0 is NaN exactly when x is infinite or NaN.
template <typename V> ROBUSTAGG_HD inline bool is_finite(V x) { return (x * V(0)) == (x * V(0)); }
template <typename V> ROBUSTAGG_HD inline V abs_value(V x) { return x < V(0) ? -x : x; }
ROBUSTAGG_HD inline double sqrt_rn(double x) { return ::sqrt(x); }  // IEEE on both sides
ROBUSTAGG_HD inline double pow_d(double x, double y) { return ::pow(x, y); }
// x y + z rounded once: the device's instruction, the CPU's (or libm's, which
// uses the instruction where the CPU has it) elsewhere.
ROBUSTAGG_HD inline double fma_d(double x, double y, double z) { return ::fma(x, y, z); }
template <typename V> ROBUSTAGG_HD inline V infinity_of();
template <> ROBUSTAGG_HD inline float infinity_of<float>() { return bits_to_float(0x7f800000u); }
template <> ROBUSTAGG_HD inline double infinity_of<double>() { return double(bits_to_float(0x7f800000u)); }
template <typename V> ROBUSTAGG_HD inline V quiet_nan() { return V(bits_to_float(0x7fc00000u)); }

// Element k of a column: registers, a per-thread buffer, or a [K, cols]
// scratch in which consecutive threads own consecutive columns (stride = cols,
// so that the accesses of a warp are coalesced).
template <typename V> struct Strided {
  V* p;
  int64_t stride;
  ROBUSTAGG_HD V& operator[](int64_t k) const { return p[k * stride]; }
};

}  // namespace math
}  // namespace robustagg
