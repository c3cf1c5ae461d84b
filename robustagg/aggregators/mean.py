"""Mean-family rules: FedAvg, norm clipping and noise wrappers, Centered
Clipping, geometric median (RFA)."""
from __future__ import annotations

import math

import torch

from .. import ops
from .base import (AggregationResult, Aggregator, check_positive_int, check_real, check_rule, check_seed,
                   none_excluded, normalized, register, result_dtype)
from .stats import times_power_of_two

__all__ = ["FedAvg", "NormClip", "GaussianNoise", "CenteredClip", "GeometricMedian"]


def weighted_mean(u: torch.Tensor, w) -> torch.Tensor:
    """sum_k w_k u_k / sum_k w_k in one native pass, accumulated in float64.

    (``robust_lr_mean`` with threshold 0 negates nothing and counts no votes:
    it is the weighted mean.) Equal weights (the same sample count everywhere)
    take the unweighted pass.
    """
    if w is not None and bool((w == w[0]).all()) and float(w[0]) > 0:
        w = None
    return ops.robust_lr_mean(u, 0.0, None if w is None else w.to(u.device))


def weighted_sum(u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``sum_k c_k u_k`` (c >= 0, float64) in one native pass: the weighted
    mean times ``sum c`` (zero when every c is 0)."""
    total = float(c.sum())
    if total <= 0:
        return torch.zeros(u.shape[1], dtype=u.dtype, device=u.device)
    return weighted_mean(u, c).mul_(total)


@register("fedavg")
class FedAvg(Aggregator):
    """Federated averaging: ``update = sum_k n_k u_k / sum_k n_k`` (McMahan et al. 2017).

    ``weights`` are sample counts n_k (uniform when omitted). ``client_weights``
    are ``n_k / sum n``. ``info`` is empty. The baseline every paper compares with.

    Example:
        >>> FedAvg()(torch.tensor([[1., 2.], [3., 4.]]), weights=[1, 3]).update
        tensor([2.5000, 3.5000])
    """

    default_rank = 0

    def __init__(self):
        self._validate()

    def propagates_nonfinite(self):
        return True       # a NaN/Inf in any update reaches the weighted mean (0 * inf is NaN too)

    def _aggregate(self, u, w, ids, stats):
        return AggregationResult(weighted_mean(u, w), normalized(w, u.shape[0], u), none_excluded(u.shape[0], u), {})


@register("clip")
class NormClip(Aggregator):
    """Norm clipping wrapper: ``u_k <- u_k * min(1, max_norm / ||u_k||)``, then ``base``.

    The server-side bound of "weak DP" (RLR paper, eq. 2; Sun et al. 2019) and
    the clipping bound S of "How to backdoor FL". Composable with any rule.

    Args:
        base: the rule applied to the clipped updates (default FedAvg()).
        max_norm: M > 0.

    ``info``: ``clipped`` (bool per client), ``norms`` (before clipping), and the base rule's info under ``base``.
    """

    def __init__(self, *, base=None, max_norm: float = 1.0):
        self.base = FedAvg() if base is None else base
        self.max_norm = max_norm
        self._validate()

    def propagates_nonfinite(self):
        return type(self.base) is FedAvg     # a non-finite client has a non-finite norm: NaN update below

    def _validate(self):
        check_rule("NormClip", "base", self.base)
        check_real("NormClip", "max_norm", self.max_norm, 0.0, float("inf"), lo_open=True, hi_open=True)

    def _aggregate(self, u, w, ids, stats):
        norms = stats.norms(u)
        scale = torch.clamp(self.max_norm / norms.clamp_min(1e-300), max=1.0)
        clipped = norms > self.max_norm
        if type(self.base) is FedAvg:
            if not bool(torch.isfinite(norms).all()):  # a non-finite client: let __call__ exclude it
                nan = torch.full((u.shape[1],), float("nan"), dtype=u.dtype, device=u.device)
                return AggregationResult(nan, normalized(w, u.shape[0], u), none_excluded(u.shape[0], u), {})
            # Clip + FedAvg in one pass without a clipped copy: sum_k p_k s_k u_k,
            # p the normalised sample counts, s the clip factors; client_weights
            # are p_k s_k, so that sum_k client_weights_k u_k is the update.
            p = normalized(w, u.shape[0], u).to(torch.float64)
            cw = p * scale
            info = {"clipped": clipped.tolist(), "norms": norms.tolist(), "base": {}}
            return AggregationResult(weighted_sum(u, cw), cw.to(result_dtype(u)), none_excluded(u.shape[0], u), info)
        uc = u * scale.to(u.dtype)[:, None] if bool(clipped.any()) else u
        res = self.base(uc, w, ids, stats=stats)
        info = {"clipped": clipped.tolist(), "norms": norms.tolist(), "base": res.info}
        return AggregationResult(res.update, res.client_weights, res.excluded, info)

    def reset(self):
        self.base.reset()


@register("noise")
class GaussianNoise(Aggregator):
    """Gaussian noise wrapper: ``update = base(u).update + N(0, sigma^2 I)``.

    With :class:`NormClip` this is the weak-DP defense of the RLR paper (eq. 2):
    ``GaussianNoise(base=NormClip(max_norm=M), sigma=s)``.

    Args:
        base: the rule whose output gets noise (default FedAvg()).
        sigma: noise standard deviation >= 0.
        seed: seeds the noise generator (reproducible runs); None draws from torch's global RNG.

    ``info``: ``sigma`` and the base rule's info under ``base``.
    """

    def __init__(self, *, base=None, sigma: float = 1e-3, seed=None):
        self.base = FedAvg() if base is None else base
        self.sigma = sigma
        self.seed = seed
        self._validate()
        self._gen = None

    def _validate(self):
        check_rule("GaussianNoise", "base", self.base)
        check_real("GaussianNoise", "sigma", self.sigma, 0.0, float("inf"), hi_open=True)
        check_seed("GaussianNoise", self.seed)

    def propagates_nonfinite(self):
        # Finite noise keeps a non-finite mean non-finite. The base's own pass
        # then runs on every client (its _aggregate, not its __call__, which
        # would exclude non-finite clients itself and hide them from this test).
        return self.base.propagates_nonfinite()

    @torch.compiler.disable      # a seeded torch.Generator: host code, runs eagerly under torch.compile
    def _aggregate(self, u, w, ids, stats):
        if self.base.propagates_nonfinite():
            res = self.base._aggregate(u, w, ids, stats)
            if not stats.all_finite(res.update):
                return res       # a first try on non-finite clients: no noise drawn, no trace left
        else:
            res = self.base(u, w, ids, stats=stats)
        if self.seed is not None and self._gen is None:
            # sharded aggregation: each rank draws its own slice of the noise
            self._gen = torch.Generator(device=u.device).manual_seed(self.seed + stats.seed_offset())
        noise = torch.randn(res.update.shape, generator=self._gen, dtype=res.update.dtype, device=u.device)
        return AggregationResult(res.update + self.sigma * noise, res.client_weights, res.excluded,
                                 {"sigma": self.sigma, "base": res.info})

    def reset(self):
        self._gen = None
        self.base.reset()


@register("centered_clip")
class CenteredClip(Aggregator):
    """Centered Clipping (Karimireddy, He & Jaggi 2021).

    Starting from ``v`` (the previous round's aggregate, or the coordinate-wise
    median in the first round / with ``init="median"``), repeat ``iterations`` times::

        v <- v + sum_k p_k (u_k - v) min(1, tau / ||u_k - v||)

    with ``p_k`` the normalised sample counts. Each client moves ``v`` by at most ``tau``.

    Args:
        tau: clipping radius > 0.
        iterations: L >= 1 (the paper uses 1 with momentum; more iterations converge further).
        init: ``"previous"`` (stateful: the last aggregate of this instance) or ``"median"``.

    ``info``: ``clipped_fraction`` of clients clipped in the last iteration.
    """

    stateful = True

    def __init__(self, *, tau: float = 1.0, iterations: int = 3, init: str = "previous"):
        self.tau = tau
        self.iterations = iterations
        self.init = init
        self._validate()
        self._previous = None

    def _validate(self):
        check_real("CenteredClip", "tau", self.tau, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_positive_int("CenteredClip", "iterations", self.iterations)
        if self.init not in ("previous", "median"):
            raise ValueError(f"CenteredClip: init must be 'previous' or 'median'; got {self.init!r}")

    def _aggregate(self, u, w, ids, stats):
        n = u.shape[0]
        p = normalized(w, n, u).to(torch.float64)
        prev = self._previous
        if self.init == "median" or prev is None or prev.shape[0] != u.shape[1] or prev.device != u.device:
            v = ops.median(u).to(torch.float64)
        else:
            v = prev.to(torch.float64)
        for _ in range(self.iterations):
            diff_norm = stats.distances_to(u, v)
            scale = torch.clamp(self.tau / diff_norm.clamp_min(1e-300), max=1.0)
            coef = p * scale
            # v + sum_k coef_k (u_k - v) = (1 - sum coef) v + sum_k coef_k u_k
            v = (1.0 - coef.sum()) * v + weighted_sum(u, coef).to(torch.float64)
        clipped = (scale < 1.0).double().mean().item()
        self._previous = v.detach().clone()
        return AggregationResult(v.to(u.dtype), (p * scale / (p * scale).sum()).to(result_dtype(u)),
                                 none_excluded(n, u), {"clipped_fraction": clipped})

    def reset(self):
        self._previous = None


@register("geomed")
class GeometricMedian(Aggregator):
    """Geometric median by the smoothed Weiszfeld algorithm (RFA, Pillutla et al. 2019).

    ``argmin_v sum_k a_k ||v - u_k||`` with ``a_k`` the normalised sample counts;
    each step ``v <- sum_k b_k u_k / sum_k b_k``, ``b_k = a_k / max(nu, ||v - u_k||)``.
    It starts from the coordinate-wise median (a robust start: far outliers
    cannot drag it away, and the minimiser does not depend on the start) and
    stops when a step moves ``v`` by at most ``tol`` times the spread of the
    clients around it (the median of ``||v - u_k||``), or after ``max_iter``
    steps. (Stopping on the objective's relative change, as RFA's code does,
    stops early while outliers dominate the objective.)

    Args:
        nu: smoothing > 0 (guards the division near a client).
        tol: tolerance >= 0, relative to the spread.
        max_iter: >= 1.

    ``client_weights`` are the ``b_k / sum b`` of the last step, so that
    ``update = sum_k client_weights_k u_k``. ``info``: ``iterations``,
    ``objective`` (``sum_k a_k ||v - u_k||`` at the result), ``converged``,
    ``last_step`` (the last move, relative to the spread).

    Example:
        >>> u = torch.tensor([[0.], [1.], [2.], [100.]])
        >>> GeometricMedian(tol=1e-9)(u).update     # any point of [1, 2] minimises; Weiszfeld stops inside
        tensor([1.5000])
    """

    selects_clients = True

    def __init__(self, *, nu: float = 1e-6, tol: float = 1e-5, max_iter: int = 100):
        self.nu = nu
        self.tol = tol
        self.max_iter = max_iter
        self._validate()

    def _validate(self):
        check_real("GeometricMedian", "nu", self.nu, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_real("GeometricMedian", "tol", self.tol, 0.0, float("inf"), hi_open=True)
        check_positive_int("GeometricMedian", "max_iter", self.max_iter)

    def _aggregate(self, u, w, ids, stats):
        exponent = stats.magnitude_exponent(u)
        if exponent == 0:
            return self._weiszfeld(u, w, stats, self.nu)
        # float64 updates beyond 2^+-400: their squared distances would overflow
        # (every b_k would be 0) or vanish. Weiszfeld's steps are equivariant
        # under scaling when nu is scaled alike, so it runs on u * 2^-e (of
        # magnitude 1; exact: a power of two) and its result is scaled back.
        res = self._weiszfeld(times_power_of_two(u, -exponent), w, stats, _ldexp_saturated(self.nu, -exponent))
        res.info["objective"] = _ldexp_saturated(res.info["objective"], exponent)
        return AggregationResult(times_power_of_two(res.update, exponent), res.client_weights, res.excluded, res.info)

    def _weiszfeld(self, u, w, stats, nu):
        n = u.shape[0]
        a = normalized(w, n, u).to(torch.float64)
        v = ops.median(u)
        dist = stats.distances_to(u, v)
        b = _weiszfeld_weights(a, dist, nu)
        converged, it, rel = False, 0, float("inf")
        for it in range(1, self.max_iter + 1):
            b = _weiszfeld_weights(a, dist, nu)
            new = weighted_mean(u, b)
            step = float(stats.distances_to(new.reshape(1, -1), v)[0])
            v = new
            dist = stats.distances_to(u, v)
            spread = float(dist.median())
            rel = step / spread if spread > 0 else (0.0 if step == 0 else float("inf"))
            if rel <= self.tol:
                converged = True
                break
        obj = float((a * dist).sum())
        return AggregationResult(v, (b / b.sum()).to(result_dtype(u)), none_excluded(n, u),
                                 {"iterations": it, "objective": obj, "converged": converged, "last_step": rel})


def _weiszfeld_weights(a: torch.Tensor, dist: torch.Tensor, nu: float) -> torch.Tensor:
    """``b_k = a_k / max(nu, dist_k)`` up to a common factor (all a step needs):
    times the smallest ``max(nu, dist)``, so every factor is in (0, 1] and
    neither a tiny ``nu`` overflows the weights nor a huge one makes them
    vanish. ``nu = inf`` (a scaled nu beyond float64) gives ``b = a``."""
    if not math.isfinite(nu):
        return a.clone()
    r = dist.clamp_min(nu)
    return a * (r.min() / r)


def _ldexp_saturated(x: float, exponent: int) -> float:
    """``x * 2**exponent`` as a float, inf (with x's sign) where it overflows."""
    try:
        return math.ldexp(x, exponent)
    except OverflowError:
        return math.copysign(math.inf, x)
