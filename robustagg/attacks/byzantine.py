"""Untargeted (Byzantine) attacks on the updates, and the adaptive attack
against the Invariant aggregator's AND-mask."""
from __future__ import annotations

import math
from typing import Optional

import torch

from .backdoor import TrojanBackdoor
from .base import Attack, register

__all__ = ["SignFlip", "GaussianAttack", "ALIE", "AndMaskAdaptive"]


@register("sign_flip")
class SignFlip(Attack):
    """Each attacker trains honestly and sends ``-scale *`` its delta."""

    def __init__(self, *, scale: float = 1.0):
        if not (scale > 0):
            raise ValueError(f"scale must be > 0; got {scale!r}")
        self.scale = scale

    def craft(self, ctx):
        return -self.scale * ctx.malicious


@register("gaussian")
class GaussianAttack(Attack):
    """Each attacker sends i.i.d. N(0, sigma^2) noise in every coordinate."""

    def __init__(self, *, sigma: float = 1.0):
        if not (sigma > 0):
            raise ValueError(f"sigma must be > 0; got {sigma!r}")
        self.sigma = sigma

    def craft(self, ctx):
        m = ctx.malicious
        noise = torch.randn(m.shape, generator=ctx.generator, dtype=m.dtype)
        return (self.sigma * noise).to(m.device)


@register("alie")
class ALIE(Attack):
    """"A little is enough" (Baruch et al., 2019): every attacker sends
    ``mu - z * sigma`` (coordinate-wise mean and standard deviation of benign
    updates), small enough to pass distance and order statistics.

    Args:
        z: default from the paper, ``s = floor(n/2 + 1) - f``,
            ``z = Phi^{-1}((n - s) / n)`` with n aggregated updates and f attackers.
        omniscient: estimate mu, sigma from the honest clients' updates (True) or
            from the attackers' own honestly trained updates (False, the paper's
            setting; needs at least 2 attackers, otherwise the honest ones are used).
    """

    def __init__(self, *, z: Optional[float] = None, omniscient: bool = False):
        if z is not None and not (z > 0):
            raise ValueError(f"z must be > 0; got {z!r}")
        self.z = z
        self.omniscient = omniscient

    def z_for(self, n: int, f: int) -> float:
        if self.z is not None:
            return self.z
        s = math.floor(n / 2 + 1) - f
        p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
        return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p, dtype=torch.float64)))

    def craft(self, ctx):
        a = ctx.malicious.shape[0]
        src = ctx.benign if (self.omniscient or a < 2) and ctx.benign.shape[0] >= 2 else ctx.malicious
        mu, sigma = src.mean(0), src.std(0, unbiased=True) if src.shape[0] > 1 else torch.zeros_like(src[0])
        z = self.z_for(ctx.num_aggregated, a)
        return (mu - z * sigma).expand(a, -1).clone()


@register("andmask_adaptive")
class AndMaskAdaptive(TrojanBackdoor):
    """The adaptive adversary of the Invariant-aggregator paper (Appendix C): a
    trojan backdoor whose update is masked by the server's AND-mask (white-box:
    the attacker computes ``|sum sgn| / n >= tau`` over the round's updates) and
    scaled up so its L2 norm stays the same, putting all its energy into the
    coordinates that pass the mask.

    Args:
        tau: the server's sign-consistency threshold (default 0.1, the
            Invariant rule's default). The trojan arguments of :class:`TrojanBackdoor`.
    """

    def __init__(self, *, tau: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1]; got {tau!r}")
        self.tau = tau

    def craft(self, ctx):
        all_updates = torch.cat([ctx.benign, ctx.malicious])
        votes = torch.sign(all_updates).sum(0).abs() / all_updates.shape[0]
        mask = (votes >= self.tau).to(ctx.malicious.dtype)
        masked = ctx.malicious * mask
        scale = ctx.malicious.norm(dim=1, keepdim=True) / masked.norm(dim=1, keepdim=True).clamp_min(1e-30)
        return masked * scale

    def params(self):
        return {**super().params(), "tau": self.tau}
