"""robustagg: robust aggregation rules for federated learning.

The kernels are in :mod:`robustagg.ops` (also ``torch.ops.robustagg.*``), their
pure-PyTorch twins in :mod:`robustagg.reference`.
"""
from ._version import __version__
from . import aggregators, ops, reference, utils

__all__ = ["__version__", "aggregators", "native_info", "ops", "reference", "utils"]


def native_info() -> dict:
    """What the installed native core holds, and what proves it.

    Returns a dict with ``version``; ``backends`` (``"cpu"``, plus ``"cuda"``
    when CUDA kernels were compiled into this build); ``cuda_archs``;
    ``compiler``; ``cpu_isa`` (the instruction set of the CPU kernels in use:
    ``"x86-64"``, ``"avx2"`` or ``"avx512"`` in a portable build, chosen at
    import by what the CPU supports or by ``ROBUSTAGG_CPU_ISA``; ``"-march=X"``
    in a ``ROBUSTAGG_MARCH=X`` build; a note where the build has one copy with
    the compiler's default flags, as off x86-64 Linux) and ``cpu_isas`` (those a portable build
    holds and this CPU runs); ``num_threads`` (what the CPU kernels will use); ``ops``:
    for every op and device, what is registered (``"native"`` or
    ``"reference"``, the pure-PyTorch fallback); ``cuda_fallback``
    (``"reference"`` when CUDA tensors are served by the reference); and
    ``proven``: which tests establish each backend.
    """
    C = ops._C
    registered = {name: dict(devices) for name, devices in ops.REGISTERED.items()}
    with_cuda = C is not None and bool(C.with_cuda)
    proven = {
        "cpu": "python_tests: parity with robustagg.reference over shapes, dtypes, ties and non-finite "
               "columns, hand tables, determinism (CI)",
        "cuda_device_math": "the CUDA launchers and kernels run on the CPU under an emulation of the CUDA "
                            "execution model over the parity grid, under several thread schedules, bitwise "
                            "against the CPU kernels; an AddressSanitizer build; ptxas resources gated "
                            "(python_tests/test_device_math.py, test_emulation.py, test_cuda_resources.py, CI)",
        "cuda": "bench/gpu_check.sh on a GPU: python_tests/test_cuda.py (pytest -m cuda), "
                "compute-sanitizer memcheck/racecheck, bench/results/<gpu>.md",
    }
    if C is None:
        return {"version": __version__, "backends": [], "cuda_archs": [], "compiler": None, "cpu_isa": None,
                "cpu_isas": [],
                "num_threads": ops.get_num_threads(), "ops": registered, "cuda_fallback": "reference",
                "proven": proven, "error": str(ops._IMPORT_ERROR)}
    return {
        "version": __version__,
        "backends": ["cpu", "cuda"] if with_cuda else ["cpu"],
        "cuda_archs": [a for a in str(C.cuda_archs).split(",") if a],
        "compiler": C.compiler,
        "cpu_isa": (f"-march={C.march}" if C.march else C.cpu_isa()
                    if any(built for built, _ in C.cpu_isas().values()) else "one copy, the compiler's default flags"),
        "cpu_isas": [name for name, (built, ok) in C.cpu_isas().items() if built and ok],
        "num_threads": ops.get_num_threads(),
        "ops": registered,
        "cuda_fallback": None if all(v["cuda"] == "native" for v in registered.values()) else "reference",
        "proven": proven,
    }
