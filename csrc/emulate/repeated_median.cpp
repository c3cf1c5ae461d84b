// csrc/cuda/repeated_median.cu compiled by the host C++ compiler under the CUDA emulation:
// its launchers and kernels as robustagg::device_math (see launch.cuh). No
// contraction into fused multiply-adds, as nvcc's --fmad=false.
#include "robustagg/math/no_contraction.h"
#define ROBUSTAGG_EMULATE_CUDA 1
#include "../cuda/repeated_median.cu"
