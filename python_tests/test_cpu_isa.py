"""The portable build: one copy of the CPU kernels per x86-64 instruction set
(baseline, AVX2, AVX-512), chosen at run time (setup.py, robustagg/cpu_isa.h).

Every copy this CPU can run gives the results of the copy chosen by default,
bitwise (no multiply-add is fused unless the source says so: -ffp-contract=off,
as the device's --fmad=false), except the pairwise sums (distances, Gram, cosine),
fused on AVX2 and AVX-512 (csrc/cpu/pairwise.cpp), which keep their accuracy
contract on every copy; and no code outside the AVX2 and
AVX-512 copies uses an AVX instruction (the disassembly of the installed
module)."""
import os
import re
import shutil
import subprocess

import pytest
import torch

import robustagg
from robustagg import ops
from common import assert_pairwise_stats_contract, make_updates

C = ops._C
pytestmark = pytest.mark.skipif(C is None, reason="the native module is not built")
PORTABLE = C is not None and not C.march and all(built for built, _ in C.cpu_isas().values())
needs_portable = pytest.mark.skipif(not PORTABLE, reason="a ROBUSTAGG_MARCH build holds one copy of the kernels")
RUNNABLE = [name for name, (built, ok) in C.cpu_isas().items() if built and ok] if C is not None else []


@pytest.fixture
def restore_isa():
    old = C.cpu_isa()
    yield
    C._set_cpu_isa(old)


def _inputs():
    cases = []
    for K, d, dtype, kind in [(3, 257, torch.float32, "normal"), (16, 1000, torch.float32, "ties"),
                              (17, 333, torch.float64, "normal"), (33, 200, torch.float16, "signed_zeros"),
                              (70, 90, torch.float32, "normal"), (70, 90, torch.float64, "ties"),
                              (130, 40, torch.bfloat16, "normal"), (600, 9, torch.float32, "normal")]:
        u = make_updates(K, d, dtype, kind, seed=K)
        if d > 20:
            u[1, 5] = float("nan")
            u[2, 7] = float("inf")
        cases.append(u)
    return cases


