"""Sign-voting rules: Robust Learning Rate, signSGD majority vote, the Invariant aggregator."""
from __future__ import annotations

import math

import torch

from .. import ops
from .base import (AggregationResult, Aggregator, check_real, check_rule, none_excluded, normalized,
                   register, uniform)
from .mean import FedAvg

__all__ = ["RobustLR", "SignSGD", "Invariant"]


@register("rlr")
class RobustLR(Aggregator):
    """Robust Learning Rate (Ozdayi et al. 2021, eq. 5-6).

    ``update[j] = g[j]`` where ``|sum_k sgn(u_k[j])| >= threshold``, else ``-g[j]``,
    with ``g = base(updates).update``. The vote counts agents (unweighted);
    theta = 4 of 10 agents or 8 of 40 in the paper. Without zeros the vote has
    the parity of K, so thresholds act in steps of 2. With the default base
    (FedAvg) the whole rule is one fused native pass.

    Args:
        base: the rule whose aggregate is sign-corrected (default FedAvg()).
        threshold: theta >= 0, an absolute number of votes, at most the number
            K of clients voting (``|sum sgn| <= K``: a larger theta would flip
            every coordinate, returning ``-g``; a call with K < theta raises).

    ``info``: ``flipped_fraction`` (coordinates whose learning rate became -eta),
    and the base rule's info under ``base``.

    Example:
        >>> RobustLR(threshold=2)(torch.tensor([[1., 1.], [1., -1.], [1., 3.]])).update
        tensor([ 1., -1.])
    """

    default_rank = 5

    def __init__(self, *, base=None, threshold: float = 4):
        self.base = FedAvg() if base is None else base
        self.threshold = threshold
        self._validate()

    @classmethod
    def told_attackers(cls, n, f, given):
        return {"threshold": min(f + 1, n)}   # theta = f + 1: more votes than the attackers alone can cast

    def propagates_nonfinite(self):
        return type(self.base) is FedAvg   # the fused pass: a NaN/Inf reaches the mean, sign flips keep it

    def _validate(self):
        check_rule("RobustLR", "base", self.base)
        check_real("RobustLR", "threshold", self.threshold, 0.0, float("inf"), hi_open=True)

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        if self.threshold > n:
            raise ValueError(f"RobustLR: threshold must be at most the number of clients voting (|sum sgn| <= K; "
                             f"a larger one flips every coordinate); got threshold={self.threshold}, K={n}")
        if type(self.base) is FedAvg:   # one fused pass: the mean, the flips and their count
            update, count = ops.robust_lr_mean_counted(u, float(self.threshold), w)
            return AggregationResult(update, normalized(w, n, u), none_excluded(n, u),
                                     {"flipped_fraction": int(count) / u.shape[1], "base": {}})
        votes = ops.sign_vote(u)
        flipped = float((votes.abs().double() < self.threshold).double().mean())
        res = self.base(u, w, ids, stats=stats)
        update = torch.where(votes.abs().double() >= self.threshold, res.update, -res.update)
        return AggregationResult(update, res.client_weights, res.excluded,
                                 {"flipped_fraction": flipped, "base": res.info})

    def reset(self):
        self.base.reset()


@register("sign")
class SignSGD(Aggregator):
    """Sign aggregation / signSGD with majority vote (RLR paper eq. 4; Bernstein et al. 2019).

    ``update = sgn(sum_k sgn(u_k))``: +1, -1 or 0 per coordinate; the server's
    learning rate sets the step. ``weighted=True`` weighs votes by sample counts.

    ``info``: ``zero_fraction`` (tied coordinates).
    """

    def __init__(self, *, weighted: bool = False):
        self.weighted = weighted
        self._validate()

    def _validate(self):
        if not isinstance(self.weighted, bool):
            raise ValueError(f"SignSGD: weighted must be a bool; got {self.weighted!r}")

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        votes = ops.sign_vote(u, w.to(u.dtype) if (self.weighted and w is not None) else None)
        update = torch.sign(votes).to(u.dtype)
        cw = normalized(w, n, u) if self.weighted else uniform(n, u)
        return AggregationResult(update, cw, none_excluded(n, u), {"zero_fraction": float((votes == 0).double().mean())})


@register("invariant")
class Invariant(Aggregator):
    """Invariant aggregator (Wang et al., Algorithm 1): AND-mask plus trimmed mean, one fused pass.

    ``update[j] = TrMean_alpha(u[:, j])`` where ``|sum_k sgn(u_k[j])| / K >= tau``, else 0.
    TrMean drops ``ceil(alpha K)`` values per tail (Definition 9); where that
    would leave nothing (tiny K) it drops ``(K - 1) // 2`` and says so in ``info``.

    Args:
        tau: sign-consistency threshold in [0, 1]. The paper starts at the
            corruption level N'/N and raises it for more robustness; its theory uses 1 - 2 alpha.
        alpha: fraction trimmed per tail, in [0, 0.5).

    ``info``: ``masked_fraction`` (coordinates set to 0), ``trim`` (count per tail), ``trim_clamped``.
    """

    default_rank = 8

    def __init__(self, *, tau: float = 0.1, alpha: float = 0.1):
        self.tau = tau
        self.alpha = alpha
        self._validate()

    @classmethod
    def told_attackers(cls, n, f, given):
        # the paper's starting point: tau and alpha at the corruption level f / n
        frac = min(f / n, 0.49) if n else 0.0
        return {"tau": frac, "alpha": max(frac - 1e-9, 0.0)}

    def _validate(self):
        check_real("Invariant", "tau", self.tau, 0.0, 1.0)
        check_real("Invariant", "alpha", self.alpha, 0.0, 0.5, hi_open=True)

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        wanted = math.ceil(self.alpha * n - 1e-12)
        trim = min(wanted, (n - 1) // 2)  # tiny K: keep at least one value (reported in info)
        update = ops.masked_trimmed_mean(u, float(self.tau), trim)
        votes = ops.sign_vote(u)
        masked = float((votes.abs().double() / n < self.tau).double().mean())
        return AggregationResult(update, uniform(n, u), none_excluded(n, u),
                                 {"masked_fraction": masked, "trim": trim, "trim_clamped": trim < wanted})
