"""What an attacker can do in the simulator, and the registry of attack names."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import torch

from .._registry import Registry

__all__ = ["Attack", "CraftContext", "register", "get", "available", "attack_class", "NoAttack"]


@dataclasses.dataclass
class CraftContext:
    """What the attackers see when they build the updates they send in a round.

    Attributes:
        round: 0-based round index.
        malicious: ``[a, d]`` the attackers' own trained deltas (on poisoned data
            for data attacks, on clean data otherwise).
        benign: ``[h, d]`` the honest deltas of the round; only white-box attacks
            (ALIE's omniscient mode, the AND-mask adaptive attack) read them.
        global_params: ``[d]`` the global model before the round.
        num_aggregated: n, the number of updates the server aggregates.
        server_lr: η of ``w <- w + η g``.
        generator: the attack's random source (seeded from the run's seed).
    """

    round: int
    malicious: torch.Tensor
    benign: torch.Tensor
    global_params: torch.Tensor
    num_aggregated: int
    server_lr: float
    generator: torch.Generator


class Attack:
    """Base: behaves honestly. Subclasses override some of the hooks.

    Hooks, in the order the simulator calls them:
        ``setup(dataset)`` once; ``poison(x, y, rank, num_attackers, generator)`` once
        per attacker on its local data; ``active(round)`` each round; attackers
        train with ``local_spec(honest_spec)`` on poisoned data when active, else
        like honest clients on clean data; ``craft(ctx)`` turns their deltas into
        what they send. ``success_set(dataset)`` gives the attack-success test set.
    """

    name = "none"
    #: whether active attackers train on their poisoned data (data attacks) or clean data.
    uses_poisoned_data = False

    def setup(self, dataset) -> None:
        self.num_classes = dataset.num_classes

    def begin(self, total_rounds: int) -> None:
        """Called once before round 0 with the number of rounds (attacks that
        schedule themselves relative to the end resolve it here)."""

    def pool_size(self, train_samples: int, clients: int, num_classes: int) -> int:
        """Base-class training samples each attacker brings beyond its own share
        (the adversary's pool, taken from data no honest client holds); 0: none."""
        return 0

    def poison(self, x: torch.Tensor, y: torch.Tensor, rank: int, num_attackers: int,
               generator: torch.Generator, pool: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The attacker's training data from its own ``x, y`` and its share of the pool."""
        return x, y

    def active(self, round: int) -> bool:
        return True

    def local_spec(self, honest):
        return honest

    def craft(self, ctx: CraftContext) -> torch.Tensor:
        return ctx.malicious

    def success_set(self, dataset) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y_target)``: the attack succeeds on a sample when the model predicts
        ``y_target``. None for untargeted attacks (no attack-success metric)."""
        return None

    #: the class whose clean test accuracy is reported as base-class accuracy (None: not reported).
    base_class: Optional[int] = None

    def params(self) -> Dict[str, Any]:
        out = {}
        for k, v in vars(self).items():
            if k.startswith("_") or k == "num_classes":
                continue
            out[k] = v.params() | {"name": v.name} if isinstance(v, Attack) else v
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


_ATTACKS = Registry("attack")
register = _ATTACKS.register
attack_class = _ATTACKS.cls


def available() -> List[str]:
    """Names accepted by :func:`get` (and ``robustagg simulate --attack``)."""
    return _ATTACKS.available()


def get(name: str, **params) -> Attack:
    """Builds an attack from its name, e.g. ``get("model_replacement", gamma=10)``."""
    return _ATTACKS.build(name, **params)


@register("none")
class NoAttack(Attack):
    """No attack: the attackers (if any) behave like honest clients."""
