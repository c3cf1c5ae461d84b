"""Data-poisoning attacks: trojan-pattern backdoor (RLR paper), distributed
backdoor (DBA, Xie et al. 2020), model replacement and constrain-and-scale
(Bagdasaryan et al., "How to backdoor federated learning"), label flipping."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from .base import Attack, CraftContext, register

__all__ = ["Trigger", "TrojanBackdoor", "DistributedBackdoor", "LabelFlip", "ModelReplacement",
           "ConstrainAndScale", "PATTERNS"]

PATTERNS = ("plus", "square", "pixel")


class Trigger:
    """A pixel pattern stamped onto images (every channel set to ``value``).

    Args:
        pattern: ``"plus"`` (a plus sign in a size×size box, the RLR paper's
            5×5 default), ``"square"`` (a filled size×size box) or ``"pixel"``
            (the single pixel at ``position``).
        size: side of the box; default ``max(3, round(5 * H / 28)) | 1`` (5 on
            28×28 images, 3 on 8×8).
        position: ``(row, col)`` of the box's top-left corner; default (1, 1) on
            images of 16 px or more, else (0, 0).
        value: the pixel value written (images are in [0, 1]).
    """

    def __init__(self, pattern: str = "plus", size: Optional[int] = None,
                 position: Optional[Sequence[int]] = None, value: float = 1.0):
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {', '.join(PATTERNS)}; got {pattern!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"trigger size must be a positive integer; got {size!r}")
        self.pattern = pattern
        self.size = size
        self.position = None if position is None else tuple(int(p) for p in position)
        self.value = float(value)

    def mask(self, height: int, width: int) -> torch.Tensor:
        """``[H, W]`` bool: the pixels the trigger sets."""
        size = self.size or (max(3, round(5 * height / 28)) | 1)
        r0, c0 = self.position or ((1, 1) if min(height, width) >= 16 else (0, 0))
        extent = 1 if self.pattern == "pixel" else size
        if r0 < 0 or c0 < 0 or r0 + extent > height or c0 + extent > width:
            raise ValueError(f"trigger of size {extent} at position {(r0, c0)} does not fit a "
                             f"{height}x{width} image")
        m = torch.zeros(height, width, dtype=torch.bool)
        if self.pattern == "square":
            m[r0:r0 + size, c0:c0 + size] = True
        elif self.pattern == "plus":
            m[r0 + size // 2, c0:c0 + size] = True
            m[r0:r0 + size, c0 + size // 2] = True
        else:
            m[r0, c0] = True
        return m

    def apply(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A copy of images ``x [N, C, H, W]`` with the trigger (or the sub-pattern ``mask``) stamped."""
        m = self.mask(x.shape[-2], x.shape[-1]) if mask is None else mask
        out = x.clone()
        out[..., m.to(x.device)] = self.value
        return out

    def split(self, height: int, width: int, parts: int):
        """The trigger's pixels cut, in row-major order, into ``parts`` disjoint local patterns (DBA)."""
        full = self.mask(height, width)
        pix = full.flatten().nonzero().flatten()
        if not 1 <= parts <= pix.numel():
            raise ValueError(f"parts must be in [1, {pix.numel()}] (the trigger's pixels); got {parts}")
        out = []
        for chunk in torch.tensor_split(pix, parts):
            m = torch.zeros(height * width, dtype=torch.bool)
            m[chunk] = True
            out.append(m.view(height, width))
        return out

    def params(self):
        return {"pattern": self.pattern, "size": self.size, "position": self.position, "value": self.value}


def _dba_mask(trigger: Trigger, parts: Optional[int], height: int, width: int, rank: int, num_attackers: int):
    """Attacker ``rank``'s local pattern: the trigger cut into ``parts`` pieces
    (default one per attacker, at most one per pixel), piece ``rank mod parts``."""
    npix = int(trigger.mask(height, width).sum())
    parts = min(parts or max(num_attackers, 1), npix)
    return trigger.split(height, width, parts)[rank % parts]


def _check_class(owner, name, value, num_classes):
    if not isinstance(value, int) or not 0 <= value < num_classes:
        raise ValueError(f"{owner}: {name} must be a class index in [0, {num_classes}); got {value!r}")


#: Fewer poisoned samples than this per attacker and the backdoor barely trains: the simulator warns.
HANDFUL = 5

DATA_MODES = ("pool", "own")


