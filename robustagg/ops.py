"""The public kernels of robustagg, as torch operators.

Every function here is also registered as ``torch.ops.robustagg.<name>`` with a
fake (meta) implementation, so it works under ``torch.compile`` and passes
``torch.library.opcheck``. Registration uses ``torch.library.Library``
``define``/``impl`` rather than ``torch.library.custom_op``: measured on the
development machine, the dispatch overhead per call is 2.2 us against 8.1 us
(bench/overhead.py).

Each op is one table entry (:class:`_Op`): its schema, its checks, its fake,
its pure-PyTorch reference, and its native entries. Backends are
registrations: the reference is registered once as the fallback for every
device; the CPU kernels for ``CPU``; the CUDA kernels for ``CUDA`` only when
``_C`` was built with them. :func:`robustagg.native_info` reports what is
registered for each device. The CUDA glue also drives ``_C.device_math``, the
very CUDA launchers and kernels compiled for the host under an emulation of
the CUDA execution model (same signatures, CPU memory), through
:func:`run_device_math`: that is how the tests prove the launchers and the
device arithmetic on machines without a GPU.

Conventions shared by all ops (clients are rows):

* ``updates`` is ``[K, d]`` with K >= 1 clients and d >= 1 coordinates, a
  floating dtype (float32, float64; float16/bfloat16 are accepted and computed
  in float32, results of shape ``[d]`` cast back). Non-contiguous input is made
  contiguous first.
* ``weights`` (optional) is ``[K]``, finite, non-negative, not all zero, on the
  same device as ``updates``. (Checking the values of CUDA weights reads them
  back, one synchronisation per call; while a CUDA graph is being captured the
  value check is skipped.)
* Results of shape ``[d]`` have the dtype of ``updates``; ``[K, K]`` and
  ``[K]`` results are float64 for float64 input and float32 otherwise.
* CPU kernels run on ``torch.get_num_threads()`` threads (or
  :func:`set_num_threads`), and give bitwise identical results for any thread
  count. CUDA kernels run on the current stream of the tensor's device, never
  synchronise, and can be captured in a CUDA graph.
* NaN / Inf: documented per op. The aggregator layer removes non-finite
  clients before any op runs; the ops themselves never hang or crash on them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from . import reference as _reference

def _not_built_message(err: ImportError) -> str:
    """Why ``_C`` did not import, in words that say what to do."""
    import glob
    import importlib.machinery
    here = os.path.dirname(os.path.abspath(__file__))
    built = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES for p in glob.glob(os.path.join(here, "_C" + suffix))]
    if built:
        return f"the native module {built[0]} failed to import: {err}"
    return (f"the native module robustagg._C is not built in {here} (a source checkout: Python run from the "
            f"checkout root imports this tree, not an installed robustagg). Build it here with "
            f"`pip install -e .`, or run Python from another directory to use the installed package")


try:  # the compiled core; its absence is reported by native_info()
    from . import _C
except ImportError as _err:  # a source tree without a build, or a broken install
    _C = None
    _IMPORT_ERROR = _not_built_message(_err)
else:
    _IMPORT_ERROR = None


def _choose_cpu_isa() -> None:
    """ROBUSTAGG_CPU_ISA=x86-64|avx2|avx512 picks the copy of the CPU kernels
    (a portable build holds one per instruction set and otherwise takes the
    best this CPU supports); an unknown, unbuilt or unsupported one is an error."""
    want = os.environ.get("ROBUSTAGG_CPU_ISA", "").strip()
    if not want or _C is None:
        return
    isas = _C.cpu_isas()
    if want not in isas:
        raise ImportError(f"ROBUSTAGG_CPU_ISA={want!r}: must be one of {', '.join(isas)}")
    built, supported = isas[want]
    if not built:
        flags = f"-march={_C.march}" if _C.march else "the compiler's default flags"
        raise ImportError(f"ROBUSTAGG_CPU_ISA={want!r}: this build holds one copy of the CPU kernels "
                          f"({flags}); unset ROBUSTAGG_CPU_ISA")
    if not supported:
        raise ImportError(f"ROBUSTAGG_CPU_ISA={want!r}: this CPU cannot run it; it supports "
                          f"{', '.join(k for k, (_, ok) in isas.items() if ok)}")
    _C._set_cpu_isa(want)


_choose_cpu_isa()

__all__ = [
    "sign_vote",
    "robust_lr_mean",
    "robust_lr_mean_counted",
    "trimmed_mean",
    "median",
    "masked_trimmed_mean",
    "closest_to_median_mean",
    "repeated_median_line",
    "residual_reweight",
    "residual_client_sums",
    "residual_apply",
    "sq_distances_to",
    "pairwise_sq_distances",
    "cosine_similarity",
    "pairwise_stats",
    "set_num_threads",
    "get_num_threads",
    "run_device_math",
]

_DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_INTERCEPT_CODE = {"siegel": 0, "median": 1}
_num_threads: Optional[int] = None


#: The most threads the CPU kernels use: 4 per CPU. The pool keeps every
#: thread it ever started for the life of the process (see docs/design.md,
#: "Threads and fork"), and beyond the cores more threads only contend.
MAX_THREADS = 4 * (os.cpu_count() or 1)


def set_num_threads(n: Optional[int]) -> None:
    """Threads used by the CPU kernels, 1 to :data:`MAX_THREADS` (4 per CPU);
    ``None`` (default) follows ``torch.get_num_threads()``, capped alike."""
    global _num_threads
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_num_threads: n must be a positive int or None; got {n!r}")
    if n is not None and n > MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be at most {MAX_THREADS} (4 per CPU, {os.cpu_count()} CPUs: "
                         f"the pool's threads stay for the life of the process); got {n}")
    _num_threads = n


def get_num_threads() -> int:
    """Threads the CPU kernels will use on the next call (at most :data:`MAX_THREADS`)."""
    return _num_threads if _num_threads is not None else min(torch.get_num_threads(), MAX_THREADS)


# --------------------------------------------------------------------------- checks

# What each argument must be, in the words of the errors (argument types are
# checked before dispatch, where torch's schema parser would otherwise reject
# them with a message of its own; values once, in the registered kernel).
_TYPE_WORDS = {
    "updates": "a torch.Tensor of shape [K, d]",
    "weights": "a torch.Tensor of shape [K] or None",
    "trim": "an int (values dropped per tail)",
    "client_sums": "a torch.Tensor of shape [K]",
    "point": "a torch.Tensor of shape [d] or None",
}


def _check_type(op: str, name: str, kind: str, value) -> None:
    ok = {
        "Tensor": isinstance(value, torch.Tensor),
        "Tensor?": value is None or isinstance(value, torch.Tensor),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[kind]
    if ok:
        return
    if kind == "str":  # a choice: say which
        raise ValueError(f"{op}: {name} must be 'siegel' or 'median'; got {value!r}")
    words = _TYPE_WORDS.get(name, {"int": "an int", "float": "a real number", "bool": "a bool"}.get(kind, kind))
    raise TypeError(f"{op}: {name} must be {words}; got {type(value).__name__}")


def _check_updates(op: str, updates) -> Tuple[int, int]:
    _check_type(op, "updates", "Tensor", updates)
    if updates.dim() != 2:
        raise ValueError(f"{op}: updates must have shape [K, d] (2 dims); got shape {tuple(updates.shape)}")
    if updates.dtype not in _DTYPE_CODE:
        raise TypeError(
            f"{op}: updates must be float32, float64, float16 or bfloat16; got {updates.dtype}")
    K, d = updates.shape
    if K < 1:
        raise ValueError(f"{op}: updates needs K >= 1 clients (rows); got shape {tuple(updates.shape)}")
    if d < 1:
        raise ValueError(f"{op}: updates needs d >= 1 coordinates (columns); got shape {tuple(updates.shape)}")
    return int(K), int(d)


def _check_weights_shape(op: str, weights, updates, K: int) -> None:
    if weights is None:
        return
    _check_type(op, "weights", "Tensor?", weights)
    if weights.dim() != 1 or weights.shape[0] != K:
        raise ValueError(f"{op}: weights must have shape [K] = [{K}]; got shape {tuple(weights.shape)}")
    if not (weights.dtype.is_floating_point or weights.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8, torch.int8)):
        raise TypeError(f"{op}: weights must be a real numeric tensor; got {weights.dtype}")
    if weights.device != updates.device:
        raise ValueError(
            f"{op}: weights must be on the same device as updates ({updates.device}); got {weights.device}")


def _read_back(t: torch.Tensor) -> list:
    """Values of ``t`` on the host: the one step of the CUDA glue that waits for
    the device (a weighted call's checks). Tests count its calls."""
    return t.tolist()


def _weights_as_float64(op: str, weights: Optional[torch.Tensor], capturing: bool = False) -> Optional[torch.Tensor]:
    """Value checks (data-dependent: real kernels only) and conversion to float64.
    The three checks are read back together: one host synchronisation on a GPU,
    none while a graph is being captured (``capturing``: reading values back is
    not allowed then, and the checks are skipped)."""
    if weights is None:
        return None
    w = weights.detach().to(torch.float64).contiguous()
    if capturing:
        return w
    finite, negative, positive = _read_back(torch.stack([torch.isfinite(w).all(), (w < 0).any(), (w > 0).any()]))
    if not finite:
        raise ValueError(f"{op}: weights must be finite; got {weights.tolist() if w.numel() <= 16 else 'non-finite values'}")
    if negative:
        raise ValueError(f"{op}: weights must be non-negative; got min {float(w.min())}")
    if not positive:
        raise ValueError(f"{op}: weights must not be all zero")
    return w


def _check_trim(op: str, trim, K: int) -> None:
    _check_type(op, "trim", "int", trim)
    if trim < 0 or 2 * trim >= K:
        raise ValueError(f"{op}: trim must satisfy 0 <= trim and 2*trim < K = {K}; got trim={trim}")


def _check_real(op: str, name: str, value, lo: float, hi: float, lo_open: bool = False) -> None:
    _check_type(op, name, "float", value)
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{op}: {name} must be in {bracket}{lo}, {hi}]; got {value}")


