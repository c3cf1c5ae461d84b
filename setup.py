"""Build of robustagg._C: plain C++17 (+ CUDA when nvcc is found), no torch headers.

Environment:
  ROBUSTAGG_CUDA        unset: build CUDA sources when nvcc is found; 0: CPU only;
                        1: a missing nvcc is an error.
  ROBUSTAGG_CUDA_ARCHS  e.g. "80;90" (default), compiled for each plus PTX of the last.
  ROBUSTAGG_MARCH       unset or "": portable. On x86-64 Linux the CPU kernels
                        (csrc/cpu) are compiled three times, for baseline x86-64, AVX2
                        and AVX-512, and the module picks one at run time by what the
                        CPU supports (robustagg/cpu_isa.h); everything else is baseline.
                        A value, e.g. "native": one copy of everything with that -march
                        (a binary for this machine only).
  CUDA_HOME             CUDA toolkit root; else nvcc is looked up on PATH.
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("ROBUSTAGG_BUILD_JOBS", default=0).install()

HERE = os.path.dirname(os.path.abspath(__file__))


def toolkit_root(nvcc):
    """The toolkit behind an nvcc, which may be a wrapper script: nvcc says (TOP=)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "robustagg_probe.cu", "-o", os.devnull], capture_output=True, text=True, timeout=60)
        for line in (out.stdout + out.stderr).splitlines():
            if line.startswith("#$ TOP="):
                return os.path.realpath(line.split("=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home:
        cand = os.path.join(cuda_home, "bin", "nvcc")
        if os.path.exists(cand):
            return cand, cuda_home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return nvcc, toolkit_root(nvcc)
    return None, None


def cudart_libdir(home):
    for sub in ("lib64", os.path.join("targets", "x86_64-linux", "lib"), os.path.join("targets", "sbsa-linux", "lib"), "lib"):
        if os.path.exists(os.path.join(home, sub, "libcudart_static.a")):
            return os.path.join(home, sub)
    sys.exit(f"robustagg: libcudart_static.a not found under {home} (set CUDA_HOME, or ROBUSTAGG_CUDA=0)")


def cuda_plan():
    mode = os.environ.get("ROBUSTAGG_CUDA", "").strip()
    sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    if mode == "0" or not sources:
        return None
    nvcc, cuda_home = find_nvcc()
    if nvcc is None:
        if mode == "1":
            sys.exit("ROBUSTAGG_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        return None
    archs = [a.strip() for a in os.environ.get("ROBUSTAGG_CUDA_ARCHS", "80;90").replace(",", ";").split(";") if a.strip()]
    return {"nvcc": nvcc, "home": cuda_home, "archs": archs, "sources": sources}


CUDA = cuda_plan()


def nvcc_command(src, obj):
    """One .cu file for every arch (+ PTX of the last). --fmad=false: the device
    math must round as the CPU and the emulated launchers do (math/residual.h)."""
    gencode = []
    for a in CUDA["archs"]:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    last = CUDA["archs"][-1]
    gencode += ["-gencode", f"arch=compute_{last},code=compute_{last}"]
    return [CUDA["nvcc"], "-c", src, "-o", obj, "-O3", "-std=c++17", "--fmad=false",
            "-Xcompiler", "-fPIC,-fvisibility=hidden", "-Icsrc/include", "--expt-relaxed-constexpr",
            "-Xptxas", "-v", *gencode]


class BuildExt(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc, in parallel, and links them (cudart static) into _C.
    ptxas's resource report of every kernel (registers, stack, spills, shared
    memory per arch) is kept beside the module as robustagg/_cuda_resources.txt:
    tests gate on it and bench/gpu_model.py reads it."""

    def build_extension(self, ext):
        # The build's configuration is a dependency: an in-tree build/ left by a
        # CPU-only build must not be reused as "up to date" for a CUDA one.
        os.makedirs(self.build_temp, exist_ok=True)
        stamp = os.path.join(self.build_temp, "robustagg_config.txt")
        config = repr((CUDA, cflags, DISPATCH))
        if not os.path.exists(stamp) or open(stamp).read() != config:
            with open(stamp, "w") as f:
                f.write(config)
        ext.depends = list(ext.depends or []) + [stamp]
        if CUDA is not None:
            os.makedirs(self.build_temp, exist_ok=True)
            jobs = []
            for src in CUDA["sources"]:
                obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
                cmd = nvcc_command(src, obj)
                print(" ".join(cmd))
                log = open(obj + ".log", "w+")
                jobs.append((obj, log, subprocess.Popen(cmd, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)))
            reports, failed = [], []
            for obj, log, proc in jobs:
                code = proc.wait()
                log.seek(0)
                text = log.read()
                log.close()
                if code != 0:
                    print(text, file=sys.stderr)
                    failed.append(obj)
                reports.append(f"# {os.path.basename(obj)[:-2]}\n{text}")
            if failed:
                sys.exit(f"nvcc failed for {failed} (ROBUSTAGG_CUDA=0 builds without CUDA)")
            out_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "_cuda_resources.txt"), "w") as f:
                f.write("".join(reports))
            objects = [obj for obj, _, _ in jobs]
            ext.extra_objects = list(ext.extra_objects or []) + objects
            libdir = cudart_libdir(CUDA["home"])
            ext.extra_link_args = list(ext.extra_link_args or []) + [
                f"-L{libdir}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
            last = CUDA["archs"][-1]
            archs = ",".join(f"sm_{a}" for a in CUDA["archs"]) + f",compute_{last}"
            ext.define_macros = list(ext.define_macros or []) + [
                ("ROBUSTAGG_WITH_CUDA", "1"), ("ROBUSTAGG_CUDA_ARCHS_STR", f'"{archs}"')]
            ext.include_dirs = list(ext.include_dirs or []) + [os.path.join(CUDA["home"], "include")]
        super().build_extension(ext)


# csrc/emulate: the .cu files compiled again by the host compiler under the CUDA
# emulation (robustagg::device_math), in every build, GPU or not.
kernel_sources = sorted(f for f in glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
                        if os.path.basename(f) != "parallel.cpp")
base_sources = [os.path.join("csrc", "cpu", "parallel.cpp"), os.path.join("csrc", "cpu_isa.cpp"),
                os.path.join("csrc", "bindings.cpp")]
# The emulated launchers are the kernels' proof on the host, not a fast path:
# -O1 (the same results: no contraction, no fast math at any level). At -O3
# the device's unrolled register networks (up to 1471 comparators each) took
# GCC 111 s for trimmed_mean alone, 21 s at -O1.
emulate_sources = sorted(glob.glob(os.path.join("csrc", "emulate", "*.cpp")))
EMULATE_FLAGS = ["-O1"]
march = os.environ.get("ROBUSTAGG_MARCH", "").strip()
# -ffp-contract=off: no multiply-add is fused unless the source says so (as the
# CUDA files, compiled with --fmad=false): every copy of the CPU kernels, the
# emulated launchers and the device round alike.
cflags = ["-O3", "-fno-math-errno", "-fvisibility=hidden", "-ffp-contract=off",
          "-Wno-psabi"]  # 64-byte vector values between inlined helpers: no ABI is crossed

# The instruction sets of a portable build: name, flags (on top of -march=x86-64).
ISAS = [
    ("base", ["-mtune=generic"]),
    ("avx2", ["-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mf16c", "-mtune=haswell"]),
    ("avx512", ["-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mf16c", "-mavx512f", "-mavx512cd", "-mavx512bw",
                "-mavx512dq", "-mavx512vl", "-mprefer-vector-width=512", "-mtune=skylake-avx512"]),
]
BINUTILS = {tool: shutil.which(tool) for tool in ("nm", "objcopy")}
DISPATCH = (not march and sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
            and all(BINUTILS.values()))
if march and sys.platform != "win32":
    cflags += [f"-march={march}", "-mprefer-vector-width=512"]
elif DISPATCH:
    cflags.append("-march=x86-64")


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"robustagg: {' '.join(cmd[:3])} ... failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def isa_objects(build, ext):
    """The CPU kernels once per instruction set, each copy one relocatable
    object: robustagg::cpu::* renamed robustagg::cpu_<isa>::* (the entry points
    that robustagg/cpu_isa.h declares), every other symbol it defines made local
    and suffixed .isa_<isa> (inline functions and template instantiations,
    std:: ones included, are the copy's own: the final link cannot hand one
    compiled for AVX-512 to baseline code), and its COMDAT groups dissolved
    (a group is deduplicated by name at link time, whatever its symbol's binding)."""
    objects = []
    for isa, flags in ISAS:
        objs = build.compiler.compile(
            kernel_sources, output_dir=os.path.join(build.build_temp, "isa_" + isa),
            include_dirs=ext.include_dirs, depends=ext.depends,
            extra_postargs=list(ext.extra_compile_args) + flags)
        merged = os.path.join(build.build_temp, f"cpu_{isa}.o")
        run([build.compiler.compiler_so[0], "-r", "-nostdlib", "-o", merged, *objs])
        renames, local = [], []
        prefix = re.compile(r"^(_ZNK?9robustagg)3cpu(?=\d)")
        for line in run([BINUTILS["nm"], "-P", "--defined-only", merged]).splitlines():
            name, kind = line.split()[:2]
            if kind in "aANn" or name.startswith("."):
                continue
            if kind.isupper() and prefix.match(name):
                new_ns = f"cpu_{isa}"
                renames.append(f"{name} {prefix.sub(lambda m: m.group(1) + str(len(new_ns)) + new_ns, name)}")
            else:
                renames.append(f"{name} {name}.isa_{isa}")
                if kind.isupper() or kind in "uvw":
                    local.append(name + f".isa_{isa}")
        for fname, lines in (("renames", renames), ("local", local)):
            with open(os.path.join(build.build_temp, f"cpu_{isa}.{fname}"), "w") as f:
                f.write("\n".join(sorted(set(lines))) + "\n")
        run([BINUTILS["objcopy"], "--remove-section=.group",
             f"--redefine-syms={os.path.join(build.build_temp, f'cpu_{isa}.renames')}",
             f"--localize-symbols={os.path.join(build.build_temp, f'cpu_{isa}.local')}", merged])
        objects.append(merged)
    return objects


class PortableBuildExt(BuildExt):
    def build_extension(self, ext):
        emulated = self.compiler.compile(
            emulate_sources, output_dir=os.path.join(self.build_temp, "emulate"), macros=ext.define_macros,
            include_dirs=ext.include_dirs, depends=ext.depends,
            extra_postargs=list(ext.extra_compile_args) + EMULATE_FLAGS)
        ext.extra_objects = list(ext.extra_objects or []) + emulated
        if DISPATCH:
            ext.extra_objects = list(ext.extra_objects or []) + isa_objects(self, ext)
        super().build_extension(ext)


ext = Pybind11Extension(
    "robustagg._C",
    sources=base_sources if DISPATCH else kernel_sources + base_sources,
    include_dirs=["csrc/include", "csrc/cpu", "csrc"],
    # Headers and CUDA files: a change to any of them rebuilds the module (the
    # per-coordinate math in csrc/include/robustagg/math is shared by every backend).
    depends=sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)
                   + glob.glob(os.path.join("csrc", "cuda", "*.cu*"))
                   + (kernel_sources if DISPATCH else []) + emulate_sources),
    cxx_std=17,
    extra_compile_args=cflags,
    extra_link_args=["-pthread"],
    define_macros=[("ROBUSTAGG_CPU_DISPATCH", "1" if DISPATCH else "0")]
    + ([("ROBUSTAGG_MARCH_STR", f'"{march}"')] if march else []),
)

setup(ext_modules=[ext], cmdclass={"build_ext": PortableBuildExt})