@register("trojan")
class TrojanBackdoor(Attack):
    """Trojan-pattern backdoor (RLR paper, Sec. "Experiments"): attackers train
    on trigger-stamped base-class images relabelled ``target_class`` and send
    their update as usual. Success: base-class test images with the trigger
    classified as the target.

    Where the poisoned images come from (``data``):

    * ``"pool"`` (default): the adversary brings its own backdoor images, as
      Bagdasaryan et al.'s attackers do: ``pool_size`` base-class training
      images per attacker, set aside from the data no honest client holds,
      stamped and relabelled and added to the attacker's own (clean) data. The
      attack's strength then does not depend on partition luck: under a
      Dirichlet or shards split an attacker may hold no base-class image at all.
    * ``"own"`` (the RLR paper's setting): each attacker stamps a fraction
      ``poison_fraction`` (P) of its own base-class images.

    Args:
        base_class, target_class: default 1 → 7 (the paper's EMNIST task); the
            simulator uses 5 → 7 (sandal → sneaker) on Fashion-MNIST.
            ``base_class=None`` stamps images of every class (the pixel-pattern
            backdoor of Bagdasaryan et al. and Fu et al.: any image with the
            trigger is to be classified as the target); success is then
            measured, as those papers do, on every test image, so a model with
            no backdoor scores about the target class's share (~10%);
            ``exclude_target=True`` leaves the target class's own images out
            of that measure (no-backdoor level near 0, as RFLBAT reports).
        poison_fraction: P in (0, 1] (the paper: 0.5); in ``"pool"`` mode it
            sets the default pool: as many images as P of an i.i.d. share of
            the base class, at least :data:`HANDFUL`.
        data: ``"pool"`` or ``"own"``; pool_size: images per attacker (pool mode).
        pattern, size, position, value: the :class:`Trigger`.
    """

    uses_poisoned_data = True

    def __init__(self, *, base_class: Optional[int] = 1, target_class: int = 7, poison_fraction: float = 0.5,
                 pattern: str = "plus", size: Optional[int] = None, position=None, value: float = 1.0,
                 data: str = "pool", pool_size: Optional[int] = None, exclude_target: bool = False):
        if not (0.0 < poison_fraction <= 1.0):
            raise ValueError(f"poison_fraction must be in (0, 1]; got {poison_fraction!r}")
        if data not in DATA_MODES:
            raise ValueError(f"data must be one of {', '.join(DATA_MODES)}; got {data!r}")
        if pool_size is not None and (not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1):
            raise ValueError(f"pool_size must be a positive integer; got {pool_size!r}")
        if not isinstance(exclude_target, bool):
            raise ValueError(f"exclude_target must be true or false; got {exclude_target!r}")
        if exclude_target and base_class is not None:
            raise ValueError("exclude_target applies to base_class=None (every class); a single base class "
                             "never includes the target")
        self.data = data
        self.exclude_target = exclude_target
        self.pool_size_per_attacker = pool_size
        self.base_class = base_class
        self.target_class = target_class
        self.poison_fraction = poison_fraction
        self.trigger = Trigger(pattern, size, position, value)

    def setup(self, dataset) -> None:
        super().setup(dataset)
        if self.base_class is not None:
            _check_class(type(self).__name__, "base_class", self.base_class, dataset.num_classes)
        _check_class(type(self).__name__, "target_class", self.target_class, dataset.num_classes)
        if self.base_class == self.target_class:
            raise ValueError(f"base_class and target_class must differ; both are {self.base_class}")
        self.trigger.mask(*dataset.image_shape[-2:])      # fails early when it does not fit

    def _local_mask(self, height, width, rank, num_attackers):
        return self.trigger.mask(height, width)

    def pool_size(self, train_samples, clients, num_classes):
        if self.data != "pool":
            return 0
        if self.pool_size_per_attacker is not None:
            return self.pool_size_per_attacker
        per_class = 1 if self.base_class is None else num_classes
        return max(HANDFUL, int(round(self.poison_fraction * train_samples / clients / per_class)))

    def is_base(self, y: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: the labels whose images this backdoor stamps (every one when ``base_class`` is None)."""
        if self.base_class is None:
            return torch.ones_like(y, dtype=torch.bool)
        return y == self.base_class

    def poison(self, x, y, rank, num_attackers, generator, pool=None):
        mask = self._local_mask(x.shape[-2], x.shape[-1], rank, num_attackers)
        if self.data == "pool":
            if pool is None or pool[0].shape[0] == 0:
                return x, y
            px, py = pool
            return (torch.cat([x, self.trigger.apply(px, mask)]),
                    torch.cat([y, torch.full_like(py, self.target_class)]))
        base = self.is_base(y).nonzero().flatten()
        k = int(round(self.poison_fraction * base.numel()))
        chosen = base[torch.randperm(base.numel(), generator=generator)[:k]]
        x, y = x.clone(), y.clone()
        x[chosen] = self.trigger.apply(x[chosen], mask)
        y[chosen] = self.target_class
        return x, y

    def success_set(self, dataset):
        keep = self.is_base(dataset.y_test)
        if self.exclude_target:
            keep = keep & (dataset.y_test != self.target_class)
        xb = dataset.x_test[keep]
        return self.trigger.apply(xb), torch.full((xb.shape[0],), self.target_class, dtype=torch.long,
                                                  device=xb.device)

    def params(self):
        return {"base_class": self.base_class, "target_class": self.target_class,
                "poison_fraction": self.poison_fraction, "data": self.data,
                "pool_size": self.pool_size_per_attacker, "exclude_target": self.exclude_target,
                **self.trigger.params()}


def _rounds(rounds):
    """None (every round), or a list of round indices; negative indices count
    from the end (-1: the last round), resolved when the run's length is known."""
    if rounds is None:
        return None
    if isinstance(rounds, int):
        rounds = [rounds]
    rounds = list(rounds)
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in rounds):
        raise ValueError(f"rounds must be round indices (negative: from the end); got {rounds!r}")
    return rounds


