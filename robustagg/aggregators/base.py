"""The shared machinery of every rule: input handling, exclusion of non-finite
clients, the result type and the registry of names."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

from .. import ops
from .._registry import Registry
from .stats import LOCAL, Statistics

__all__ = ["AggregationResult", "Aggregator", "register", "get", "available", "as_updates", "rule_class",
           "default_rules"]


@dataclasses.dataclass
class AggregationResult:
    """What a rule did with one round of updates.

    Attributes:
        update: ``[d]`` the aggregate (apply it as ``w <- w + lr * update``).
        client_weights: ``[K]`` each client's weight, per rule family:
            weighted means of the clients (fedavg, krum, multikrum, rflbat,
            foolsgold, geomed, clip with the FedAvg base) give exactly
            ``update = sum_k client_weights[k] * u_k`` (tested);
            coordinate-wise rules (median, trimmed_mean, sign, rlr, invariant,
            repeated_median, bulyan's last step) give a nominal ``1/K`` to the
            clients they keep, as their weight differs per coordinate;
            residual reweighting gives eq. (11)'s weights, applied to the
            corrected values of eq. (9); centered clipping gives each client's
            share ``p_k s_k / sum p s`` of the last clipped step (the update
            also keeps the starting point).
        excluded: ``[K]`` bool, clients dropped by the rule or for non-finite values.
        info: rule-specific details (scores, chosen cluster, vote counts...);
            always has ``"nonfinite"``: the ids of clients excluded for NaN/Inf.
    """

    update: torch.Tensor
    client_weights: torch.Tensor
    excluded: torch.Tensor
    info: Dict[str, Any]


_RULES = Registry("aggregator")
register = _RULES.register


def available() -> List[str]:
    """Names accepted by :func:`get` (and the CLI)."""
    return _RULES.available()


def get(name: str, **params) -> "Aggregator":
    """Builds a rule from its name, e.g. ``get("trimmed_mean", beta=0.1)``.

    Wrappers take their base rule by name too: ``get("rlr", base="median", threshold=4)``.
    """
    _RULES.cls(name)                    # an unknown name fails before its base is built
    if isinstance(params.get("base"), str):
        try:
            params["base"] = get(params["base"])
        except ValueError as e:
            raise ValueError(f"{name}: base: {e}") from None
    return _RULES.build(name, **params)


def rule_class(name: str) -> type:
    """The class registered under ``name`` (what it declares: ``told_attackers``,
    ``selects_clients``, ``default_rank``)."""
    return _RULES.cls(name)


def default_rules() -> List[str]:
    """The rules the simulator compares by default, in their declared order (``default_rank``)."""
    ranked = [(_RULES.cls(n).default_rank, n) for n in _RULES.available()]
    return [n for rank, n in sorted(r for r in ranked if r[0] is not None)]


def as_updates(updates) -> torch.Tensor:
    """A ``[K, d]`` tensor from a tensor or a list of equally-shaped tensors (flattened)."""
    if isinstance(updates, torch.Tensor):
        if updates.dim() != 2:
            raise ValueError(f"updates must be a [K, d] tensor or a list of tensors; got shape {tuple(updates.shape)}")
        u = updates
    elif isinstance(updates, (list, tuple)):
        if not updates:
            raise ValueError("updates must hold at least one client; got an empty list")
        shapes = {tuple(t.shape) for t in updates if isinstance(t, torch.Tensor)}
        if len(shapes) != 1 or not all(isinstance(t, torch.Tensor) for t in updates):
            raise ValueError(f"updates must be tensors of one shape; got shapes {sorted(shapes)}")
        u = torch.stack([t.reshape(-1) for t in updates])
    else:
        raise TypeError(f"updates must be a [K, d] tensor or a list of tensors; got {type(updates).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"updates must be floating point; got {u.dtype}")
    if u.device.type == "meta":
        raise ValueError("updates must hold values (a CPU or CUDA tensor); got a tensor on the meta device")
    if u.shape[0] < 1 or u.shape[1] < 1:
        raise ValueError(f"updates needs K >= 1 clients and d >= 1 coordinates; got shape {tuple(u.shape)}")
    return u.detach()


def _sample_weights(weights, K: int, device) -> Optional[torch.Tensor]:
    if weights is None:
        return None
    if isinstance(weights, torch.Tensor):
        if weights.is_complex() or weights.dtype == torch.bool or weights.device.type == "meta":
            raise TypeError(f"weights must be real sample counts; got a {weights.dtype} tensor on {weights.device}")
        w = weights.detach().to(device=device, dtype=torch.float64).reshape(-1)
    else:
        try:
            w = torch.as_tensor(weights, dtype=torch.float64).to(device).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"weights must be sample counts (numbers, one per client); got {weights!r}") from None
    if w.numel() != K:
        raise ValueError(f"weights must have one entry per client (K={K}); got {w.numel()}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights (sample counts) must be finite and non-negative")
    return w


def _client_ids(client_ids, K: int) -> List[Any]:
    if client_ids is None:
        return list(range(K))
    if isinstance(client_ids, torch.Tensor):
        ids = client_ids.reshape(-1).tolist() if client_ids.dim() == 1 else None
    elif isinstance(client_ids, (str, bytes)) or not isinstance(client_ids, Iterable):
        ids = None
    else:
        ids = list(client_ids)
    if ids is None:
        raise TypeError(f"client_ids must be a sequence of one hashable id per client (K={K}), e.g. a list "
                        f"of ints; got {type(client_ids).__name__} {client_ids!r}")
    if len(ids) != K:
        raise ValueError(f"client_ids must have one entry per client (K={K}); got {len(ids)}")
    try:
        distinct = len(set(ids))
    except TypeError:
        bad = next(i for i in ids if not _hashable(i))
        raise TypeError(f"client_ids must be hashable (ints, strings, tuples); got {type(bad).__name__} "
                        f"{bad!r}") from None
    if distinct != K:
        raise ValueError("client_ids must be distinct")
    return ids


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def result_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


class Aggregator:
    """Base of every rule: ``rule(updates, weights=None, client_ids=None) -> AggregationResult``.

    Subclasses implement ``_aggregate(u, w, ids, stats)`` on the finite clients
    only: ``u`` is ``[n, d]``, ``w`` their sample counts (float64) or None,
    ``ids`` their ids, ``stats`` the :class:`~robustagg.aggregators.stats.Statistics`
    every whole-vector statistic must come from (norms, distances, Gram,
    residual sums, noise seeds: that is what makes a rule right when sharded);
    it returns an :class:`AggregationResult` over those n clients. A wrapper
    calls its base as ``self.base(u, w, ids, stats=stats)``.
    Hyper-parameters are keyword-only, stored as given, and checked in
    ``_validate`` (called once from ``__init__``).
    """

    name = "aggregator"
    stateful = False
    #: Whether ``client_weights`` / ``excluded`` say whom the rule distrusts
    #: (the simulator reports detection rates for such rules).
    selects_clients = False
    #: Position in the simulator's default comparison; None: not compared by default.
    default_rank: Optional[int] = None

    @classmethod
    def told_attackers(cls, n: int, f: int, given: Dict[str, Any]) -> Dict[str, Any]:
        """The hyper-parameters this rule derives from an assumed number ``f`` of
        attackers among ``n`` clients per round, clamped to its bounds; ``given``
        are the parameters the user set (a rule leaves out what they fix). The
        simulator's ``--assumed-attackers`` goes through here. Default: none."""
        return {}

    def propagates_nonfinite(self) -> bool:
        """True when any NaN/Inf in any client's update makes this rule's
        update non-finite (a weighted mean does; an order statistic or a
        selection does not). Such a rule runs on all clients first and skips
        the separate finiteness pass over the updates when its result is
        finite; otherwise the non-finite clients are found and excluded as for
        every rule. Stateless rules only (a first try must leave no trace)."""
        return False

    def _validate(self) -> None:
        pass

    def _aggregate(self, u: torch.Tensor, w: Optional[torch.Tensor], ids: List[Any],
                   stats: Statistics) -> AggregationResult:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state kept across rounds (stateful rules)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

    def __call__(self, updates, weights=None, client_ids=None, *, stats: Optional[Statistics] = None
                 ) -> AggregationResult:
        u = as_updates(updates)
        K, d = u.shape
        w = _sample_weights(weights, K, u.device)
        ids = _client_ids(client_ids, K)
        rdt = result_dtype(u)
        stats = LOCAL if stats is None else stats
        if not isinstance(stats, Statistics):
            raise TypeError(f"{type(self).__name__}: stats must be a robustagg Statistics object; "
                            f"got {type(stats).__name__}")

        if self.propagates_nonfinite() and (w is None or bool((w > 0).any())):
            # One pass instead of two: a finite result proves every client finite.
            res = self._aggregate(u, w, ids, stats)
            if stats.all_finite(res.update):
                info = dict(res.info)
                info["nonfinite"] = []
                return AggregationResult(res.update.to(u.dtype), res.client_weights.to(rdt), res.excluded, info)
        finite = stats.finite_rows(u)
        keep = finite.nonzero().flatten()
        nonfinite_ids = [ids[i] for i in (~finite).nonzero().flatten().tolist()]
        if keep.numel() == 0:
            return AggregationResult(
                update=torch.zeros(d, dtype=u.dtype, device=u.device),
                client_weights=torch.zeros(K, dtype=rdt, device=u.device),
                excluded=torch.ones(K, dtype=torch.bool, device=u.device),
                info={"nonfinite": nonfinite_ids, "note": "every client sent NaN/Inf: zero update"})
        all_finite = keep.numel() == K
        sub = u if all_finite else u.index_select(0, keep)
        sub_w = None if w is None else (w if all_finite else w[keep])
        if sub_w is not None and not bool((sub_w > 0).any()):
            raise ValueError("weights (sample counts) must not be all zero over the finite clients")
        sub_ids = ids if all_finite else [ids[i] for i in keep.tolist()]

        res = self._aggregate(sub, sub_w, sub_ids, stats)
        update = res.update
        info = dict(res.info)
        if not bool(torch.isfinite(update).all()):
            # Overflow inside a rule (e.g. huge but finite values): never hand it on.
            update = ops.median(sub)
            info["fallback"] = "non-finite aggregate replaced by the coordinate-wise median"
        info["nonfinite"] = nonfinite_ids
        if all_finite:
            cw, excluded = res.client_weights.to(rdt), res.excluded
        else:
            cw = torch.zeros(K, dtype=rdt, device=u.device)
            cw[keep] = res.client_weights.to(rdt)
            excluded = torch.ones(K, dtype=torch.bool, device=u.device)
            excluded[keep] = res.excluded
        return AggregationResult(update=update.to(u.dtype), client_weights=cw, excluded=excluded, info=info)


def uniform(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=result_dtype(like), device=like.device)


def none_excluded(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.bool, device=like.device)


def normalized(w: Optional[torch.Tensor], n: int, like: torch.Tensor) -> torch.Tensor:
    """Sample counts as weights summing to 1 (uniform when None)."""
    if w is None:
        return uniform(n, like)
    w = w / w.max()                     # 1e308 counts: the sum must not overflow
    return (w / w.sum()).to(result_dtype(like))


def check_positive_int(owner: str, name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}; got {value!r}")


def check_real(owner: str, name: str, value, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
    import math
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{owner}: {name} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}; got {value!r}")


def check_seed(owner: str, value) -> None:
    """A seed is an int >= 0 or None (no seed)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{owner}: seed must be an int >= 0 or None; got {value!r}")


def check_rule(owner: str, name: str, value) -> None:
    if not isinstance(value, Aggregator):
        raise ValueError(f"{owner}: {name} must be a robustagg aggregator (e.g. FedAvg()); got {value!r}")