def _check_intercept(op: str, intercept) -> None:
    if intercept not in _INTERCEPT_CODE:
        raise ValueError(f"{op}: intercept must be 'siegel' or 'median'; got {intercept!r}")


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of [K]- and [K, K]-shaped results (and of kernel outputs before casting)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- backends


class _Call:
    """One call of a native entry: the contiguous input, its dtype code, the
    threads (CPU) or the stream (device), and result allocation on the input's
    device. ``be`` is ``_C`` (CPU), ``_C.cuda`` or ``_C.device_math``."""

    def __init__(self, be, updates: torch.Tensor, stream: int = 0, capturing: bool = False):
        self.be = be
        self.u = updates.detach().contiguous()
        self.ptr = self.u.data_ptr()
        self.code = _DTYPE_CODE[self.u.dtype]
        self.K, self.d = self.u.shape
        self.stream = stream
        self.threads = get_num_threads()
        # A CUDA graph is being captured (or, for the emulated device, the tests
        # say so): the glue must not read anything back to the host.
        self.capturing = capturing

    def again(self, updates: torch.Tensor) -> "_Call":
        """The same backend, stream and capture state for other updates."""
        return _Call(self.be, updates, self.stream, self.capturing)

    def empty(self, *shape, dtype=None) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype or _out_dtype(self.u.dtype), device=self.u.device)

    def workspace(self, nbytes: int) -> int:
        """Pointer to nbytes of scratch on the device (kept alive by self), or 0."""
        if nbytes == 0:
            return 0
        self._ws = torch.empty(nbytes, dtype=torch.uint8, device=self.u.device)
        return self._ws.data_ptr()

    def cast_back(self, out: torch.Tensor) -> torch.Tensor:
        return out if out.dtype == self.u.dtype else out.to(self.u.dtype)


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


@dataclass(frozen=True)
class _Op:
    """One op: schema, checks (type- and value-checks of every argument, no
    data access; return (K, d)), fake, reference, and native entries:
    ``cpu(call, *args)`` runs ``_C``'s CPU kernel; ``device(call, *args)`` runs
    the same-signature entries of ``_C.cuda`` / ``_C.device_math``."""

    schema: str
    check: Callable
    fake: Callable
    reference: Callable
    cpu: Callable
    device: Callable

    @property
    def name(self) -> str:
        return self.schema.split("(", 1)[0]

    def arg_kinds(self):
        """(name, schema type) of each argument, in order."""
        args = self.schema.split("(", 1)[1].split(") ->", 1)[0]
        return [(a.split()[1].split("=")[0], a.split()[0]) for a in args.split(", ")]


_OPS: Dict[str, _Op] = {}
_ARG_KINDS: Dict[str, list] = {}
# What is registered for each op and device: "native" or "reference".
REGISTERED: Dict[str, Dict[str, str]] = {}
_lib = torch.library.Library("robustagg", "DEF")


def _cuda_built() -> bool:
    return _C is not None and bool(getattr(_C, "with_cuda", False)) and hasattr(_C, "cuda")


def _native() -> "object":
    if _C is None:
        raise RuntimeError(f"robustagg: {_IMPORT_ERROR}")
    return _C


