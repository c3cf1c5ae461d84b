"""The sdist and its metadata: what the README points to ships, under the SPDX license."""
import os
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
