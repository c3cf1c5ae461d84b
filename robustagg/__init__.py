"""robustagg: robust aggregation rules for federated learning.

The kernels are in :mod:`robustagg.ops` (also ``torch.ops.robustagg.*``), their
pure-PyTorch twins in :mod:`robustagg.reference`.
"""
from ._version import __version__
from . import aggregators, ops, reference, utils

__all__ = ["__version__", "aggregators", "native_info", "ops", "reference", "utils"]


def native_info() -> dict:
    """What the installed native core holds.

    Returns a dict with ``version``, ``backends`` (``"cpu"``, plus ``"cuda"``
    when CUDA kernels were compiled), ``cuda_archs``, ``compiler``,
    ``num_threads`` (what the CPU kernels will use) and ``cuda_fallback``
    (how CUDA tensors are served when no CUDA kernels are built).
    """
    C = ops._C
    if C is None:
        return {"version": __version__, "backends": [], "cuda_archs": [], "compiler": None,
                "num_threads": ops.get_num_threads(), "cuda_fallback": "reference",
                "error": str(ops._IMPORT_ERROR)}
    with_cuda = bool(C.with_cuda)
    return {
        "version": __version__,
        "backends": ["cpu", "cuda"] if with_cuda else ["cpu"],
        "cuda_archs": [a for a in str(C.cuda_archs).split(",") if a],
        "compiler": C.compiler,
        "num_threads": ops.get_num_threads(),
        "cuda_fallback": None if with_cuda else "reference",
    }
