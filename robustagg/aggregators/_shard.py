"""The few client-level statistics a rule needs over the *whole* update.

In one process they are computed directly. Inside
:func:`robustagg.distributed.aggregate` each rank holds a coordinate shard, and
these functions add the shards' partial sums with one ``all_reduce`` (sums of
squares, Gram entries and residual-weight sums are additive over coordinates),
so every rank sees the statistics of the full vectors and makes the same
client-level decisions.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Optional, Tuple

import torch

from .. import ops

_GROUP: contextvars.ContextVar = contextvars.ContextVar("robustagg_shard_group", default=None)


@contextlib.contextmanager
def sharded(group) -> None:
    """Within the block, statistics are summed over the ranks of ``group``
    (a ``torch.distributed`` process group; None is the default group, so the
    context holds a tuple: the context's own None means "not sharded")."""
    token = _GROUP.set(("active", group))
    try:
        yield
    finally:
        _GROUP.reset(token)


def active() -> bool:
    return _GROUP.get() is not None


def sum_over_shards(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (in place) when sharded; ``t`` otherwise."""
    state = _GROUP.get()
    if state is None:
        return t
    import torch.distributed as dist
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=state[1])
    return t


def pairwise_stats(u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(squared distances, Gram) ``[K, K]`` float64 of the full updates."""
    sqdist, gram = ops.pairwise_stats(u)
    if active():
        both = sum_over_shards(torch.stack([sqdist, gram]).contiguous())
        sqdist, gram = both[0], both[1]
    return sqdist, gram


def row_norms(u: torch.Tensor) -> torch.Tensor:
    """L2 norm of each client's update, float64 (no overflow for float32 input)."""
    norms = torch.stack([torch.linalg.vector_norm(row, dtype=torch.float64) for row in u])
    if active():
        norms = sum_over_shards(norms.square()).sqrt()
    return norms


def distances_to(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``||u_k - v||`` for every client, float64, one row at a time (no ``[K, d]`` temporary)."""
    v = v.to(u.dtype)
    norms = torch.stack([torch.linalg.vector_norm(row - v, dtype=torch.float64) for row in u])
    if active():
        norms = sum_over_shards(norms.square()).sqrt()
    return norms


def residual_reweight(u: torch.Tensor, lam: float, delta: float, power: float,
                      intercept: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Residual reweighting; sharded, the client sums W of eq. (10) of every
    shard are all-reduced before eq. (11) (the native kernel on each shard, in
    two parts: ops.residual_client_sums, then ops.residual_apply)."""
    if not active():
        return ops.residual_reweight(u, lam, delta, power, intercept)
    W = sum_over_shards(ops.residual_client_sums(u, lam, delta, intercept))
    return ops.residual_apply(u, W, lam, delta, power, intercept)


def seed_offset() -> int:
    """This rank's index when sharded (so seeded noise differs per shard), else 0."""
    state = _GROUP.get()
    if state is None:
        return 0
    import torch.distributed as dist
    return dist.get_rank(group=state[1])
