"""The sdist and its metadata: what the README points to ships, under the SPDX license."""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setuptools_version():
    import setuptools
    return tuple(int(p) for p in setuptools.__version__.split(".")[:2])


def test_license_file_and_spdx_expression():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert '\nlicense = "Apache-2.0"\n' in pyproject and 'license-files = ["LICENSE"]' in pyproject


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "setup.py")), reason="not a source checkout")
@pytest.mark.skipif(_setuptools_version() < (77, 0), reason="the SPDX license field needs setuptools >= 77 "
                    "(pyproject's build-system asks for it)")
def test_sdist_holds_the_tests_examples_docs_bench_and_license(tmp_path):
    code = ("import sys\nfrom setuptools import build_meta\n"
            "print(build_meta.build_sdist(sys.argv[1]))\n")
    env = {**os.environ, "ROBUSTAGG_CUDA": "0"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name = out.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
        pkg_info = tar.extractfile(f"{name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    for path in ("LICENSE", "python_tests/test_readme.py", "python_tests/common.py", "examples/aggregate_all.py",
                 "docs/design.md", "bench/table.py", "bench/results/cpu.md", "csrc/bindings.cpp", ".ci/run"):
        assert path in members, path
    assert not any(m.endswith((".so", ".pyc")) for m in members)
    assert "License-Expression: Apache-2.0" in pkg_info


SMOKE = r"""
import sys
import torch
import robustagg
from robustagg import aggregators as A, ops, reference
assert robustagg.__file__.startswith(sys.argv[1]), robustagg.__file__  # the wheel's copy, not a checkout's
info = robustagg.native_info()
u = torch.randn(20, 4000, dtype=torch.float64)
torch.testing.assert_close(ops.trimmed_mean(u, 4), reference.trimmed_mean(u, 4))
torch.testing.assert_close(ops.residual_reweight(u[:, :300].contiguous())[0],
                           reference.residual_reweight(u[:, :300].contiguous())[0])
torch.testing.assert_close(A.Median()(u).update, reference.median(u))
print(info["cpu_isa"], ",".join(info["cpu_isas"]))
"""


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "setup.py")), reason="not a source checkout")
@pytest.mark.skipif(_setuptools_version() < (77, 0), reason="needs setuptools >= 77 (pyproject's build-system)")
@pytest.mark.skipif(sys.platform != "linux", reason="the portable wheel's checks read ELF objects")
def test_a_portable_wheel_from_the_sdist_installs_in_a_fresh_venv_and_runs_each_copy(tmp_path):
    """As pip does from an index: the sdist, a wheel built from it with the
    default (portable) flags, that wheel in a fresh virtual environment (torch
    from the system's site-packages), a smoke run on the best copy of the CPU
    kernels and on each one this CPU runs (ROBUSTAGG_CPU_ISA)."""
    pytest.importorskip("pybind11")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTAGG_")}
    env["ROBUSTAGG_CUDA"] = "0"  # the CPU kernels are what this checks; CUDA is compiled by the main install
    build = ("import sys\nfrom setuptools import build_meta\n"
             "print(build_meta.build_{kind}(sys.argv[1]))\n")
    out = subprocess.run([sys.executable, "-c", build.format(kind="sdist"), str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    sdist = out.stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / sdist) as tar:
        tar.extractall(tmp_path / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    src = tmp_path / "src" / sdist[:-len(".tar.gz")]
    out = subprocess.run([sys.executable, "-c", build.format(kind="wheel"), str(tmp_path)], cwd=src, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    wheel = out.stdout.strip().splitlines()[-1]
    assert wheel.endswith("-linux_x86_64.whl") or "x86_64" not in wheel, wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import zipfile
    with zipfile.ZipFile(tmp_path / wheel) as z:  # installing a wheel is unpacking it (no network, no pip)
        z.extractall(site)
    pkg = os.path.join(site, "robustagg")
    run = subprocess.run([py, "-c", SMOKE, pkg], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    best, runnable = run.stdout.split()
    runnable = runnable.split(",")
    assert runnable[0] == "x86-64" and best == runnable[-1]
    for isa in runnable:
        one = subprocess.run([py, "-c", SMOKE, pkg], cwd=tmp_path, env={**env, "ROBUSTAGG_CPU_ISA": isa},
                             capture_output=True, text=True, timeout=300)
        assert one.returncode == 0 and one.stdout.split()[0] == isa, one.stderr[-3000:]
    if shutil.which("objdump"):
        from test_cpu_isa import _avx_outside_the_copies
        so = [os.path.join(pkg, f) for f in os.listdir(pkg) if f.startswith("_C.") and f.endswith(".so")]
        outside, in_avx2, copies = _avx_outside_the_copies(so[0])
        assert outside == [] and in_avx2 == [], (outside[:5], in_avx2[:5])
        assert copies["avx2"] > 1000 and copies["avx512"] > 1000