def _define(op: _Op) -> None:
    name = op.name
    _lib.define(op.schema)

    def reference_impl(*args):
        op.check(*args)
        return op.reference(*args)

    def cpu_impl(*args):
        op.check(*args)
        return op.cpu(_Call(_native(), args[0]), *args[1:])

    def cuda_impl(*args):
        op.check(*args)
        u = args[0]
        with torch.cuda.device(u.device):
            stream = torch.cuda.current_stream(u.device).cuda_stream
            return op.device(_Call(_C.cuda, u, stream, torch.cuda.is_current_stream_capturing()), *args[1:])

    # The reference serves every device that has no native kernel.
    _lib.impl(name, reference_impl, "CompositeExplicitAutograd")
    _lib.impl(name, cpu_impl, "CPU")
    REGISTERED[name] = {"cpu": "native", "cuda": "reference"}
    if _cuda_built():
        _lib.impl(name, cuda_impl, "CUDA")
        REGISTERED[name]["cuda"] = "native"
    torch.library.register_fake(f"robustagg::{name}", lib=_lib)(lambda *args: op.fake(op.check(*args), *args))
    _OPS[name] = op
    _ARG_KINDS[name] = op.arg_kinds()


_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _check_types(name: str, args) -> None:
    for (arg, kind), value in zip(_ARG_KINDS[name], args):
        _check_type(name, arg, kind, value)
    # Python ints beyond the schema's int64 / double: torch's parser would reject
    # them with "expected int, found int". The op's own checks state the bound
    # (a trim of 2**70 breaks 2*trim < K); else say what the schema holds.
    for (arg, kind), value in zip(_ARG_KINDS[name], args):
        if kind == "int" and not _INT64[0] <= value <= _INT64[1]:
            _OPS[name].check(*args)
            raise ValueError(f"{name}: {arg} must fit in a 64-bit signed int; got {value}")
        if kind == "float" and isinstance(value, int) and not -2 ** 1024 < value < 2 ** 1024:
            raise ValueError(f"{name}: {arg} must be a finite real number (a float64); got an int of "
                             f"{value.bit_length()} bits")


def _dispatch(name: str, *args):
    """The public entry: argument types first (see _TYPE_WORDS), then the op on
    detached tensors: aggregation is not differentiated, so results never require
    grad (a backward through them is torch's plain "does not require grad" error,
    not a silent zero gradient)."""
    _check_types(name, args)
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    return getattr(torch.ops.robustagg, name)(*args)


_EMULATED_CAPTURE = [False]


class _emulated_graph_capture:
    """Within this context, :func:`run_device_math` calls behave as CUDA calls
    made while a graph is being captured: the glue must read nothing back
    (tests run it under a dispatch mode that fails on any read-back)."""

    def __enter__(self):
        self._old = _EMULATED_CAPTURE[0]
        _EMULATED_CAPTURE[0] = True

    def __exit__(self, *exc):
        _EMULATED_CAPTURE[0] = self._old


def run_device_math(name: str, *args):
    """Runs op ``name`` through its CUDA launchers and kernels compiled for the
    host under the CUDA emulation (``_C.device_math``) on CPU tensors, with the
    CUDA glue of this module: the same launches, workspace, chunks, barriers
    and arithmetic as on a GPU. For tests; it is not a fast path."""
    if name not in _OPS:
        raise ValueError(f"run_device_math: unknown op {name!r}; the ops are {', '.join(sorted(_OPS))}")
    op = _OPS[name]
    _check_types(name, args)
    op.check(*args)
    if args[0].device.type != "cpu":
        raise ValueError(f"run_device_math: updates must be a CPU tensor; got {args[0].device}")
    return op.device(_Call(_native().device_math, args[0], 0, _EMULATED_CAPTURE[0]), *args[1:])


# sign_vote ------------------------------------------------------------------


def _sign_vote_check(updates, weights=None):
    K, d = _check_updates("sign_vote", updates)
    _check_weights_shape("sign_vote", weights, updates, K)
    return K, d


def _sign_vote_out(c: _Call, weights):
    return c.empty(c.d, dtype=torch.int32) if weights is None else c.empty(c.d)


