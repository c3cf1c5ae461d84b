"""The CUDA emulation itself (csrc/emulate): that it reports what it promises.

The device-math tests (test_device_math.py) run the real launchers through
``_C.device_math``; these tests build python_tests/emulation/driver.cpp with
the host compiler against the emulation and check that

- a divergent barrier, a barrier some threads exited before, a shuffle not
  every lane of its mask executes, a shuffle from a lane that does not exist
  and launch shapes over the sm_80/sm_90 limits are each an error naming the
  kernel and the line (not a deadlock, not a silent result);
- a kernel with a race gives different results under different schedules,
  while a correct block reduction gives the right sums under every schedule;
- every real kernel gives bitwise the same results in order, reversed and
  shuffled, with every buffer allocated at its exact size;
- removing any one ``__syncthreads()`` from csrc/cuda/*.cu is caught: the
  schedules disagree (mutation test: the schedule comparison has teeth).

Needs the source tree (csrc/) and a C++ compiler; skipped otherwise.
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
DRIVER = pathlib.Path(__file__).resolve().parent / "emulation" / "driver.cpp"
CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None or not (CSRC / "emulate" / "runtime.cpp").exists(),
                                reason="needs csrc/ and a C++ compiler")

SOURCES = ["norms", "pairwise", "repeated_median", "sign_vote", "trimmed_mean"]
BARRIER = "__syncthreads();"


def _compile(src, obj, flags=()):
    cmd = [CXX, "-std=c++17", "-O1", "-pthread", *flags, "-I", str(CSRC), "-I", str(CSRC / "include"),
           "-I", str(CSRC / "cuda"), "-c", str(src), "-o", str(obj)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return obj


def _link(objects, exe, flags=()):
    subprocess.run([CXX, "-pthread", *flags, *map(str, objects), "-o", str(exe)], check=True, capture_output=True)
    return exe


def _run(exe, *args, env=None):
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, env=env)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Objects of the driver, the runtime, the pool and each emulated .cu."""
    tmp = tmp_path_factory.mktemp("emulation")
    objs = {"driver": _compile(DRIVER, tmp / "driver.o"),
            "runtime": _compile(CSRC / "emulate" / "runtime.cpp", tmp / "runtime.o"),
            "parallel": _compile(CSRC / "cpu" / "parallel.cpp", tmp / "parallel.o")}
    for name in SOURCES:
        objs[name] = _compile(CSRC / "emulate" / f"{name}.cpp", tmp / f"{name}.o")
    return tmp, objs


@pytest.fixture(scope="module")
def driver(build):
    tmp, objs = build
    return _link(objs.values(), tmp / "driver")


def _lines(text):
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_selftest_kernels_are_reported_with_kernel_and_line(driver):
    code, out = _run(driver, "selftest")
    assert code == 0, out
    said = _lines(out)
    src = DRIVER.read_text().splitlines()
    line_of = {name: 1 + next(i for i, l in enumerate(src) if l.startswith(f"__global__ void {name}("))
               for name in ["barrier_in_branch", "barrier_after_exit", "two_barriers", "partial_shuffle",
                            "shuffle_without_lanes", "broken_invariant"]}
    expect = {
        "barrier_in_branch": ["barrier_in_branch", "divergent barrier",
                              f"driver.cpp:{line_of['barrier_in_branch'] + 1}", "(16, 0, 0) has exited"],
        "barrier_after_exit": ["divergent barrier", f"driver.cpp:{line_of['barrier_after_exit'] + 2}",
                               "(3, 0, 0) has exited"],
        "two_barriers": ["divergent barrier", f"driver.cpp:{line_of['two_barriers'] + 4}",
                         f"waits at __syncthreads() at driver.cpp:{line_of['two_barriers'] + 2}"],
        "partial_shuffle": ["shuffle at driver.cpp", "not executed by every lane", "(31, 0, 0) has exited"],
        "shuffle_without_lanes": ["lane 16 of warp 0 does not exist"],
        "broken_invariant": ["broken_invariant, block (1, 0, 0), thread (5, 0, 0): five is not allowed",
                             f"driver.cpp:{line_of['broken_invariant'] + 2}"],
        "block_too_large": ["empty_kernel", "invalid launch", "exceeds 1024 threads"],
        "grid_y_too_large": ["invalid launch", "65535"],
        "dynamic_shared_too_large": ["invalid launch", "48 KB"],
    }
    for case, parts in expect.items():
        for part in parts:
            assert part in said[case], f"{case}: {part!r} not in {said[case]!r}"
    assert said["after_an_error"] == "ok"


