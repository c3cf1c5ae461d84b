// pybind11 module robustagg._C: argument unpacking and a call, no logic.
// Pointers arrive as integers (tensor.data_ptr()); shapes and arguments are
// validated in robustagg/ops.py before any call reaches this file.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "robustagg/common.h"
#include "robustagg/cpu_isa.h"
#include "emulate/emulation_control.h"
#include "robustagg/device_plan.h"
#include "robustagg/norms.h"
#include "robustagg/pairwise.h"
#include "robustagg/repeated_median.h"
#include "robustagg/sign_vote.h"
#include "robustagg/trimmed_mean.h"

namespace py = pybind11;
namespace ra = robustagg;

namespace {

template <typename P> P* ptr(uintptr_t p) { return reinterpret_cast<P*>(p); }
ra::DType dt(int code) { return static_cast<ra::DType>(code); }

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

// The device API of one namespace (robustagg::cuda, or robustagg::device_math:
// the same launchers compiled for the CPU under csrc/emulate/) into submodule `sub`. The
// signatures are identical, so ops.py drives both with one glue.
#define ROBUSTAGG_BIND_DEVICE_API(NS, sub)                                                          \
  {                                                                                                 \
    py::call_guard<py::gil_scoped_release> nogil;                                                   \
    sub.def("sign_vote", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t w, uintptr_t out, \
                            uintptr_t stream) {                                                     \
      NS::sign_vote(ptr<const void>(u), dt(dtype), K, d, ptr<const double>(w), ptr<void>(out),       \
                    ptr<void>(stream));                                                             \
    }, nogil);                                                                                      \
    sub.def("robust_lr_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, double threshold,    \
                                 uintptr_t w, uintptr_t out, uintptr_t flipped, uintptr_t stream) { \
      NS::robust_lr_mean(ptr<const void>(u), dt(dtype), K, d, threshold, ptr<const double>(w),       \
                         ptr<void>(out), ptr<int64_t>(flipped), ptr<void>(stream));                 \
    }, nogil);                                                                                      \
    sub.def("norms_workspace_bytes", [](int64_t K, int64_t d) { return NS::norms_workspace_bytes(K, d); }); \
    sub.def("sq_distances_to", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t point,     \
                                  uintptr_t out, uintptr_t ws, uintptr_t stream) {                  \
      NS::sq_distances_to(ptr<const void>(u), dt(dtype), K, d, ptr<const void>(point), ptr<double>(out), \
                          ptr<void>(ws), ptr<void>(stream));                                        \
    }, nogil);                                                                                      \
    sub.def("order_workspace_bytes", [](int dtype, int64_t K, int64_t d) {                          \
      return NS::order_workspace_bytes(dt(dtype), K, d);                                            \
    });                                                                                             \
    sub.def("trimmed_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, int64_t trim,          \
                               uintptr_t out, uintptr_t ws, uintptr_t stream) {                     \
      NS::trimmed_mean(ptr<const void>(u), dt(dtype), K, d, trim, ptr<void>(out), ptr<void>(ws),     \
                       ptr<void>(stream));                                                          \
    }, nogil);                                                                                      \
    sub.def("median", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t out, uintptr_t ws, \
                         uintptr_t stream) {                                                        \
      NS::median(ptr<const void>(u), dt(dtype), K, d, ptr<void>(out), ptr<void>(ws), ptr<void>(stream)); \
    }, nogil);                                                                                      \
    sub.def("masked_trimmed_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, double tau,     \
                                      int64_t trim, uintptr_t out, uintptr_t ws, uintptr_t stream) { \
      NS::masked_trimmed_mean(ptr<const void>(u), dt(dtype), K, d, tau, trim, ptr<void>(out),        \
                              ptr<void>(ws), ptr<void>(stream));                                    \
    }, nogil);                                                                                      \
    sub.def("closest_to_median_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, int64_t trim, \
                                         uintptr_t out, uintptr_t ws, uintptr_t stream) {           \
      NS::closest_to_median_mean(ptr<const void>(u), dt(dtype), K, d, trim, ptr<void>(out),          \
                                 ptr<void>(ws), ptr<void>(stream));                                 \
    }, nogil);                                                                                      \
    sub.def("residual_workspace_bytes", [](int dtype, int64_t K, int64_t d) {                       \
      return NS::residual_workspace_bytes(dt(dtype), K, d);                                         \
    });                                                                                             \
    sub.def("repeated_median_line", [](uintptr_t u, int dtype, int64_t K, int64_t d, int mode,      \
                                       uintptr_t slope, uintptr_t intercept, uintptr_t ws,          \
                                       uintptr_t stream) {                                          \
      NS::repeated_median_line(ptr<const void>(u), dt(dtype), K, d, static_cast<ra::InterceptMode>(mode), \
                               ptr<void>(slope), ptr<void>(intercept), ptr<void>(ws), ptr<void>(stream)); \
    }, nogil);                                                                                      \
    sub.def("residual_reweight", [](uintptr_t u, int dtype, int64_t K, int64_t d, double lam,       \
                                    double delta, double power, int mode, uintptr_t cw,             \
                                    uintptr_t agg, uintptr_t ws, uintptr_t stream) {                \
      NS::residual_reweight(ptr<const void>(u), dt(dtype), K, d, lam, delta, power,                 \
                            static_cast<ra::InterceptMode>(mode), ptr<void>(cw), ptr<void>(agg),    \
                            ptr<void>(ws), ptr<void>(stream));                                      \
    }, nogil);                                                                                      \
    sub.def("residual_client_sums", [](uintptr_t u, int dtype, int64_t K, int64_t d, double lam,    \
                                       double delta, int mode, uintptr_t sums, uintptr_t ws,        \
                                       uintptr_t stream) {                                          \
      NS::residual_client_sums(ptr<const void>(u), dt(dtype), K, d, lam, delta,                     \
                               static_cast<ra::InterceptMode>(mode), ptr<double>(sums), ptr<void>(ws), \
                               ptr<void>(stream));                                                  \
    }, nogil);                                                                                      \
    sub.def("residual_apply", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sums,      \
                                 double lam, double delta, double power, int mode, uintptr_t cw,    \
                                 uintptr_t agg, uintptr_t ws, uintptr_t stream) {                   \
      NS::residual_apply(ptr<const void>(u), dt(dtype), K, d, ptr<const double>(sums), lam, delta,   \
                         power, static_cast<ra::InterceptMode>(mode), ptr<void>(cw), ptr<void>(agg), \
                         ptr<void>(ws), ptr<void>(stream));                                         \
    }, nogil);                                                                                      \
    sub.def("pairwise_workspace_bytes", [](int dtype, int64_t K, int64_t d) {                       \
      return NS::pairwise_workspace_bytes(dt(dtype), K, d);                                         \
    });                                                                                             \
    sub.def("pairwise_stats", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sqdist,    \
                                 uintptr_t gram, uintptr_t ws, uintptr_t stream) {                  \
      NS::pairwise_stats(ptr<const void>(u), dt(dtype), K, d, ptr<void>(sqdist), ptr<void>(gram),    \
                         ptr<void>(ws), ptr<void>(stream));                                         \
    }, nogil);                                                                                      \
    sub.def("pairwise_stats_f64", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sqdist, \
                                     uintptr_t gram, bool fast, uintptr_t only_if, uintptr_t ws,    \
                                     uintptr_t stream) {                                            \
      NS::pairwise_stats_f64(ptr<const void>(u), dt(dtype), K, d, ptr<double>(sqdist),              \
                             ptr<double>(gram), fast, ptr<const int32_t>(only_if), ptr<void>(ws),   \
                             ptr<void>(stream));                                                    \
    }, nogil);                                                                                      \
    sub.def("cosine_similarity", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t out,    \
                                    uintptr_t ws, uintptr_t stream) {                               \
      NS::cosine_similarity(ptr<const void>(u), dt(dtype), K, d, ptr<void>(out), ptr<void>(ws),      \
                            ptr<void>(stream));                                                     \
    }, nogil);                                                                                      \
  }

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "robustagg native kernels (private; use robustagg.ops)";
  py::call_guard<py::gil_scoped_release> nogil;

  m.def("sign_vote", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t w, uintptr_t out,
                        int threads) {
    ROBUSTAGG_CPU(sign_vote)(ptr<const void>(u), dt(dtype), K, d, ptr<const double>(w), ptr<void>(out), threads);
  }, nogil);
  m.def("robust_lr_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, double threshold,
                             uintptr_t w, uintptr_t out, uintptr_t flipped, int threads) {
    ROBUSTAGG_CPU(robust_lr_mean)(ptr<const void>(u), dt(dtype), K, d, threshold, ptr<const double>(w),
                            ptr<void>(out), ptr<int64_t>(flipped), threads);
  }, nogil);
  m.def("trimmed_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, int64_t trim,
                           uintptr_t out, int threads) {
    ROBUSTAGG_CPU(trimmed_mean)(ptr<const void>(u), dt(dtype), K, d, trim, ptr<void>(out), threads);
  }, nogil);
  m.def("median", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t out, int threads) {
    ROBUSTAGG_CPU(median)(ptr<const void>(u), dt(dtype), K, d, ptr<void>(out), threads);
  }, nogil);
  m.def("masked_trimmed_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, double tau,
                                  int64_t trim, uintptr_t out, int threads) {
    ROBUSTAGG_CPU(masked_trimmed_mean)(ptr<const void>(u), dt(dtype), K, d, tau, trim, ptr<void>(out), threads);
  }, nogil);
  m.def("closest_to_median_mean", [](uintptr_t u, int dtype, int64_t K, int64_t d, int64_t trim,
                                     uintptr_t out, int threads) {
    ROBUSTAGG_CPU(closest_to_median_mean)(ptr<const void>(u), dt(dtype), K, d, trim, ptr<void>(out), threads);
  }, nogil);
  m.def("repeated_median_line", [](uintptr_t u, int dtype, int64_t K, int64_t d, int mode,
                                   uintptr_t slope, uintptr_t intercept, int threads) {
    ROBUSTAGG_CPU(repeated_median_line)(ptr<const void>(u), dt(dtype), K, d,
                                  static_cast<ra::InterceptMode>(mode), ptr<void>(slope),
                                  ptr<void>(intercept), threads);
  }, nogil);
  m.def("residual_reweight", [](uintptr_t u, int dtype, int64_t K, int64_t d, double lam,
                                double delta, double power, int mode, uintptr_t client_weights,
                                uintptr_t aggregate, int threads) {
    ROBUSTAGG_CPU(residual_reweight)(ptr<const void>(u), dt(dtype), K, d, lam, delta, power,
                               static_cast<ra::InterceptMode>(mode), ptr<void>(client_weights),
                               ptr<void>(aggregate), threads);
  }, nogil);
  m.def("residual_client_sums", [](uintptr_t u, int dtype, int64_t K, int64_t d, double lam, double delta,
                                   int mode, uintptr_t sums, int threads) {
    ROBUSTAGG_CPU(residual_client_sums)(ptr<const void>(u), dt(dtype), K, d, lam, delta,
                                  static_cast<ra::InterceptMode>(mode), ptr<double>(sums), threads);
  }, nogil);
  m.def("residual_apply", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sums, double lam,
                             double delta, double power, int mode, uintptr_t cw, uintptr_t agg, int threads) {
    ROBUSTAGG_CPU(residual_apply)(ptr<const void>(u), dt(dtype), K, d, ptr<const double>(sums), lam, delta, power,
                            static_cast<ra::InterceptMode>(mode), ptr<void>(cw), ptr<void>(agg), threads);
  }, nogil);
  m.def("pairwise_stats", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sqdist,
                             uintptr_t gram, int threads) {
    ROBUSTAGG_CPU(pairwise_stats)(ptr<const void>(u), dt(dtype), K, d, ptr<void>(sqdist), ptr<void>(gram), threads);
  }, nogil);
  m.def("pairwise_stats_f64", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t sqdist,
                                 uintptr_t gram, bool fast, int threads) {
    ROBUSTAGG_CPU(pairwise_stats_f64)(ptr<const void>(u), dt(dtype), K, d, ptr<double>(sqdist), ptr<double>(gram), fast,
                                threads);
  }, nogil);
  m.def("sq_distances_to", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t point, uintptr_t out,
                              int threads) {
    ROBUSTAGG_CPU(sq_distances_to)(ptr<const void>(u), dt(dtype), K, d, ptr<const void>(point), ptr<double>(out),
                             threads);
  }, nogil);
  m.def("cosine_similarity", [](uintptr_t u, int dtype, int64_t K, int64_t d, uintptr_t out,
                                int threads) {
    ROBUSTAGG_CPU(cosine_similarity)(ptr<const void>(u), dt(dtype), K, d, ptr<void>(out), threads);
  }, nogil);

  py::module_ dm = m.def_submodule("device_math",
                                   "the CUDA launchers and kernels run on the host under the CUDA emulation (tests)");
  ROBUSTAGG_BIND_DEVICE_API(ra::device_math, dm)
  // The emulation's knobs (tests): the order of a block's threads between
  // barriers, and the grid size beyond which launchers loop (grid-stride).
  dm.def("_set_schedule", [](int schedule, uint64_t seed) {
    if (schedule < 0 || schedule > 2) throw py::value_error("schedule must be 0 (in order), 1 (reversed) or 2 (shuffled)");
    const auto old = py::make_tuple(static_cast<int>(ra::emu::schedule()), ra::emu::schedule_seed());
    ra::emu::set_schedule(static_cast<ra::emu::Schedule>(schedule), seed);
    return old;
  });
  dm.def("_launches", [](bool clear) {
    py::dict out;
    for (const auto& [name, r] : ra::emu::launch_log(clear))
      out[py::str(name)] = py::make_tuple(r.launches, r.max_threads, r.max_dynamic_shared);
    return out;
  }, py::arg("clear") = false, "{kernel: (launches, max threads per block, max dynamic shared bytes)}");
  dm.def("_set_max_blocks", [](int64_t n) {
    if (n < 1) throw py::value_error("max blocks must be >= 1");
    const int64_t old = ra::emu::max_grid_blocks();
    ra::emu::max_grid_blocks() = n;
    return old;
  });