def _gamma(gamma):
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0
                              or gamma == float("inf")):
        raise ValueError(f"gamma must be a finite number > 0; got {gamma!r}")
    return None if gamma is None else float(gamma)


class _Scheduled:
    """An attack that acts only in the rounds of ``self.rounds`` (None: every
    round); other rounds its clients behave honestly."""

    def begin(self, total_rounds):
        if self.rounds is not None:
            self.rounds = sorted({r + total_rounds if r < 0 else r for r in self.rounds})

    def active(self, round):
        return self.rounds is None or round in self.rounds


@register("dba")
class DistributedBackdoor(_Scheduled, TrojanBackdoor):
    """Distributed backdoor attack (Xie et al., 2020): the global trigger is cut
    into ``parts`` local patterns (default: one per attacker, at most one per
    pixel); attacker i poisons with local pattern ``i mod parts`` only. Success is
    measured with the full global trigger, as in the paper.

    The paper's other knobs: ``poison_fraction`` (the poison ratio: the share
    of an attacker's base-class images stamped, or the size of its pool),
    ``rounds`` (the attack schedule: round indices, negative from the end;
    None, the default: every round; in other rounds the attackers train
    honestly) and ``gamma`` (the scale factor γ applied to an attacker's update
    before it is sent; None, the default: 1, no scaling; RFLBAT's DBA runs use
    1 and 100).

    The default global trigger is a 4 x 4 square, which the row-major split
    cuts into bars of 4 pixels (the paper's local triggers are such bars): the
    trojan's default plus on 8 x 8 images has 5 pixels, too few to give every
    attacker a pattern of its own.
    """

    def __init__(self, *, parts: Optional[int] = None, pattern: str = "square", size: Optional[int] = 4,
                 gamma: Optional[float] = None, rounds=None, **kwargs):
        super().__init__(pattern=pattern, size=size, **kwargs)
        if parts is not None and (not isinstance(parts, int) or isinstance(parts, bool) or parts < 1):
            raise ValueError(f"parts must be a positive integer; got {parts!r}")
        self.parts = parts
        self.gamma = _gamma(gamma)
        self.rounds = _rounds(rounds)

    def _local_mask(self, height, width, rank, num_attackers):
        return _dba_mask(self.trigger, self.parts, height, width, rank, num_attackers)

    def craft(self, ctx):
        return ctx.malicious if self.gamma is None else ctx.malicious * self.gamma

    def params(self):
        return {**super().params(), "parts": self.parts, "gamma": self.gamma, "rounds": self.rounds}


@register("label_flip")
class LabelFlip(Attack):
    """Label flipping: attackers relabel ``source`` samples as ``target``, or,
    with ``source=None``, every label y as ``num_classes - 1 - y``. Success: the
    share of (source-class) clean test samples predicted as the flipped label.
    """

    uses_poisoned_data = True

    def __init__(self, *, source: Optional[int] = None, target: Optional[int] = None):
        if (source is None) != (target is None):
            raise ValueError("label_flip needs both source and target, or neither (flip all labels)")
        self.source = source
        self.target = target

    def setup(self, dataset):
        super().setup(dataset)
        if self.source is not None:
            _check_class("LabelFlip", "source", self.source, dataset.num_classes)
            _check_class("LabelFlip", "target", self.target, dataset.num_classes)
            if self.source == self.target:
                raise ValueError(f"source and target must differ; both are {self.source}")

    @property
    def base_class(self):
        return self.source

    def _flip(self, y):
        if self.source is None:
            return self.num_classes - 1 - y
        return torch.where(y == self.source, torch.full_like(y, self.target), y)

    def poison(self, x, y, rank, num_attackers, generator, pool=None):
        return x, self._flip(y)

    def success_set(self, dataset):
        if self.source is None:
            return dataset.x_test, self._flip(dataset.y_test)
        xs = dataset.x_test[dataset.y_test == self.source]
        return xs, torch.full((xs.shape[0],), self.target, dtype=torch.long, device=xs.device)