def test_a_race_shows_across_schedules_and_a_correct_reduction_does_not(driver):
    _, out = _run(driver, "selftest")
    racy = set(re.findall(r"racy_neighbour schedule \d: (\S+)", out))
    sums = set(re.findall(r"block_sum schedule \d: (.+)", out))
    assert len(racy) > 1, out
    values = [i % 97 - 40 for i in range(768)]
    assert sums == {" ".join(str(sum(values[b * 256:(b + 1) * 256])) for b in range(3))}, out


def test_every_kernel_is_bitwise_the_same_under_every_schedule(driver):
    runs = [_run(driver, "ops", str(s)) for s in range(3)]
    assert all(code == 0 for code, _ in runs), runs[0][1][-2000:]
    assert len(runs[0][1].splitlines()) == 2 * 12 * 3 * 4  # dtypes x K x d x op families (driver.cpp)
    assert runs[0][1] == runs[1][1] == runs[2][1]


def _barriers():
    for name in SOURCES:
        for nth in range((CSRC / "cuda" / f"{name}.cu").read_text().count(BARRIER)):
            yield pytest.param(name, nth, id=f"{name}-barrier{nth}")


@pytest.mark.parametrize("name,nth", list(_barriers()))
def test_a_removed_barrier_is_caught(build, name, nth):
    tmp, objs = build
    text = (CSRC / "cuda" / f"{name}.cu").read_text()
    at = -1
    for _ in range(nth + 1):
        at = text.index(BARRIER, at + 1)
    mutant = tmp / f"{name}_without_barrier{nth}.cu"
    mutant.write_text(text[:at] + "/* barrier removed */" + text[at + len(BARRIER):])
    wrapper = tmp / f"{name}_without_barrier{nth}.cpp"
    wrapper.write_text((CSRC / "emulate" / f"{name}.cpp").read_text().replace(f'"../cuda/{name}.cu"', f'"{mutant}"'))
    obj = _compile(wrapper, tmp / f"{name}_without_barrier{nth}.o")
    exe = _link([obj if key == name else o for key, o in objs.items()], tmp / f"driver_without_{name}{nth}")
    runs = [_run(exe, "ops", str(s)) for s in range(3)]
    # Caught by the schedules alone (no reference needed): they disagree, or
    # the emulation reports an error.
    assert any(code != 0 for code, _ in runs) or len({out for _, out in runs}) > 1, \
        f"removing __syncthreads() #{nth} of {name}.cu: every schedule gives the same results"


def test_address_sanitizer_finds_no_access_out_of_bounds(tmp_path, driver):
    # Every kernel's launches with every buffer at its exact size (workspaces as
    # device_plan.h gives them), built with AddressSanitizer; the fibers' stack
    # switches take the ucontext path under ASan (runtime.cpp).
    flags = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    try:
        objs = [_compile(DRIVER, tmp_path / "driver.o", flags),
                _compile(CSRC / "emulate" / "runtime.cpp", tmp_path / "runtime.o", flags),
                _compile(CSRC / "cpu" / "parallel.cpp", tmp_path / "parallel.o", flags)]
        objs += [_compile(CSRC / "emulate" / f"{n}.cpp", tmp_path / f"{n}.o", flags) for n in SOURCES]
        exe = _link(objs, tmp_path / "driver_asan", flags)
    except subprocess.CalledProcessError as e:
        if "asan" in (e.stderr or "").lower() or "sanitize" in (e.stderr or "").lower():
            pytest.skip(f"no AddressSanitizer runtime: {e.stderr[-300:]}")
        raise
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}
    code, out = _run(exe, "ops", "2", env=env)
    assert code == 0 and "AddressSanitizer" not in out.replace("WARNING: ASan doesn't fully support", ""), out[-3000:]
    assert [l for l in out.splitlines() if not l.startswith("==")] == _run(driver, "ops", "2")[1].splitlines()
    # The check has teeth: one output value short is reported.
    code, out = _run(exe, "ops", "0", env={**env, "ROBUSTAGG_DRIVER_SHORT": "1"})
    assert code != 0 and "heap-buffer-overflow" in out, out[-3000:]