def _times_pow2(t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``t * 2**e`` in float64 for a 0-dim integer tensor ``e`` on t's device, in
    two exact steps (2**1024 itself is not a float64): no read-back."""
    half = torch.div(e, 2, rounding_mode="floor").to(torch.float64)
    return t.to(torch.float64) * torch.pow(2.0, half) * torch.pow(2.0, e.to(torch.float64) - half)


def _scaled(c: _Call, op: str, weights):
    """Checked float64 weights scaled by the power of two that brings the
    largest into [0.5, 1) (exactly reference.scaled_weights), and its exponent
    as a 0-dim tensor on the device (0 for zero or non-finite weights), found
    on the device: no read-back beyond the value checks."""
    w = _weights_as_float64(op, weights, c.capturing)
    if w is None:
        return None, None
    top = w.max()
    _, e = torch.frexp(top)
    e = torch.where((top > 0) & torch.isfinite(top), e, torch.zeros_like(e))
    return _times_pow2(w, -e), e


def _sign_vote_run(c: _Call, weights, tail):
    w, e = _scaled(c, "sign_vote", weights)
    out = _sign_vote_out(c, w)
    c.be.sign_vote(c.ptr, c.code, c.K, c.d, _ptr(w), out.data_ptr(), tail)
    return out if w is None else _times_pow2(out, e).to(out.dtype)


def _sign_vote_cpu(c: _Call, weights=None):
    return _sign_vote_run(c, weights, c.threads)


def _sign_vote_device(c: _Call, weights=None):
    return _sign_vote_run(c, weights, c.stream)


def _sign_vote_ref(updates, weights=None):
    _weights_as_float64("sign_vote", weights)
    return _reference.sign_vote(updates, weights)


_define(_Op(
    "sign_vote(Tensor updates, Tensor? weights=None) -> Tensor", _sign_vote_check,
    lambda Kd, updates, weights=None: updates.new_empty(
        Kd[1], dtype=torch.int32 if weights is None else _out_dtype(updates.dtype)),
    _sign_vote_ref, _sign_vote_cpu, _sign_vote_device))


def sign_vote(updates: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-coordinate sign vote: ``v[j] = sum_k w_k * sgn(updates[k, j])``.

    ``sgn`` is +1, -1, or 0 for zeros of either sign (an abstention, as in the
    RLR authors' code) and for NaN.

    Args:
        updates: ``[K, d]`` client updates.
        weights: optional ``[K]`` non-negative client weights.

    Returns:
        ``[d]`` int32 vote counts when unweighted; weighted sums (float32, or
        float64 for float64 input) otherwise.

    Example:
        >>> import torch, robustagg.ops as ops
        >>> ops.sign_vote(torch.tensor([[1., -2.], [3., 0.], [-1., -1.]]))
        tensor([ 1, -2], dtype=torch.int32)
    """
    return _dispatch("sign_vote", updates, weights)


# robust_lr_mean ----------------------------------------------------------------


def _rlr_check(updates, threshold, weights=None):
    K, d = _check_updates("robust_lr_mean", updates)
    _check_real("robust_lr_mean", "threshold", threshold, 0.0, math.inf)
    _check_weights_shape("robust_lr_mean", weights, updates, K)
    return K, d


def _rlr_run(c: _Call, threshold, weights, tail, counted: bool = False):
    w, _ = _scaled(c, "robust_lr_mean", weights)   # a weighted mean does not depend on the scale
    out = c.empty(c.d)
    flipped = c.empty((), dtype=torch.int64) if counted else None
    c.be.robust_lr_mean(c.ptr, c.code, c.K, c.d, float(threshold), _ptr(w), out.data_ptr(), _ptr(flipped), tail)
    return (c.cast_back(out), flipped) if counted else c.cast_back(out)


def _rlr_cpu(c: _Call, threshold, weights=None):
    return _rlr_run(c, threshold, weights, c.threads)


def _rlr_device(c: _Call, threshold, weights=None):
    return _rlr_run(c, threshold, weights, c.stream)


def _rlr_ref(updates, threshold, weights=None):
    _weights_as_float64("robust_lr_mean", weights)
    return _reference.robust_lr_mean(updates, threshold, weights)


_define(_Op(
    "robust_lr_mean(Tensor updates, float threshold, Tensor? weights=None) -> Tensor", _rlr_check,
    lambda Kd, updates, threshold, weights=None: updates.new_empty(Kd[1]),
    _rlr_ref, _rlr_cpu, _rlr_device))


def robust_lr_mean(updates: torch.Tensor, threshold: float,
                   weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Robust Learning Rate aggregate (RLR, eq. 5-6), in one pass.

    ``m = sum_k w_k u_k / sum_k w_k``; ``out[j] = m[j]`` where
    ``|sum_k sgn(u[k, j])| >= threshold``, else ``-m[j]``. The vote is the
    unweighted count of agents (the paper's theta: 4 of 10 agents, 8 of 40),
    sgn as in :func:`sign_vote`. With no zeros the vote has the parity of K,
    so useful thresholds come in steps of 2.

    Args:
        updates: ``[K, d]`` client updates.
        threshold: theta >= 0, an absolute number of votes.
        weights: optional ``[K]`` non-negative weights of the mean (sample counts).

    Returns:
        ``[d]`` in the dtype of ``updates``. A NaN in a column makes that
        coordinate NaN.

    Example:
        >>> ops.robust_lr_mean(torch.tensor([[1., 1.], [1., -1.], [1., 3.]]), threshold=2)
        tensor([ 1., -1.])
    """
    return _dispatch("robust_lr_mean", updates, threshold, weights)


def _rlr_counted_ref(updates, threshold, weights=None):
    _weights_as_float64("robust_lr_mean_counted", weights)
    votes = _reference.sign_vote(updates).abs().double()
    return (_reference.robust_lr_mean(updates, threshold, weights),
            (votes < threshold).sum().to(torch.int64).to(updates.device))


_define(_Op("robust_lr_mean_counted(Tensor updates, float threshold, Tensor? weights=None) -> (Tensor, Tensor)",
            lambda updates, threshold, weights=None: _rlr_check(updates, threshold, weights),
            lambda Kd, updates, threshold, weights=None: (updates.new_empty(Kd[1]),
                                                          updates.new_empty((), dtype=torch.int64)),
            _rlr_counted_ref,
            lambda c, threshold, weights=None: _rlr_run(c, threshold, weights, c.threads, counted=True),
            lambda c, threshold, weights=None: _rlr_run(c, threshold, weights, c.stream, counted=True)))


def robust_lr_mean_counted(updates: torch.Tensor, threshold: float,
                           weights: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`robust_lr_mean` and, from the same pass, the number of
    coordinates whose learning rate is -1 (``|sum_k sgn| < threshold``), as a
    0-dim int64 tensor: what :class:`~robustagg.aggregators.RobustLR` reports
    as ``flipped_fraction`` without a second pass over the updates.

    Example:
        >>> mean, flipped = ops.robust_lr_mean_counted(torch.tensor([[1., 1.], [1., -1.], [1., 3.]]), 2)
        >>> mean, int(flipped)
        (tensor([ 1., -1.]), 1)
    """
    return _dispatch("robust_lr_mean_counted", updates, threshold, weights)


# trimmed_mean / median / masked_trimmed_mean ---------------------------------
# One glue for the three: the CPU entries take (..., out, threads), the device
# entries (..., out, workspace, stream) with order_workspace_bytes.


def _order_cpu(entry: str):
    def run(c: _Call, *params):
        out = c.empty(c.d)
        getattr(c.be, entry)(c.ptr, c.code, c.K, c.d, *params, out.data_ptr(), c.threads)
        return c.cast_back(out)
    return run


def _order_device(entry: str):
    def run(c: _Call, *params):
        out = c.empty(c.d)
        ws = c.workspace(c.be.order_workspace_bytes(c.code, c.K, c.d))
        getattr(c.be, entry)(c.ptr, c.code, c.K, c.d, *params, out.data_ptr(), ws, c.stream)
        return c.cast_back(out)
    return run


def _column_fake(Kd, updates, *params):
    return updates.new_empty(Kd[1])


def _trim_check(updates, trim):
    K, d = _check_updates("trimmed_mean", updates)
    _check_trim("trimmed_mean", trim, K)
    return K, d


_define(_Op("trimmed_mean(Tensor updates, int trim) -> Tensor", _trim_check, _column_fake,
            _reference.trimmed_mean, _order_cpu("trimmed_mean"), _order_device("trimmed_mean")))


def trimmed_mean(updates: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise trimmed mean: drop ``trim`` smallest and ``trim`` largest
    values per coordinate and average the other ``K - 2*trim`` (Yin et al. 2018).

    Args:
        updates: ``[K, d]`` client updates.
        trim: values dropped per tail, ``0 <= trim`` and ``2*trim < K``
            (``trim = 0`` is the plain mean).

    Returns:
        ``[d]`` in the dtype of ``updates``. Values are ordered with NaN above
        +inf (as ``torch.sort``): NaNs that fall in the upper tail are trimmed
        away, others make the coordinate NaN.

    Example:
        >>> ops.trimmed_mean(torch.tensor([[1.], [2.], [100.], [3.], [-50.]]), trim=1)
        tensor([2.])
    """
    return _dispatch("trimmed_mean", updates, trim)


_define(_Op("median(Tensor updates) -> Tensor", lambda updates: _check_updates("median", updates), _column_fake,
            _reference.median, _order_cpu("median"), _order_device("median")))


def median(updates: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median; for even K the midpoint ``a/2 + b/2`` of the two
    middle values (``torch.median`` returns the lower one instead).

    Args:
        updates: ``[K, d]`` client updates.

    Returns:
        ``[d]`` in the dtype of ``updates``; NaN sorts above +inf, so a
        coordinate is NaN only when NaNs reach the middle.

    Example:
        >>> ops.median(torch.tensor([[1.], [4.], [2.], [10.]]))
        tensor([3.])
    """
    return _dispatch("median", updates)


def _masked_check(updates, tau, trim):
    K, d = _check_updates("masked_trimmed_mean", updates)
    _check_real("masked_trimmed_mean", "tau", tau, 0.0, 1.0)
    _check_trim("masked_trimmed_mean", trim, K)
    return K, d


def _with_float_tau(run):
    return lambda c, tau, trim: run(c, float(tau), trim)


_define(_Op("masked_trimmed_mean(Tensor updates, float tau, int trim) -> Tensor", _masked_check, _column_fake,
            _reference.masked_trimmed_mean, _with_float_tau(_order_cpu("masked_trimmed_mean")),
            _with_float_tau(_order_device("masked_trimmed_mean"))))


def masked_trimmed_mean(updates: torch.Tensor, tau: float, trim: int) -> torch.Tensor:
    """Invariant aggregator (Algorithm 1): AND-mask on sign consistency plus
    coordinate-wise trimmed mean, in one pass.

    ``out[j] = trimmed_mean(updates, trim)[j]`` where
    ``|sum_k sgn(updates[k, j])| / K >= tau``, else 0. (The mask is 0/1: the
    extra 1/N in the paper's Definition 7 is a typo.)

    Args:
        updates: ``[K, d]`` client updates.
        tau: sign-consistency threshold in [0, 1]; 0 keeps every coordinate.
        trim: values dropped per tail, ``2*trim < K``.

    Returns:
        ``[d]`` in the dtype of ``updates``; NaN as in :func:`trimmed_mean`
        (NaN abstains in the vote).

    Example:
        >>> ops.masked_trimmed_mean(torch.tensor([[1., 1.], [2., -1.], [3., 1.]]), tau=1.0, trim=0)
        tensor([2., 0.])
    """
    return _dispatch("masked_trimmed_mean", updates, tau, trim)


def _closest_check(updates, trim):
    K, d = _check_updates("closest_to_median_mean", updates)
    _check_trim("closest_to_median_mean", trim, K)
    return K, d


_define(_Op("closest_to_median_mean(Tensor updates, int trim) -> Tensor", _closest_check, _column_fake,
            _reference.closest_to_median_mean, _order_cpu("closest_to_median_mean"),
            _order_device("closest_to_median_mean")))


def closest_to_median_mean(updates: torch.Tensor, trim: int) -> torch.Tensor:
    """Bulyan's coordinate step (El Mhamdi et al. 2018): per coordinate, the
    mean of the ``K - 2*trim`` values nearest the coordinate's median.

    In sorted order those values are a window; at equal distance from the
    median the lower value is kept, so the result is determined (torch's
    ``topk`` on distances leaves that choice open). ``trim = 0`` is the mean;
    where the window is centred it is :func:`trimmed_mean`.

    Args:
        updates: ``[K, d]`` client updates (for Bulyan: the θ selected ones).
        trim: ``0 <= trim`` and ``2*trim < K``; Bulyan keeps β = θ - 2f, so trim = f.

    Returns:
        ``[d]`` in the dtype of ``updates``. NaN sorts above +inf and is
        farther from the median than any number: a coordinate is NaN exactly
        when fewer than ``K - 2*trim`` of its values are not NaN.

    Example:
        >>> ops.closest_to_median_mean(torch.tensor([[0.], [1.], [2.], [3.], [10.]]), trim=1)
        tensor([2.])
    """
    return _dispatch("closest_to_median_mean", updates, trim)


# repeated median -----------------------------------------------------------------


def _rm_check(updates, intercept="siegel"):
    K, d = _check_updates("repeated_median_line", updates)
    _check_intercept("repeated_median_line", intercept)
    return K, d


def _rm_cpu(c: _Call, intercept="siegel"):
    slope, icpt = c.empty(c.d), c.empty(c.d)
    c.be.repeated_median_line(c.ptr, c.code, c.K, c.d, _INTERCEPT_CODE[intercept], slope.data_ptr(),
                              icpt.data_ptr(), c.threads)
    return c.cast_back(slope), c.cast_back(icpt)


def _rm_device(c: _Call, intercept="siegel"):
    slope, icpt = c.empty(c.d), c.empty(c.d)
    ws = c.workspace(c.be.residual_workspace_bytes(c.code, c.K, c.d))
    c.be.repeated_median_line(c.ptr, c.code, c.K, c.d, _INTERCEPT_CODE[intercept], slope.data_ptr(),
                              icpt.data_ptr(), ws, c.stream)
    return c.cast_back(slope), c.cast_back(icpt)


_define(_Op("repeated_median_line(Tensor updates, str intercept=\"siegel\") -> (Tensor, Tensor)", _rm_check,
            lambda Kd, updates, intercept="siegel": (updates.new_empty(Kd[1]), updates.new_empty(Kd[1])),
            _reference.repeated_median_line, _rm_cpu, _rm_device))


def repeated_median_line(updates: torch.Tensor, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    """Siegel's repeated-median line through (rank, sorted value), per coordinate.

    With ``y_0 <= ... <= y_{K-1}`` the sorted values of a coordinate and ranks
    ``x = 0..K-1`` (residual_reweighting.txt, eq. 1-2)::

        slope     = med_i med_{j != i} (y_j - y_i) / (j - i)
        intercept = med_i med_{j != i} (j y_i - i y_j) / (j - i)     ("siegel")
                  = med(y) - slope (K - 1) / 2                       ("median", the authors' code)

    Medians of an even count are midpoints; K = 1 gives slope 0, intercept y_0.
    Computed in float64 for every input dtype.

    Args:
        updates: ``[K, d]`` client updates.
        intercept: ``"siegel"`` (default) or ``"median"``.

    Returns:
        ``(slope, intercept)``, each ``[d]`` in the dtype of ``updates``; NaN
        in every coordinate whose column holds a NaN or an Inf.

    Example:
        >>> ops.repeated_median_line(torch.tensor([[0.], [2.], [1.], [30.]]))
        (tensor([1.]), tensor([0.]))
    """
    return _dispatch("repeated_median_line", updates, intercept)


def _rr_check(updates, lam=2.0, delta=0.1, power=1.0, intercept="siegel"):
    K, d = _check_updates("residual_reweight", updates)
    _check_real("residual_reweight", "lam", lam, 0.0, 1e300, lo_open=True)
    _check_real("residual_reweight", "delta", delta, 0.0, 1.0)
    _check_real("residual_reweight", "power", power, 0.0, 1e300, lo_open=True)
    _check_intercept("residual_reweight", intercept)
    return K, d


def _rr_cpu(c: _Call, lam=2.0, delta=0.1, power=1.0, intercept="siegel"):
    cw, agg = c.empty(c.K), c.empty(c.d)
    c.be.residual_reweight(c.ptr, c.code, c.K, c.d, float(lam), float(delta), float(power),
                           _INTERCEPT_CODE[intercept], cw.data_ptr(), agg.data_ptr(), c.threads)
    return cw, c.cast_back(agg)


def _rr_device(c: _Call, lam=2.0, delta=0.1, power=1.0, intercept="siegel"):
    cw, agg = c.empty(c.K), c.empty(c.d)
    ws = c.workspace(c.be.residual_workspace_bytes(c.code, c.K, c.d))
    c.be.residual_reweight(c.ptr, c.code, c.K, c.d, float(lam), float(delta), float(power),
                           _INTERCEPT_CODE[intercept], cw.data_ptr(), agg.data_ptr(), ws, c.stream)
    return cw, c.cast_back(agg)


_define(_Op("residual_reweight(Tensor updates, float lam=2.0, float delta=0.1, float power=1.0, "
            "str intercept=\"siegel\") -> (Tensor, Tensor)", _rr_check,
            lambda Kd, updates, *rest: (updates.new_empty(Kd[0], dtype=_out_dtype(updates.dtype)),
                                        updates.new_empty(Kd[1])),
            _reference.residual_reweight, _rr_cpu, _rr_device))


def residual_reweight(updates: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                      power: float = 1.0, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    """Residual-based reweighting (Fu et al., residual_reweighting.txt, Algorithm 1).

    Per coordinate: repeated-median line on (rank, sorted value); residuals
    ``r``; ``tau = 1.4826 (1 + 5/(K-1)) med|r|``; ``e = r / tau``; confidence
    ``w = sqrt(1-h)/e * Psi(e / sqrt(1-h))`` with ``Psi`` = clamp to
    ``+-lam sqrt(2/K)`` and ``h`` the leverage of ``[1, rank]``; values with
    ``w <= delta`` get ``w = 0`` and are replaced by the line (eq. 9); client
    sums ``W_k += w_k * std(w)`` (eq. 10). Then
    ``client_weights = W**power / sum(W**power)`` and
    ``aggregate = sum_k client_weights_k * y_k(corrected)``.

    Degenerate cases: K < 3 gives the plain mean with uniform weights; if every
    W is 0 the weights are uniform over the corrected values.

    Args:
        updates: ``[K, d]`` client updates.
        lam: lambda > 0 of the confidence band (paper: 2).
        delta: extreme-value threshold in [0, 1] (paper: 0.1 or 0.01).
        power: exponent of eq. (11); 1 in the paper, 2 in the authors' code.
        intercept: ``"siegel"`` or ``"median"`` (see :func:`repeated_median_line`).

    Returns:
        ``(client_weights [K], aggregate [d])``. Columns with NaN/Inf add
        nothing to the client weights; their aggregate is the weighted sum of
        the raw values (non-finite).

    Example:
        >>> u = torch.tensor([[1.0], [1.1], [0.9], [1.05], [50.0]])
        >>> w, agg = ops.residual_reweight(u)
    """
    return _dispatch("residual_reweight", updates, lam, delta, power, intercept)


# Algorithm 1 in two parts, for coordinate shards: the client sums W of eq. (10)
# over these coordinates, then (after the shards' sums are added) eq. (11) and
# the aggregate of these coordinates.


def _rcs_check(updates, lam=2.0, delta=0.1, intercept="siegel"):
    K, d = _check_updates("residual_client_sums", updates)
    _check_real("residual_client_sums", "lam", lam, 0.0, 1e300, lo_open=True)
    _check_real("residual_client_sums", "delta", delta, 0.0, 1.0)
    _check_intercept("residual_client_sums", intercept)
    return K, d


def _rcs_cpu(c: _Call, lam=2.0, delta=0.1, intercept="siegel"):
    sums = c.empty(c.K, dtype=torch.float64)
    c.be.residual_client_sums(c.ptr, c.code, c.K, c.d, float(lam), float(delta), _INTERCEPT_CODE[intercept],
                              sums.data_ptr(), c.threads)
    return sums


def _rcs_device(c: _Call, lam=2.0, delta=0.1, intercept="siegel"):
    sums = c.empty(c.K, dtype=torch.float64)
    ws = c.workspace(c.be.residual_workspace_bytes(c.code, c.K, c.d))
    c.be.residual_client_sums(c.ptr, c.code, c.K, c.d, float(lam), float(delta), _INTERCEPT_CODE[intercept],
                              sums.data_ptr(), ws, c.stream)
    return sums


_define(_Op("residual_client_sums(Tensor updates, float lam=2.0, float delta=0.1, str intercept=\"siegel\") -> Tensor",
            _rcs_check, lambda Kd, updates, *rest: updates.new_empty(Kd[0], dtype=torch.float64),
            _reference.residual_client_sums, _rcs_cpu, _rcs_device))


def residual_client_sums(updates: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                         intercept: str = "siegel") -> torch.Tensor:
    """The client sums ``W`` of eq. (10) of residual reweighting over these coordinates.

    ``[K]`` float64 (zeros for K < 3). W is additive over coordinates: the sums
    of coordinate shards add up to the W of the whole update, and
    ``residual_apply(u, residual_client_sums(u))`` is ``residual_reweight(u)``
    bitwise. This is how :mod:`robustagg.distributed` runs the native kernel on
    each shard.

    Example:
        >>> u = torch.tensor([[1.0], [1.1], [0.9], [1.05], [50.0]])
        >>> W = ops.residual_client_sums(u)
        >>> torch.equal(ops.residual_apply(u, W)[1], ops.residual_reweight(u)[1])
        True
    """
    return _dispatch("residual_client_sums", updates, lam, delta, intercept)


def _ra_check(updates, client_sums, lam=2.0, delta=0.1, power=1.0, intercept="siegel"):
    K, d = _rr_check(updates, lam, delta, power, intercept)
    if client_sums.dim() != 1 or client_sums.shape[0] != K:
        raise ValueError(f"residual_apply: client_sums must have shape [K] = [{K}]; got shape "
                         f"{tuple(client_sums.shape)}")
    if not client_sums.dtype.is_floating_point:
        raise TypeError(f"residual_apply: client_sums must be a floating tensor; got {client_sums.dtype}")
    if client_sums.device != updates.device:
        raise ValueError(f"residual_apply: client_sums must be on the same device as updates "
                         f"({updates.device}); got {client_sums.device}")
    return K, d


def _ra_run(c: _Call, client_sums, lam, delta, power, intercept, device: bool):
    sums = client_sums.detach().to(torch.float64).contiguous()
    cw, agg = c.empty(c.K), c.empty(c.d)
    args = (c.ptr, c.code, c.K, c.d, sums.data_ptr(), float(lam), float(delta), float(power),
            _INTERCEPT_CODE[intercept], cw.data_ptr(), agg.data_ptr())
    if device:
        c.be.residual_apply(*args, c.workspace(c.be.residual_workspace_bytes(c.code, c.K, c.d)), c.stream)
    else:
        c.be.residual_apply(*args, c.threads)
    return cw, c.cast_back(agg)


_define(_Op("residual_apply(Tensor updates, Tensor client_sums, float lam=2.0, float delta=0.1, float power=1.0, "
            "str intercept=\"siegel\") -> (Tensor, Tensor)", _ra_check,
            lambda Kd, updates, *rest: (updates.new_empty(Kd[0], dtype=_out_dtype(updates.dtype)),
                                        updates.new_empty(Kd[1])),
            _reference.residual_apply,
            lambda c, sums, lam=2.0, delta=0.1, power=1.0, intercept="siegel": _ra_run(
                c, sums, lam, delta, power, intercept, device=False),
            lambda c, sums, lam=2.0, delta=0.1, power=1.0, intercept="siegel": _ra_run(
                c, sums, lam, delta, power, intercept, device=True)))


def residual_apply(updates: torch.Tensor, client_sums: torch.Tensor, lam: float = 2.0, delta: float = 0.1,
                   power: float = 1.0, intercept: str = "siegel") -> Tuple[torch.Tensor, torch.Tensor]:
    """Residual reweighting from given client sums: eq. (11) turns ``client_sums``
    (the W of every shard added up, see :func:`residual_client_sums`) into
    ``client_weights = W**power / sum(W**power)`` (uniform if that sum is 0 or
    not finite), then the aggregate of these coordinates as in
    :func:`residual_reweight`. Returns ``(client_weights [K], aggregate [d])``;
    K < 3: uniform weights and the plain mean."""
    return _dispatch("residual_apply", updates, client_sums, lam, delta, power, intercept)


# sq_distances_to -------------------------------------------------------------------


def _sqto_check(updates, point=None):
    K, d = _check_updates("sq_distances_to", updates)
    if point is not None:
        if tuple(point.shape) != (d,):
            raise ValueError(f"sq_distances_to: point must have shape [d] = [{d}]; got {tuple(point.shape)}")
        if point.dtype != updates.dtype:
            raise TypeError(f"sq_distances_to: point must have the dtype of updates ({updates.dtype}); got {point.dtype}")
        if point.device != updates.device:
            raise ValueError(f"sq_distances_to: point must be on the device of updates ({updates.device}); "
                             f"got {point.device}")
    return K, d


def _sqto_runner(device: bool):
    def run(c: _Call, point=None):
        p = None if point is None else point.detach().contiguous()
        out = c.empty(c.K, dtype=torch.float64)
        tail = (c.workspace(c.be.norms_workspace_bytes(c.K, c.d)), c.stream) if device else (c.threads,)
        c.be.sq_distances_to(c.ptr, c.code, c.K, c.d, _ptr(p), out.data_ptr(), *tail)
        return out
    return run


_define(_Op("sq_distances_to(Tensor updates, Tensor? point=None) -> Tensor", _sqto_check,
            lambda Kd, updates, point=None: updates.new_empty(Kd[0], dtype=torch.float64),
            _reference.sq_distances_to, _sqto_runner(False), _sqto_runner(True)))


def sq_distances_to(updates: torch.Tensor, point: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each client's squared distance to a point: ``out[k] = sum_n (u[k, n] - point[n])**2``.

    Without a point, the squared norms ``|u_k|^2``. One pass, no ``[K, d]``
    temporary; differences and squares in float64 (no overflow for float32
    input, ~1e-15 relative), summed in a fixed order (lanes, a tree, segments:
    see math/norms.h): bitwise the same on every thread count and backend.
    The statistics of norm clipping, centered clipping and the geometric median.

    Args:
        updates: ``[K, d]``.
        point: ``[d]``, the dtype and device of ``updates``; or None.

    Returns:
        ``[K]`` float64.

    Example:
        >>> ops.sq_distances_to(torch.tensor([[3., 4.], [1., 1.]]))
        tensor([25.,  2.], dtype=torch.float64)
        >>> ops.sq_distances_to(torch.tensor([[3., 4.], [1., 1.]]), torch.tensor([1., 1.]))
        tensor([13.,  0.], dtype=torch.float64)
    """
    return _dispatch("sq_distances_to", updates, point)


# pairwise -------------------------------------------------------------------------
# Every pairwise entry fills its [K, K] outputs from the same kernel; `outputs`
# lists which of (sqdist, gram, cosine) an op returns and in which dtype.


def _pairwise_runner(entry: str, n_out: int, f64: bool, device: bool):
    """The CPU (device=False) or device entry of a pairwise op. Entries of
    float32/16/bf16 input that take float blocks (``pairwise_stats`` and the
    ``fast`` flag of ``pairwise_stats_f64``, see math/pairwise.h) are checked
    (:func:`_float_blocks_suspect`): where a float square or product may have
    overflowed, or the updates are so small that float squares underflow, the
    call is redone with every sum in double. So the fast path never changes
    which entries are finite, and tiny updates keep the relative bound (a
    distance rule picks the same clients for ``u * 1e-24`` as for ``u``). On the CPU the check is read back; on a device it
    stays there: the double redo is launched with the check as its
    ``only_if`` flag and the results are selected on the device, so a device
    call reads nothing back (CUDA graph capture)."""
    def run(c: _Call, *wanted):
        if entry == "cosine_similarity" and c.u.dtype == torch.float64:
            # Rows beyond 2^+-400 would overflow or underflow the float64 sums:
            # cosines do not depend on a row's (exact, power-of-two) scale. A
            # device scales every row (a scale of 1 changes nothing) rather than
            # read back whether any needs it.
            scales = _reference._row_scales(c.u)
            if device or bool((scales != 1).any()):
                c = c.again(c.u * scales[:, None])
        want = list(wanted) + [True] * (n_out - len(wanted))  # torch drops trailing defaults
        outs = [c.empty(c.K, c.K, dtype=torch.float64 if f64 else None) if w else None for w in want]
        ptrs = [_ptr(o) for o in outs] + ([0] if entry == "pairwise_stats" and n_out == 1 else [])
        tail = (c.workspace(c.be.pairwise_workspace_bytes(c.code, c.K, c.d)), c.stream) if device else (c.threads,)
        fast = entry == "pairwise_stats_f64" and c.u.dtype != torch.float64
        flags = ((fast, 0) if device else (fast,)) if entry == "pairwise_stats_f64" else ()
        getattr(c.be, entry)(c.ptr, c.code, c.K, c.d, *ptrs, *flags, *tail)
        if fast or (entry == "pairwise_stats" and c.u.dtype != torch.float64):
            dist = outs[0]
            gram = outs[1] if len(outs) > 1 else None
            suspect = _float_blocks_suspect(dist, gram, c.d)
            if device or bool(suspect):
                exact = [c.empty(c.K, c.K, dtype=torch.float64) if o is not None else None for o in outs]
                eptrs = [_ptr(o) for o in exact] + [0] * (2 - len(exact))
                if device:
                    flag = suspect.to(torch.int32)
                    c.be.pairwise_stats_f64(c.ptr, c.code, c.K, c.d, *eptrs[:2], False, flag.data_ptr(), *tail)
                    outs = [None if o is None else torch.where(suspect, e.to(o.dtype), o) for o, e in zip(outs, exact)]
                else:
                    c.be.pairwise_stats_f64(c.ptr, c.code, c.K, c.d, *eptrs[:2], False, *tail)
                    outs = [None if o is None else o.copy_(e) for o, e in zip(outs, exact)]
        outs = [o if o is not None else c.empty(0, 0, dtype=torch.float64) for o in outs]
        return outs[0] if n_out == 1 else tuple(outs)
    return run


def _float_blocks_suspect(dist: Optional[torch.Tensor], gram: Optional[torch.Tensor], d: int) -> torch.Tensor:
    """Whether results from float blocks may break their contract, as a 0-dim
    bool tensor on their device (not read back): a non-finite entry (a float
    square or product overflowed, or the input was not finite), or updates so
    small that float squares underflow: the largest distance, or the largest
    squared norm on the Gram diagonal, below d * 2^-100 (so results scale with
    the updates: ``u * 1e-24`` keeps the relative bound of ``u``; one tiny
    entry among large ones keeps the documented absolute bound)."""
    tiny = float(d) * 2.0 ** -100
    flags = []
    if dist is not None:
        flags.append(~torch.isfinite(dist).all())
        if dist.shape[0] > 1:
            flags.append(dist.max() < tiny)
    if gram is not None:
        flags += [~torch.isfinite(gram).all(), torch.diagonal(gram).max() < tiny]
    return torch.stack(flags).any()


def _pairwise_fake(f64: bool, n_out: int):
    def fake(Kd, updates):
        dtype = torch.float64 if f64 else _out_dtype(updates.dtype)
        outs = [updates.new_empty(Kd[0], Kd[0], dtype=dtype) for _ in range(n_out)]
        return outs[0] if n_out == 1 else tuple(outs)
    return fake


def _pairwise_check(op: str):
    return lambda updates: _check_updates(op, updates)


_define(_Op("pairwise_sq_distances(Tensor updates) -> Tensor", _pairwise_check("pairwise_sq_distances"),
            _pairwise_fake(False, 1), _reference.pairwise_sq_distances,
            _pairwise_runner("pairwise_stats", 1, False, False), _pairwise_runner("pairwise_stats", 1, False, True)))


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between clients: ``D[i, j] = sum_n (u[i, n] - u[j, n])**2``.

    Computed from direct differences (never ``|a|^2 + |b|^2 - 2ab``), so it is
    exactly 0 for identical rows. Non-finite rows: every entry is what a direct
    float64 computation gives (NaN or Inf), except the diagonal, always 0. float64 input accumulates in float64 (~1e-12
    relative to an exact computation); float32/16/bf16 input takes float32
    differences summed in blocks of 8 and flushed to float64, which bounds the
    relative error of every entry below 1e-6 (all terms are non-negative).

    Returns:
        ``[K, K]`` symmetric, zero diagonal; float64 for float64 input, else float32.

    Example:
        >>> ops.pairwise_sq_distances(torch.tensor([[0., 0.], [3., 4.]]))
        tensor([[ 0., 25.],
                [25.,  0.]])
    """
    return _dispatch("pairwise_sq_distances", updates)


_define(_Op("cosine_similarity(Tensor updates) -> Tensor", _pairwise_check("cosine_similarity"),
            _pairwise_fake(False, 1), _reference.cosine_similarity,
            _pairwise_runner("cosine_similarity", 1, False, False),
            _pairwise_runner("cosine_similarity", 1, False, True)))


def cosine_similarity(updates: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between clients: ``C[i, j] = <u_i, u_j> / (|u_i| |u_j|)``.

    Accumulated in float64, clamped to [-1, 1], exactly 1 for identical
    non-zero rows, and 0 wherever either row is all zeros (its diagonal too).
    float64 rows beyond 1e+-120 are first scaled by a power of two (cosines
    do not depend on it), so 1e+-200 updates still give their cosines. A row
    holding NaN or +-Inf has cosine NaN with every row, itself included.

    Returns:
        ``[K, K]`` symmetric; float64 for float64 input, else float32.

    Example:
        >>> ops.cosine_similarity(torch.tensor([[1., 0.], [1., 1.]]))
        tensor([[1.0000, 0.7071],
                [0.7071, 1.0000]])
    """
    return _dispatch("cosine_similarity", updates)


def _stats_ref(updates, sqdist=True, gram=True):
    u = updates.detach().double()
    none = u.new_empty(0, 0)
    return (_reference.pairwise_sq_distances(u) if sqdist else none, _reference.gram(u) if gram else none)


def _stats_check(updates, sqdist=True, gram=True):
    Kd = _check_updates("pairwise_stats", updates)
    if not (sqdist or gram):
        raise ValueError("pairwise_stats: ask for sqdist, gram or both; got sqdist=False, gram=False")
    return Kd


def _stats_fake(Kd, updates, sqdist=True, gram=True):
    return tuple(updates.new_empty(Kd[0] if w else 0, Kd[0] if w else 0, dtype=torch.float64) for w in (sqdist, gram))


_define(_Op("pairwise_stats(Tensor updates, bool sqdist=True, bool gram=True) -> (Tensor, Tensor)", _stats_check,
            _stats_fake, _stats_ref,
            _pairwise_runner("pairwise_stats_f64", 2, True, False), _pairwise_runner("pairwise_stats_f64", 2, True, True)))


def pairwise_stats(updates: torch.Tensor, sqdist: bool = True, gram: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and Gram matrix ``<u_i, u_j>`` in one pass over ``updates``.

    The statistics of the distance rules (Krum, Bulyan: distances; FoolsGold,
    RFLBAT: the Gram). Returns float64 ``[K, K]`` matrices whatever the input
    dtype, so that huge-but-finite updates (1e38 in float32) do not overflow;
    an output not asked for (``sqdist=False`` or ``gram=False``) is an empty
    ``[0, 0]`` tensor and costs nothing.

    Accuracy: float64 input is summed in float64 (~1e-12 relative). float32,
    float16 and bfloat16 input takes float32 blocks of 16 flushed to float64:
    distances within ~6.6e-7 relative, Gram entries within ~6.6e-7
    ``|u_i| |u_j|`` (so ~6.6e-7 in a cosine); should a float square or product
    overflow (entries beyond ~1e19), the call is redone in float64 and the
    result is that of a direct float64 computation. Identical rows: distance
    exactly 0, bitwise equal Gram entries. Also ``torch.ops.robustagg.pairwise_stats``.

    Example:
        >>> D, G = ops.pairwise_stats(torch.tensor([[0., 0.], [3., 4.]]))
        >>> D[0, 1].item(), G[1, 1].item()
        (25.0, 25.0)
    """
    return _dispatch("pairwise_stats", updates, sqdist, gram)
