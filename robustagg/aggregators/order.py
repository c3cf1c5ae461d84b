"""Coordinate-wise order statistics: median, trimmed mean, repeated median,
residual-based reweighting."""
from __future__ import annotations

import math

from .. import ops
from .base import AggregationResult, Aggregator, check_real, none_excluded, register, uniform

__all__ = ["Median", "TrimmedMean", "RepeatedMedian", "Residual"]


@register("median")
class Median(Aggregator):
    """Coordinate-wise median (Yin et al. 2018); midpoint of the middle two for even K.

    Breakdown point 1/2 per coordinate. ``client_weights`` are nominal (1/K):
    a different client is selected in each coordinate. ``info`` is empty.
    """

    default_rank = 1

    def __init__(self):
        self._validate()

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        return AggregationResult(ops.median(u), uniform(n, u), none_excluded(n, u), {})


@register("trimmed_mean")
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    Drops ``trim`` smallest and ``trim`` largest values per coordinate and
    averages the rest. Give either ``trim`` (a count per tail) or ``beta``
    (a fraction per tail, mapped to ``floor(beta K)``); ``2 trim < K`` is needed.
    A ``beta`` that trims nothing gives the plain mean.

    Args:
        trim: values dropped per tail (int >= 0), or
        beta: fraction per tail in [0, 0.5). Default: beta = 0.1.

    ``info``: ``trim`` (the count used this round).
    """

    default_rank = 2

    @classmethod
    def told_attackers(cls, n, f, given):
        if "beta" in given:               # the user's beta fixes the trim
            return {}
        return {"trim": max(0, min(f, (n - 1) // 2))}

    def __init__(self, *, trim=None, beta=None):
        self.trim = trim
        self.beta = beta
        self._validate()

    def _validate(self):
        if self.trim is not None and self.beta is not None:
            raise ValueError(f"TrimmedMean: give trim or beta, not both; got trim={self.trim}, beta={self.beta}")
        if self.trim is not None and (isinstance(self.trim, bool) or not isinstance(self.trim, int) or self.trim < 0):
            raise ValueError(f"TrimmedMean: trim must be an int >= 0; got {self.trim!r}")
        if self.beta is not None:
            check_real("TrimmedMean", "beta", self.beta, 0.0, 0.5, hi_open=True)

    def trim_for(self, n: int) -> int:
        if self.trim is not None:
            trim = self.trim
        else:
            trim = math.floor((0.1 if self.beta is None else self.beta) * n + 1e-12)
        if 2 * trim >= n:
            raise ValueError(f"TrimmedMean needs 2*trim < K; got trim={trim}, K={n}")
        return trim

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        trim = self.trim_for(n)
        return AggregationResult(ops.trimmed_mean(u, trim), uniform(n, u), none_excluded(n, u), {"trim": trim})


@register("repeated_median")
class RepeatedMedian(Aggregator):
    """Coordinate-wise repeated median (Siegel 1982), the baseline of the residual-reweighting paper.

    Per coordinate, the repeated-median line through (rank, sorted value) is
    evaluated at the middle rank: ``update = intercept + slope (K - 1) / 2``.

    Args:
        intercept: ``"siegel"`` (eq. 2) or ``"median"`` (the authors' code).

    ``info`` is empty; ``client_weights`` are nominal (1/K).
    """

    def __init__(self, *, intercept: str = "siegel"):
        self.intercept = intercept
        self._validate()

    def _validate(self):
        if self.intercept not in ("siegel", "median"):
            raise ValueError(f"RepeatedMedian: intercept must be 'siegel' or 'median'; got {self.intercept!r}")

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        slope, icpt = ops.repeated_median_line(u, self.intercept)
        return AggregationResult(icpt + slope * (0.5 * (n - 1)), uniform(n, u), none_excluded(n, u), {})


@register("residual")
class Residual(Aggregator):
    """Residual-based reweighting (Fu et al. 2019, Algorithm 1).

    Per coordinate, a repeated-median line through (rank, value); residuals
    scaled by ``1.4826 (1 + 5/(K-1)) med|r|`` give confidences (1 inside the band
    ``lam sqrt(2/K)``, decaying outside, 0 and replaced by the line below
    ``delta``); client weight ``W_k = sum_n w_nk std(w_n)``, normalised after
    raising to ``power``; ``update = sum_k W_k y_k(corrected)``. See
    :func:`robustagg.ops.residual_reweight`. K < 3 gives the plain mean.

    Args:
        lam: band width lambda > 0 (paper: 2).
        delta: extreme-value threshold in [0, 1] (paper: 0.1; 0.01 in some runs).
        power: exponent of the client weights (1 in the paper, 2 in the authors' code).
        intercept: ``"siegel"`` or ``"median"``.
        variant: ``"paper"`` (default: Algorithm 1, the native kernel) or
            ``"released"``: the authors' released code (``IRLS_aggregation_split_restricted``),
            which differs from the paper in six places: intercept med(y) - slope (K-1)/2,
            weights ``W^2 / sum W^2``, the residual scale from the median of the K - 1
            largest |r| plus 1e-7, sigma and W from the confidences before the delta
            cut, replacement below delta (not at it). It ignores ``power`` and
            ``intercept``, and runs in PyTorch (reference speed), to reproduce their numbers.

    ``info``: ``client_weights`` as a list (for logging).
    """

    selects_clients = True
    default_rank = 6

    def __init__(self, *, lam: float = 2.0, delta: float = 0.1, power: float = 1.0, intercept: str = "siegel",
                 variant: str = "paper"):
        self.lam = lam
        self.delta = delta
        self.power = power
        self.intercept = intercept
        self.variant = variant
        self._validate()

    def _validate(self):
        check_real("Residual", "lam", self.lam, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_real("Residual", "delta", self.delta, 0.0, 1.0)
        check_real("Residual", "power", self.power, 0.0, float("inf"), lo_open=True, hi_open=True)
        if self.intercept not in ("siegel", "median"):
            raise ValueError(f"Residual: intercept must be 'siegel' or 'median'; got {self.intercept!r}")
        if self.variant not in ("paper", "released"):
            raise ValueError(f"Residual: variant must be 'paper' or 'released'; got {self.variant!r}")

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        if self.variant == "released":
            cw, agg = stats.residual_reweight_released(u, float(self.lam), float(self.delta))
            return AggregationResult(agg.to(u.dtype), cw, none_excluded(n, u), {"client_weights": cw.tolist()})
        cw, agg = stats.residual_reweight(u, float(self.lam), float(self.delta), float(self.power), self.intercept)
        return AggregationResult(agg, cw, none_excluded(n, u), {"client_weights": cw.tolist()})
