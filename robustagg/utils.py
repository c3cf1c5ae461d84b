"""Helpers between real models and the [K, d] matrices the rules work on."""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Union

import torch

__all__ = ["flatten_deltas", "unflatten", "apply_update"]

State = Union[Mapping[str, torch.Tensor], Sequence[torch.Tensor]]


def _entries(state: State, what: str):
    """(key, tensor) pairs of the floating-point entries, in order."""
    if isinstance(state, Mapping):
        items = list(state.items())
    elif isinstance(state, (list, tuple)):
        items = list(enumerate(state))
    else:
        raise TypeError(f"{what} must be a state dict or a list of tensors; got {type(state).__name__}")
    return [(k, v) for k, v in items if isinstance(v, torch.Tensor) and v.is_floating_point()]


def flatten_deltas(client_states: Sequence[State], global_state: State) -> torch.Tensor:
    """``[K, d]`` deltas ``w_k - w_global`` over the floating-point entries of the global state.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are skipped; the
    order of the coordinates is the order of the global state's entries.

    Example:
        >>> g = model.state_dict(); deltas = flatten_deltas([m.state_dict() for m in clients], g)
    """
    ref = _entries(global_state, "global_state")
    if not ref:
        raise ValueError("global_state has no floating-point tensors")
    rows = []
    for i, st in enumerate(client_states):
        ent = dict(_entries(st, f"client_states[{i}]"))
        parts = []
        for key, g in ref:
            if key not in ent:
                raise ValueError(f"client_states[{i}] lacks entry {key!r} of the global state")
            if ent[key].shape != g.shape:
                raise ValueError(f"client_states[{i}][{key!r}] has shape {tuple(ent[key].shape)}; "
                                 f"the global state has {tuple(g.shape)}")
            parts.append((ent[key].detach().to(g.device, g.dtype) - g.detach()).reshape(-1))
        rows.append(torch.cat(parts))
    if not rows:
        raise ValueError("client_states is empty")
    return torch.stack(rows)


def unflatten(update: torch.Tensor, global_state: State) -> Union[Dict[str, torch.Tensor], List[torch.Tensor]]:
    """Splits a ``[d]`` update into tensors shaped like the global state's floating-point entries."""
    ref = _entries(global_state, "global_state")
    total = sum(g.numel() for _, g in ref)
    if update.dim() != 1 or update.numel() != total:
        raise ValueError(f"update must have shape [{total}] (the global state's floating-point size); "
                         f"got {tuple(update.shape)}")
    out, offset = OrderedDict(), 0
    for key, g in ref:
        out[key] = update[offset:offset + g.numel()].view(g.shape).to(g.dtype)
        offset += g.numel()
    return out if isinstance(global_state, Mapping) else list(out.values())


def stepped(w: torch.Tensor, step: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    """``w + lr * step`` (a new tensor of w's dtype, device and shape), computed in
    float64 and rounded once: the one definition of applying an aggregate, used
    by :func:`apply_update`, the simulator and the Flower strategy."""
    step = step.reshape(w.shape).to(device=w.device, dtype=torch.float64)
    return (w.detach().to(torch.float64) + lr * step).to(w.dtype)


def apply_update(global_state: State, update: torch.Tensor, lr: float = 1.0):
    """``w <- w + lr * update`` on a copy of the global state (non-float entries copied as they are)."""
    parts = unflatten(update, global_state)
    if isinstance(global_state, Mapping):
        new = OrderedDict()
        for k, v in global_state.items():
            new[k] = stepped(v, parts[k], lr) if k in parts else v.clone()
        return new
    parts_iter = iter(parts)
    return [stepped(t, next(parts_iter), lr) if t.is_floating_point() else t.clone() for t in global_state]
