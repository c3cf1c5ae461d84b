"""Local training of many clients at once.

All sampled clients of a round train together: their parameters are stacked
into ``[n, ...]`` tensors and one SGD step of every client is a single
``vmap(grad(loss))`` call (``torch.func``), not a Python loop over clients.
Clients with less data take fewer steps: their batches are padded and masked,
and an all-padding batch leaves the parameters unchanged (plain SGD), so the
result equals training each client on its own (``train_sequential`` does that,
for tests and the benchmark).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

__all__ = ["LocalSpec", "batch_schedule", "train_batched", "train_sequential", "predict",
           "flat_params", "ANOMALY_LOSSES"]

ANOMALY_LOSSES = ("l2", "cosine")
Params = Dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class LocalSpec:
    """How a group of clients trains locally.

    Attributes:
        epochs, lr, batch_size: SGD for ``epochs`` passes.
        momentum: heavy-ball momentum as ``torch.optim.SGD`` applies it
            (``b <- m b + g``, ``w <- w - lr b``; the buffer starts at the
            first gradient); 0, the default, is plain SGD. A client whose
            batch is all padding takes no step (its buffer is not decayed).
        alpha: weight of the classification loss; the objective is
            ``alpha * L_class + (1 - alpha) * L_ano`` (Bagdasaryan et al., constrain-and-scale).
        anomaly: ``None``, ``"l2"`` (``||w - w_global||^2``) or ``"cosine"``
            (``1 - cos(w, w_global)``), differentiated through.
        project_norm: when set, every step projects ``w - w_global`` onto the
            L2 ball of this radius (projected GD under a known clipping bound).
    """

    epochs: int
    lr: float
    batch_size: int
    alpha: float = 1.0
    anomaly: Optional[str] = None
    project_norm: Optional[float] = None
    momentum: float = 0.0

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"local epochs must be a non-negative integer; got {self.epochs!r}")
        if not (self.lr > 0):
            raise ValueError(f"local lr must be > 0; got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        if not (0.0 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0, 1]; got {self.alpha!r}")
        if self.anomaly not in (None,) + ANOMALY_LOSSES:
            raise ValueError(f"anomaly must be None or one of {ANOMALY_LOSSES}; got {self.anomaly!r}")
        if self.project_norm is not None and not (self.project_norm > 0):
            raise ValueError(f"project_norm must be > 0; got {self.project_norm!r}")
        if not (0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}")


def batch_schedule(counts: torch.Tensor, epochs: int, batch_size: int,
                   generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-client mini-batch indices for ``epochs`` shuffled passes.

    Args:
        counts: ``[n]`` samples held by each client.
    Returns:
        ``idx [n, S, B]`` (int64, into each client's own data) and ``mask [n, S, B]``
        (float32, 0 on padding), ``S = epochs * ceil(max(counts) / B)``. Client k's
        batches in an epoch are its first ``ceil(counts[k] / B)`` steps, the last one
        possibly partial, as a drop_last=False DataLoader would give.
    """
    n = counts.numel()
    cmax = int(counts.max()) if n else 0
    steps = math.ceil(cmax / batch_size) if cmax else 0
    width = steps * batch_size
    pos = torch.arange(width)
    idx_epochs, mask_epochs = [], []
    for _ in range(epochs):
        keys = torch.rand(n, max(cmax, 1), generator=generator)
        keys[torch.arange(max(cmax, 1))[None, :] >= counts[:, None]] = 2.0   # padding sorts last
        perm = keys.argsort(dim=1)[:, :cmax]
        perm = F.pad(perm, (0, width - cmax))
        valid = pos[None, :] < counts[:, None]
        idx_epochs.append(torch.where(valid, perm, 0).view(n, steps, batch_size))
        mask_epochs.append(valid.float().view(n, steps, batch_size))
    if not idx_epochs:
        return torch.zeros(n, 0, batch_size, dtype=torch.long), torch.zeros(n, 0, batch_size)
    return torch.cat(idx_epochs, 1), torch.cat(mask_epochs, 1)


def flat_params(params: Params, batched: bool) -> torch.Tensor:
    if batched:
        return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], 1)
    return torch.cat([p.reshape(-1) for p in params.values()])


def _loss(model: nn.Module, spec: LocalSpec):
    def loss_fn(params, x, y, m, global_params):
        logits = functional_call(model, params, (x,))
        ce = F.cross_entropy(logits, y, reduction="none")
        loss = (ce * m).sum() / m.sum().clamp_min(1.0)
        if spec.anomaly is None:
            return loss
        if spec.anomaly == "l2":
            ano = sum(((params[k] - global_params[k]) ** 2).sum() for k in params)
        else:
            w = torch.cat([params[k].reshape(-1) for k in params])
            g = torch.cat([global_params[k].reshape(-1) for k in params])
            ano = 1.0 - F.cosine_similarity(w, g, dim=0, eps=1e-12)
        # A padding-only batch must not move the model through L_ano either.
        return spec.alpha * loss + (1.0 - spec.alpha) * ano * (m.sum() > 0)
    return loss_fn