def _run_all(u):
    K = u.shape[0]
    w = torch.arange(1, K + 1, dtype=torch.float64)
    out = {
        "sign_vote": ops.sign_vote(u), "sign_vote_w": ops.sign_vote(u, w),
        "robust_lr_mean": ops.robust_lr_mean(u, threshold=min(2, K), weights=w),
        "trimmed_mean": ops.trimmed_mean(u, (K - 1) // 3), "median": ops.median(u),
        "masked_trimmed_mean": ops.masked_trimmed_mean(u, 0.4, (K - 1) // 3),
        "closest_to_median_mean": ops.closest_to_median_mean(u, (K - 1) // 3),
        "sq_distances_to": ops.sq_distances_to(u),
    }
    if K <= 130:  # the repeated medians cost K^2 per coordinate
        out["repeated_median_line"] = ops.repeated_median_line(u)
        out["residual_reweight"] = ops.residual_reweight(u)
    pairwise = {"pairwise_sq_distances": ops.pairwise_sq_distances(u), "cosine_similarity": ops.cosine_similarity(u),
                "pairwise_stats": ops.pairwise_stats(u)}
    return out, pairwise


def _flat(x):
    return [t for v in x for t in _flat(v)] if isinstance(x, (tuple, list)) else [x]


@needs_portable
def test_the_portable_build_holds_three_copies_and_uses_the_best_this_cpu_runs():
    info = robustagg.native_info()
    isas = C.cpu_isas()
    assert list(isas) == ["x86-64", "avx2", "avx512"]
    assert isas["x86-64"] == (True, True)
    assert info["cpu_isas"] == RUNNABLE
    if not os.environ.get("ROBUSTAGG_CPU_ISA"):
        assert info["cpu_isa"] == RUNNABLE[-1]
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    if flags:  # the run-time choice agrees with what the kernel says the CPU has
        has = set(re.search(r"^flags\s*:(.*)$", flags, re.M).group(1).split())
        avx2 = {"avx2", "fma", "bmi1", "bmi2", "f16c"}
        assert isas["avx2"][1] == (avx2 <= has)
        assert isas["avx512"][1] == (avx2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= has)


@needs_portable
@pytest.mark.parametrize("isa", ["x86-64", "avx2", "avx512"])
def test_every_copy_gives_the_default_copys_results(isa, restore_isa):
    if isa not in RUNNABLE:
        pytest.skip(f"this CPU cannot run the {isa} copy")
    default = C.cpu_isa()
    for u in _inputs():
        want, want_pairwise = _run_all(u)
        C._set_cpu_isa(isa)
        got, got_pairwise = _run_all(u)
        C._set_cpu_isa(default)
        for name in want:
            for a, b in zip(_flat(got[name]), _flat(want[name])):
                assert a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) \
                    and torch.equal(a.isnan(), b.isnan()), (name, isa, tuple(u.shape), u.dtype)
        for name in want_pairwise:  # NaN and Inf where the default copy has them, and only there
            for a, b in zip(_flat(got_pairwise[name]), _flat(want_pairwise[name])):
                assert torch.equal(torch.isfinite(a), torch.isfinite(b)), (name, isa, tuple(u.shape), u.dtype)
        finite = u[:, torch.isfinite(u).all(0)].contiguous()
        C._set_cpu_isa(isa)
        got = ops.pairwise_stats(finite)
        C._set_cpu_isa(default)
        assert_pairwise_stats_contract(got, finite, f"{isa} {tuple(u.shape)} {u.dtype}")


def test_an_unknown_instruction_set_is_named_in_the_error(restore_isa):
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'.*x86-64, avx2, avx512"):
        C._set_cpu_isa("sse9")


def _avx_outside_the_copies(path):
    """(instructions of AVX or AVX-512 in functions of no AVX copy, AVX-512
    instructions in the AVX2 copy) in the shared object at `path`."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout
    fn, outside, in_avx2, copies = "", [], [], {"avx2": 0, "avx512": 0}
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            fn = m.group(1)
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not re.match(r"^ +[0-9a-f]+:$", parts[0]):
            continue
        insn = parts[1]
        avx = insn.startswith("v") or re.search(r"%[yz]mm|%k[0-7]", insn)
        if not avx:
            continue
        copy = "avx512" if "avx512" in fn else "avx2" if "avx2" in fn else None
        if copy is None:
            outside.append(f"{fn}: {insn}")
        else:
            copies[copy] += 1
            if copy == "avx2" and re.search(r"%zmm|%k[0-7]", insn):
                in_avx2.append(f"{fn}: {insn}")
    return outside, in_avx2, copies


@needs_portable
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils' objdump")
def test_no_code_outside_the_avx_copies_uses_an_avx_instruction():
    outside, in_avx2, copies = _avx_outside_the_copies(C.__file__)
    assert outside == [], outside[:10]
    assert in_avx2 == [], in_avx2[:10]
    assert copies["avx2"] > 1000 and copies["avx512"] > 1000, copies  # the copies are there, and vectorised


@needs_portable
def test_robustagg_cpu_isa_picks_a_copy_or_names_itself_in_the_error(tmp_path):
    import sys
    code = "import robustagg; print(robustagg.native_info()['cpu_isa'])"
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTAGG_CPU_ISA"}
    ok = subprocess.run([sys.executable, "-c", code], env={**env, "ROBUSTAGG_CPU_ISA": "x86-64"}, cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.split() == ["x86-64"], ok.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "ROBUSTAGG_CPU_ISA": "sse9"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "ROBUSTAGG_CPU_ISA='sse9': must be one of x86-64, avx2, avx512" in bad.stderr, bad.stderr[-2000:]
