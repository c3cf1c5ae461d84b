// Included first by the host files whose arithmetic must round exactly as the
// CUDA files compiled with --fmad=false (and as the pure-PyTorch reference):
// no fused multiply-add contraction from here to the end of the file. The
// repeated-median pair values (j y_i - i y_j) / (j - i) must be exactly
// symmetric in (i, j), and line values and residuals decide ties and the band
// edges. (Explicit FMAs, as in math::div_rcp, are unaffected.)
#pragma once
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
