// Element types of `updates` and their exact conversion to the value type of
// the arithmetic (float for float16/bfloat16/float32, double for float64).
#pragma once

#include "robustagg/math/hd.h"

namespace robustagg {

// Element type of `updates`, as passed from Python. Keep in sync with ops.py.
enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

namespace math {

// IEEE binary16 -> binary32, exact (subnormals, inf and NaN included).
ROBUSTAGG_HD inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa
  const uint32_t exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;                                // re-bias the exponent
  if (exp == 0x0f800000u) {
    o += (128u - 16u) << 23;                              // inf / NaN
  } else if (exp == 0) {
    o += 1u << 23;                                        // subnormal: renormalise
    const float f = bits_to_float(o) - bits_to_float(113u << 23);
    return bits_to_float(float_to_bits(f) | sign);
  }
  return bits_to_float(o | sign);
}

ROBUSTAGG_HD inline float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// Value type used for comparisons and per-coordinate arithmetic.
template <typename T> struct Traits;
template <> struct Traits<float>    { using val_t = float;  };
template <> struct Traits<double>   { using val_t = double; };
template <> struct Traits<Half>     { using val_t = float;  };
template <> struct Traits<BFloat16> { using val_t = float;  };

ROBUSTAGG_HD inline float load(const float* p) { return *p; }
ROBUSTAGG_HD inline double load(const double* p) { return *p; }
ROBUSTAGG_HD inline float load(const Half* p) { return half_to_float(p->bits); }
ROBUSTAGG_HD inline float load(const BFloat16* p) { return bf16_to_float(p->bits); }

}  // namespace math
}  // namespace robustagg