#ifdef ROBUSTAGG_WITH_CUDA
  py::module_ cu = m.def_submodule("cuda", "CUDA kernels on a caller-given stream");
  ROBUSTAGG_BIND_DEVICE_API(ra::cuda, cu)
#endif

  // Tests: the scratch budget of the device launches (both device backends).
  m.def("_set_scratch_bytes", [](int64_t n) {
    const int64_t old = ra::plan::scratch_bytes_limit();
    ra::plan::scratch_bytes_limit() = n;
    return old;
  });
  m.def("pool_size", &ra::pool_size);
  // The copy of the CPU kernels in use and the ones this build holds
  // (robustagg/cpu_isa.h); _set_cpu_isa chooses one (tests, ROBUSTAGG_CPU_ISA).
  m.def("cpu_isa", [] { return std::string(ra::cpu_isa_name(ra::cpu_isa())); });
  m.def("cpu_isas", [] {
    py::dict out;
    for (int i = 0; i < ra::kCpuIsaCount; ++i) {
      const auto isa = static_cast<ra::CpuIsa>(i);
      out[py::str(ra::cpu_isa_name(isa))] = py::make_tuple(ra::cpu_isa_built(isa), ra::cpu_isa_supported(isa));
    }
    return out;
  }, "{name: (built, supported by this CPU)}");
  m.def("_set_cpu_isa", [](const std::string& name) {
    for (int i = 0; i < ra::kCpuIsaCount; ++i) {
      const auto isa = static_cast<ra::CpuIsa>(i);
      if (name == ra::cpu_isa_name(isa)) {
        const std::string old = ra::cpu_isa_name(ra::cpu_isa());
        ra::set_cpu_isa(isa);
        return old;
      }
    }
    throw py::value_error("unknown instruction set '" + name + "' (x86-64, avx2, avx512)");
  });
#ifdef ROBUSTAGG_MARCH_STR
  m.attr("march") = ROBUSTAGG_MARCH_STR;
#else
  m.attr("march") = "";
#endif
  m.attr("compiler") = compiler();
  m.attr("cxx_standard") = static_cast<int>(__cplusplus);
#ifdef ROBUSTAGG_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_archs") = ROBUSTAGG_CUDA_ARCHS_STR;
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_archs") = "";
#endif
}
