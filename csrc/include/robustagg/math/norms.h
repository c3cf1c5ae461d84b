// Per-coordinate math of the row statistics: each client's squared distance
// to a point (its squared norm when the point is null), summed in double.
// One definition for the CPU kernel, the CUDA threads (GPU or emulated), and
// one summation order, so the three agree bitwise:
//
//   row k is cut into segments of kNormSegment coordinates; in a segment,
//   lane l (l < kNormLanes) sums the coordinates s0 + l, s0 + l + kNormLanes,
//   ... in order; the lanes are added as a binary tree (lane i += lane
//   i + w for w = kNormLanes / 2, ..., 1); the segments in order.
//
// All terms are non-negative: the result is within ~1e-15 relative of the
// exact sum, for every input dtype (differences and squares in double; a
// float32 input cannot overflow them).
#pragma once

#include "robustagg/math/load.h"

namespace robustagg {
namespace math {

constexpr int kNormLanes = 256;               // lanes per segment = CUDA threads per block
constexpr int64_t kNormSegment = 1 << 16;     // coordinates per segment

// Segments of a row of d coordinates.
ROBUSTAGG_HD inline int64_t norm_segments(int64_t d) { return (d + kNormSegment - 1) / kNormSegment; }

// One term: (x - p)^2 in double, or x^2 without a point.
template <typename T>
ROBUSTAGG_HD inline double sq_dev(const T* row, const T* point, int64_t c) {
  const double x = static_cast<double>(load(row + c));
  const double t = point ? x - static_cast<double>(load(point + c)) : x;
  return t * t;
}

// Lane l's sum over [s0, s1).
template <typename T>
ROBUSTAGG_HD inline double sq_dev_lane(const T* row, const T* point, int64_t s0, int64_t s1, int l) {
  double acc = 0.0;
  for (int64_t c = s0 + l; c < s1; c += kNormLanes) acc += sq_dev(row, point, c);
  return acc;
}

// The tree over kNormLanes lane sums, in place (lanes[0] holds the result);
// the CUDA kernel runs the same steps in shared memory, one level per sync.
ROBUSTAGG_HD inline void lane_tree(double* lanes) {
  for (int w = kNormLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lanes[i] += lanes[i + w];
}

// A row's result: its segments' partials (part[0..S)) added in order.
ROBUSTAGG_HD inline double segments_in_order(const double* part, int64_t S) {
  double acc = 0.0;
  for (int64_t s = 0; s < S; ++s) acc += part[s];
  return acc;
}

}  // namespace math
}  // namespace robustagg
