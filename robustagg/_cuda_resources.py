"""ptxas's resource report of this build's CUDA kernels.

When nvcc builds the kernels, setup.py keeps ptxas's ``-v`` report beside the
module (``robustagg/_cuda_resources.txt``): per kernel and target arch, the
registers, stack frame, spill stores and loads, static shared memory and
barriers. The resource gate (python_tests/test_cuda_resources.py) and the
cost model (bench/gpu_model.py) read it through :func:`load`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cuda_resources.txt")

_NAMESPACES = ("(anonymous namespace)::", "{anonymous}::", "robustagg::", "cuda::", "device_math::")


@dataclasses.dataclass(frozen=True)
class KernelResources:
    source: str      # the .cu file's stem ("trimmed_mean")
    kernel: str      # "order_registers_kernel<16, float>", as launch.cuh's kernel_name spells it
    arch: str        # "sm_90"
    registers: int
    stack: int       # bytes of stack frame per thread
    spill_stores: int
    spill_loads: int
    shared: int      # bytes of static shared memory per block
    barriers: int


def short_name(demangled: str) -> str:
    """``void robustagg::cuda::(anonymous namespace)::k<robustagg::Half, true>(...)``
    -> ``k<Half, true>``: no namespaces, no return type, no parameters."""
    name = demangled
    for ns in _NAMESPACES:
        name = name.replace(ns, "")
    if name.startswith("void "):
        name = name[5:]
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        raise RuntimeError("c++filt (binutils) is needed to read kernel names in ptxas's report")
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_BARRIERS = re.compile(r"used (\d+) barriers")


def parse(text: str) -> list[KernelResources]:
    """Every entry function of a report made of ``# <source>`` headers, each
    followed by that file's ptxas -v output."""
    raw, source, cur = [], "?", None
    for line in text.splitlines():
        if line.startswith("# "):
            source = line[2:].strip().removesuffix(".cu")
            continue
        m = _ENTRY.search(line)
        if m:
            cur = {"source": source, "mangled": m.group(1), "arch": m.group(2)}
            raw.append(cur)
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
            continue
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m[1])
            s, b = _SMEM.search(line), _BARRIERS.search(line)
            cur["shared"] = int(s[1]) if s else 0
            cur["barriers"] = int(b[1]) if b else 0
            cur = None
    incomplete = [r["mangled"] for r in raw if "registers" not in r or "stack" not in r]
    if incomplete:
        raise ValueError(f"ptxas report: no resource lines for {incomplete[:3]}")
    names = demangle([r["mangled"] for r in raw])
    return [KernelResources(r["source"], short_name(n), r["arch"], r["registers"], r["stack"], r["spill_stores"],
                            r["spill_loads"], r["shared"], r["barriers"]) for r, n in zip(raw, names)]


def load(path: str = REPORT) -> list[KernelResources] | None:
    """The build's report, or None when this build has no CUDA kernels."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return parse(f.read())