def _project(params: Params, global_params: Params, radius: float, batched: bool) -> None:
    sq = sum(((p - global_params[k]) ** 2).reshape(p.shape[0] if batched else 1, -1).sum(1)
             for k, p in params.items())
    scale = (radius / sq.sqrt().clamp_min(1e-30)).clamp(max=1.0)
    for k, p in params.items():
        s = scale.view(-1, *([1] * (p.dim() - 1))) if batched else scale
        p.copy_(global_params[k] + (p - global_params[k]) * s)


def train_batched(model: nn.Module, global_params: Params, x_all: torch.Tensor, y_all: torch.Tensor,
                  rows: torch.Tensor, counts: torch.Tensor, spec: LocalSpec,
                  generator: torch.Generator) -> torch.Tensor:
    """Trains clients ``rows`` from ``global_params`` and returns their deltas.

    Args:
        x_all: ``[C, N_max, ...]`` every client's (padded) inputs; y_all ``[C, N_max]``.
        rows: ``[n]`` which clients of ``x_all`` train; counts ``[n]`` their sample counts.
    Returns:
        ``[n, d]`` deltas ``w_k - w_global`` in the order of ``model.named_parameters()``.
    """
    n = rows.numel()
    device = x_all.device
    idx, mask = batch_schedule(counts.cpu(), spec.epochs, spec.batch_size, generator)
    idx, mask = idx.to(device), mask.to(device)
    params = {k: v.detach().unsqueeze(0).repeat(n, *([1] * v.dim())) for k, v in global_params.items()}
    step_grad = vmap(grad(_loss(model, spec)), in_dims=(0, 0, 0, 0, None))
    r = rows.to(device)[:, None]
    bufs = {k: torch.zeros_like(v) for k, v in params.items()} if spec.momentum else None
    with torch.no_grad():
        for s in range(idx.shape[1]):
            xb, yb = x_all[r, idx[:, s]], y_all[r, idx[:, s]]
            grads = step_grad(params, xb, yb, mask[:, s], global_params)
            if bufs is None:          # plain SGD: a padding-only batch has a zero gradient
                for k in params:
                    params[k].sub_(grads[k], alpha=spec.lr)
            else:                     # momentum: a padding-only batch must not move the buffer either
                stepping = mask[:, s].sum(1) > 0
                for k in params:
                    on = stepping.view(-1, *([1] * (grads[k].dim() - 1)))
                    bufs[k] = torch.where(on, bufs[k] * spec.momentum + grads[k], bufs[k])
                    params[k].sub_(torch.where(on, bufs[k], 0.0), alpha=spec.lr)
            if spec.project_norm is not None:
                _project(params, global_params, spec.project_norm, batched=True)
        g = flat_params(global_params, batched=False)
        return flat_params(params, batched=True) - g


def train_sequential(model: nn.Module, global_params: Params, x_all, y_all, rows, counts,
                     spec: LocalSpec, generator: torch.Generator) -> torch.Tensor:
    """The same training as :func:`train_batched`, one client at a time with
    ``torch.optim.SGD`` on an ``nn.Module`` (same schedule, same random draws)."""
    idx, mask = batch_schedule(counts.cpu(), spec.epochs, spec.batch_size, generator)
    idx, mask = idx.to(x_all.device), mask.to(x_all.device)
    loss_fn = _loss(model, spec)
    out = []
    for i, row in enumerate(rows.tolist()):
        params = {k: v.detach().clone().requires_grad_(True) for k, v in global_params.items()}
        opt = torch.optim.SGD(list(params.values()), lr=spec.lr, momentum=spec.momentum)
        for s in range(idx.shape[1]):
            if spec.momentum and not bool(mask[i, s].any()):
                continue              # no data in this batch: no step (plain SGD would not move either)
            opt.zero_grad()
            loss = loss_fn(params, x_all[row, idx[i, s]], y_all[row, idx[i, s]], mask[i, s], global_params)
            loss.backward()
            opt.step()
            if spec.project_norm is not None:
                with torch.no_grad():
                    _project(params, global_params, spec.project_norm, batched=False)
        with torch.no_grad():
            out.append(flat_params(params, batched=False) - flat_params(global_params, batched=False))
    return torch.stack(out)


@torch.no_grad()
def predict(model: nn.Module, params: Params, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Predicted labels ``[N]`` of ``x`` under ``params``."""
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([functional_call(model, params, (x[i:i + batch],)).argmax(1)
                      for i in range(0, x.shape[0], batch)])
