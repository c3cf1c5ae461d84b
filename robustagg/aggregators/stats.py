"""The whole-vector statistics a rule may need, behind one small interface.

A rule sees its updates ``u`` ``[n, d]`` and a :class:`Statistics` object;
every client-level number it derives from whole update vectors comes from
that object: which clients are finite, pairwise distances and Gram entries,
squared norms and distances to a point, the residual weight sums, the noise
seed offset. :class:`Statistics` (the default) computes them from ``u``.
:class:`ShardedStatistics` (what :func:`robustagg.distributed.aggregate`
passes) holds a coordinate shard per rank and adds the shards' partial sums
with one ``all_reduce`` (squared distances, Gram entries, squared norms and
the residual sums W are all additive over coordinates), so every rank sees
the statistics of the full vectors and makes the same client decisions.

Sharding is thus correct by construction: a rule that takes its statistics
from this object is right under ``robustagg.distributed``, and one that
computes a whole-vector statistic some other way has nowhere to hide it
(the sharded tests run every registered rule).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .. import ops

__all__ = ["Statistics", "ShardedStatistics", "Pairwise", "LOCAL", "times_power_of_two"]

# float64 updates whose magnitude is beyond 2^+-400 can overflow or underflow
# the float64 sums of squares and products (1e+-150 and beyond): their
# pairwise statistics are taken of the updates times a power of two.
_SAFE_EXPONENT = 400


def times_power_of_two(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """``t * 2**exponent``, exact wherever the result is a normal number.

    2**exponent itself need not be a float64 (a denormal's 2^1074 is not): the
    product is taken in steps of at most 2^±1000. Scaling up, no step rounds
    (every intermediate is below the result); scaling down, only values that
    end below the normal range round.
    """
    out = t
    while exponent != 0:
        step = max(-1000, min(1000, exponent))
        out = out * math.ldexp(1.0, step)
        exponent -= step
    return out


def _in_range(wanted, sqdist: bool) -> bool:
    """Whether float64 pairwise sums are usable as they are: finite, and the
    largest squared distance (or squared norm) not below 2^-800 (so squares of
    tiny rows did not vanish; all-zero updates also land on the exact check)."""
    if not all(bool(torch.isfinite(t).all()) for t in wanted):
        return False
    top = wanted[0].max() if sqdist else torch.diagonal(wanted[0]).max()
    return float(top) >= 2.0 ** -800


class Pairwise(NamedTuple):
    """Pairwise statistics of ``u * 2**scale_exponent``: ``sqdist`` and ``gram``
    are ``[n, n]`` float64 (or None when not asked for); ``scale_exponent`` is 0
    unless the updates' magnitude would overflow or underflow the sums (it
    reaches 1074 for denormal updates, whose scale 2^1074 is no float64).
    Krum scores, cosines, PCA directions and distance ratios do not depend on it."""

    sqdist: Optional[torch.Tensor]
    gram: Optional[torch.Tensor]
    scale_exponent: int


class Statistics:
    """Statistics of the updates a rule is given (one process)."""

    sharded = False

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        """Adds a partial statistic over the shards (in place); the identity here."""
        return t

    def _max(self, t: torch.Tensor) -> torch.Tensor:
        """Maximum over the shards (in place); the identity here."""
        return t

    def finite_rows(self, u: torch.Tensor) -> torch.Tensor:
        """``[n]`` bool: the clients whose whole update is finite."""
        # A row sum is finite when the row is (a cheap pass with no [n, d]
        # temporary); rows whose sum is not (NaN/Inf, or overflow of huge
        # finite values) are checked exactly.
        bad = (~torch.isfinite(u.sum(1))).to(torch.float64)
        for k in bad.nonzero().flatten().tolist():
            bad[k] = float(not bool(torch.isfinite(u[k]).all()))
        return self._max(bad) == 0

    def all_finite(self, t: torch.Tensor) -> bool:
        """Whether ``t`` (a rule's update, this shard's slice of it) is finite on every shard."""
        # A finite sum proves every element finite (a NaN or Inf would reach it);
        # only a non-finite sum (or an overflowing one) takes the exact check.
        ok = bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())
        bad = torch.tensor([0.0 if ok else 1.0], dtype=torch.float64, device=t.device)
        return float(self._max(bad)[0]) == 0.0

    def magnitude_exponent(self, u: torch.Tensor) -> int:
        """The exponent e with ``max |u|`` in [2^(e-1), 2^e) over every shard,
        when float64 sums of squares of ``u`` may overflow or underflow
        (|e| > 400); 0 otherwise (and for all-zero or non-finite ``u``).
        ``u * 2**-e`` (:func:`times_power_of_two`) is then of magnitude 1."""
        if u.dtype != torch.float64 or u.numel() == 0:
            return 0
        m = float(self._max(torch.linalg.vector_norm(u, float("inf")).reshape(1).to(torch.float64).clone())[0])
        if m > 0 and math.isfinite(m) and abs(math.frexp(m)[1]) > _SAFE_EXPONENT:
            return math.frexp(m)[1]
        return 0

    def pairwise(self, u: torch.Tensor, *, sqdist: bool = True, gram: bool = True) -> Pairwise:
        """Squared distances and / or the Gram matrix of the clients (``ops.pairwise_stats``)."""
        wanted = self._pairwise_sums(u, sqdist, gram)
        exponent = 0
        if u.dtype == torch.float64 and not _in_range(wanted, sqdist):
            # Rare: float64 updates beyond 2^+-400 whose squares overflowed or
            # underflowed. The same decision on every rank (the sums are global).
            exponent = -self.magnitude_exponent(u)
            if exponent:
                wanted = self._pairwise_sums(times_power_of_two(u, exponent), sqdist, gram)
        it = iter(wanted)
        return Pairwise(next(it) if sqdist else None, next(it) if gram else None, exponent)

    def _pairwise_sums(self, u, sqdist, gram):
        D, G = ops.pairwise_stats(u, sqdist, gram)
        wanted = [t for t, want in ((D, sqdist), (G, gram)) if want]
        return list(self._sum(torch.stack(wanted).contiguous())) if self.sharded else wanted

    def sq_distances_to(self, u: torch.Tensor, point: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n]`` float64 squared distances of the clients to ``point`` (this
        shard's slice of it when sharded), or their squared norms."""
        if point is not None:
            point = point.to(u.dtype)
        return self._sum(ops.sq_distances_to(u, point))

    def norms(self, u: torch.Tensor) -> torch.Tensor:
        """``[n]`` float64 L2 norms of the clients' updates."""
        return self.sq_distances_to(u).sqrt()

    def distances_to(self, u: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        """``[n]`` float64 L2 distances of the clients to ``point``."""
        return self.sq_distances_to(u, point).sqrt()

    def residual_reweight(self, u: torch.Tensor, lam: float, delta: float, power: float, intercept: str):
        """``(client_weights, aggregate)`` of residual reweighting (``ops.residual_reweight``)."""
        return ops.residual_reweight(u, lam, delta, power, intercept)

    def residual_reweight_released(self, u: torch.Tensor, lam: float, delta: float):
        """``(client_weights, aggregate)`` of the authors' released variant of
        residual reweighting (pure PyTorch: reference speed); W summed over shards."""
        from .. import reference
        W = self._sum(reference.released_residual_client_sums(u, lam, delta))
        return reference.released_residual_apply(u, W, lam, delta)

    def seed_offset(self) -> int:
        """Added to a rule's noise seed: 0 here, the rank when sharded (each shard draws its own noise)."""
        return 0


class ShardedStatistics(Statistics):
    """Statistics of coordinate shards, summed over the ranks of ``group``
    (a ``torch.distributed`` process group; None is the default group)."""

    sharded = True

    def __init__(self, group=None):
        self.group = group

    def _sum(self, t):
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def _max(self, t):
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def residual_reweight(self, u, lam, delta, power, intercept):
        # The client sums W of eq. (10) of every shard are added before eq. (11):
        # the native kernel in two parts on each shard.
        W = self._sum(ops.residual_client_sums(u, lam, delta, intercept))
        return ops.residual_apply(u, W, lam, delta, power, intercept)

    def seed_offset(self) -> int:
        import torch.distributed as dist
        return dist.get_rank(group=self.group)


LOCAL = Statistics()