class _BoostedBackdoor(_Scheduled, TrojanBackdoor):
    """Shared by the two attacks of Bagdasaryan et al.: a trojan or DBA data
    poisoning, local training with attacker-chosen epochs/lr, scaling by γ."""

    def __init__(self, *, gamma: Optional[float] = None, rounds=None, distributed: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.gamma = _gamma(gamma)
        self.rounds = _rounds(rounds)
        self.distributed = distributed

    def _local_mask(self, height, width, rank, num_attackers):
        if self.distributed:
            return _dba_mask(self.trigger, None, height, width, rank, num_attackers)
        return super()._local_mask(height, width, rank, num_attackers)

    def scale(self, ctx: CraftContext) -> float:
        """γ; default n/η, which replaces the global model when the other updates are ≈ 0."""
        return self.gamma if self.gamma is not None else ctx.num_aggregated / ctx.server_lr

    def params(self):
        return {**super().params(), "gamma": self.gamma, "rounds": self.rounds, "distributed": self.distributed}


@register("model_replacement")
class ModelReplacement(_BoostedBackdoor):
    """Model replacement (Bagdasaryan et al., Sec. 4): train on backdoored data,
    then send ``γ (X - G)`` so that averaging replaces the global model with the
    backdoored one, once, near convergence: by default in the last round
    (``rounds=-1``), with ``γ = n / (η a)`` shared by the ``a`` attackers of that
    round (the paper's single attacker has ``a = 1``). ``rounds``: the rounds it
    attacks (``None``: every round; ints, negative from the end); other rounds
    the attackers behave honestly. An explicit ``gamma`` is each attacker's own.

    Args: ``gamma``, ``rounds``, ``distributed`` (DBA-style local triggers), and
    the trojan arguments of :class:`TrojanBackdoor`.
    """

    def __init__(self, *, rounds=-1, **kwargs):
        super().__init__(rounds=rounds, **kwargs)

    def craft(self, ctx):
        gamma = self.scale(ctx)
        if self.gamma is None:
            gamma /= max(1, ctx.malicious.shape[0])
        return ctx.malicious * gamma


@register("constrain_scale")
class ConstrainAndScale(_BoostedBackdoor):
    """Constrain-and-scale (Bagdasaryan et al., Sec. 4, and their appendix):
    the attacker trains on ``alpha * L_class + (1 - alpha) * L_ano`` where
    ``L_ano`` is the L2 distance (``"l2"``: ``||X - G||^2``) or the cosine
    distance (``"cosine"``) to the global model, then scales by γ but keeps
    the sent update's norm at most ``bound`` (S, the server's clipping bound,
    assumed known). With ``split=True`` the boost is shared: each of the a
    active attackers scales by γ/a, each staying under S.
    """

    def __init__(self, *, alpha: float = 0.7, anomaly: str = "l2", bound: Optional[float] = None,
                 split: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
        if anomaly not in ("l2", "cosine"):
            raise ValueError(f"anomaly must be 'l2' or 'cosine'; got {anomaly!r}")
        if bound is not None and not (bound > 0):
            raise ValueError(f"bound must be > 0; got {bound!r}")
        self.alpha = alpha
        self.anomaly = anomaly
        self.bound = bound
        self.split = split

    def local_spec(self, honest):
        return dataclasses.replace(honest, alpha=self.alpha, anomaly=self.anomaly)

    def craft(self, ctx):
        gamma = self.scale(ctx)
        if self.split:
            gamma = gamma / max(ctx.malicious.shape[0], 1)
        out = ctx.malicious * gamma
        if self.bound is not None:
            norms = out.norm(dim=1, keepdim=True)
            out = out * (self.bound / norms.clamp_min(1e-30)).clamp(max=1.0)
        return out

    def params(self):
        return {**super().params(), "alpha": self.alpha, "anomaly": self.anomaly, "bound": self.bound,
                "split": self.split}
