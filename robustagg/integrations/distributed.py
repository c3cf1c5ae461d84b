"""Sharded aggregation over ``torch.distributed``: models too large for one device.

Each rank holds a coordinate slice of all K clients' updates (``shard =
updates[:, lo:hi]``) and gets the same slice of the aggregate:

* coordinate-wise rules (fedavg, median, trimmed_mean, sign, rlr, invariant,
  repeated_median, bulyan's final step) run on the slice as they are;
* rules that need client-level statistics of the full vectors get them from
  :class:`~robustagg.aggregators.stats.ShardedStatistics`, which all-reduces
  the partial sums (they add over coordinates): the K×K squared distances /
  Gram matrix (krum, multikrum, bulyan, foolsgold, rflbat), the per-client
  squared norms and distances (clip, geomed, centered_clip) and the
  residual-weight sums W of eq. (10) (residual); every rank then makes the
  same client decisions;
* a client with NaN/Inf anywhere (on any rank) is excluded on every rank
  (the finiteness of each client is max-reduced).

The result equals the single-process one up to floating-point summation
order. :func:`reshard` turns "each rank holds some clients' full updates" into
coordinate shards with one all-to-all. Works with any backend (gloo on CPU,
NCCL on GPUs: put the shard on the rank's device); see README "Across GPUs".
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from ..aggregators import AggregationResult, Aggregator, as_updates, get
from ..aggregators.stats import ShardedStatistics

__all__ = ["aggregate", "reshard", "shard_bounds"]


def shard_bounds(d: int, world_size: int, rank: int) -> Tuple[int, int]:
    """``[lo, hi)`` of rank's coordinates when d is split as evenly as possible
    (the first ``d % world_size`` ranks get one more), as :func:`reshard` does."""
    base, extra = divmod(d, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _world(group) -> Tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("robustagg.distributed needs an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group)")
    return dist.get_world_size(group), dist.get_rank(group)


def aggregate(rule, shard: torch.Tensor, group=None, weights=None, client_ids: Optional[Sequence[Any]] = None
              ) -> AggregationResult:
    """Aggregates a coordinate shard of K client updates across the ranks of ``group``.

    Args:
        rule: a rule object or name (the same rule on every rank; stateful rules
            such as FoolsGold keep the history of their own slice).
        shard: ``[K, d_rank]`` this rank's coordinates of every client (all ranks
            pass the same K clients in the same order).
        group: the process group (default: the world).
        weights, client_ids: as for a rule call; the same on every rank.

    Returns:
        An :class:`~robustagg.aggregators.AggregationResult` whose ``update`` is this
        rank's slice ``[d_rank]``; ``client_weights`` and ``excluded`` are global
        (identical on every rank).

    Example (each of 2 ranks, e.g. under ``torchrun --nproc-per-node 2``)::

        lo, hi = shard_bounds(d, world_size, rank)
        res = robustagg.distributed.aggregate("krum", updates[:, lo:hi])
        my_slice = res.update        # equals rule(updates).update[lo:hi]
    """
    rule = get(rule) if isinstance(rule, str) else rule
    if not isinstance(rule, Aggregator):
        raise TypeError(f"rule must be a robustagg rule or its name; got {type(rule).__name__}")
    _world(group)
    u = as_updates(shard)
    K = u.shape[0]

    # Same K everywhere.
    check = torch.tensor([K, -K], dtype=torch.float64, device=u.device)
    dist.all_reduce(check, op=dist.ReduceOp.MAX, group=group)
    if int(check[0]) != K or int(-check[1]) != K:
        raise ValueError(f"shard has K={K} clients on this rank, but the ranks disagree "
                         f"(between {int(-check[1])} and {int(check[0])}); every rank passes all K clients")
    # The rule does the rest as in one process: its statistics (which clients
    # are finite, norms, distances, Gram, residual sums, noise seeds) are
    # summed or maxed over the ranks by ShardedStatistics.
    return rule(u, weights=weights, client_ids=client_ids, stats=ShardedStatistics(group))


def reshard(local_updates: torch.Tensor, group=None) -> torch.Tensor:
    """From client-major to coordinate-major with one all-to-all.

    Args:
        local_updates: ``[k_rank, d]`` the full updates of the clients this rank
            holds (k_rank may differ between ranks, and be 0; d must agree).

    Returns:
        ``[K, d_rank]``: every client's coordinates ``shard_bounds(d, world, rank)``,
        clients ordered by rank, then by their row on that rank.
    """
    world, rank = _world(group)
    if local_updates.dim() != 2:
        raise ValueError(f"local_updates must be [k, d]; got shape {tuple(local_updates.shape)}")
    k, d = local_updates.shape
    meta = torch.zeros(world, 2, dtype=torch.int64, device=local_updates.device)
    meta[rank, 0], meta[rank, 1] = k, d
    dist.all_reduce(meta, op=dist.ReduceOp.SUM, group=group)
    counts, dims = meta[:, 0].tolist(), meta[:, 1].tolist()
    holders = [r for r in range(world) if counts[r] > 0]
    if any(dims[r] != dims[holders[0]] for r in holders):
        raise ValueError(f"every rank's updates must have the same d; got {[dims[r] for r in holders]}")
    d = dims[holders[0]] if holders else d
    bounds = [shard_bounds(d, world, r) for r in range(world)]
    x = local_updates.contiguous()
    send = torch.cat([x[:, lo:hi].reshape(-1) for lo, hi in bounds]) if k else x.new_zeros(0)
    lo, hi = bounds[rank]
    recv = x.new_empty(sum(counts) * (hi - lo))
    dist.all_to_all_single(recv, send, output_split_sizes=[c * (hi - lo) for c in counts],
                           input_split_sizes=[k * (b - a) for a, b in bounds], group=group)
    return recv.view(sum(counts), hi - lo)
