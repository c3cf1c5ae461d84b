"""Splitting a training set across clients: i.i.d., Dirichlet(α) and k-classes shards.

Each function takes the labels and a ``numpy.random.Generator`` and returns one
int64 index tensor per client; every training sample goes to exactly one client
(``shards`` may leave out the remainder that does not fill a whole shard).
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch

__all__ = ["iid", "dirichlet", "shards", "partition", "PARTITIONS"]

PARTITIONS = ("iid", "dirichlet", "shards")


def _check_clients(num_clients: int, n: int) -> None:
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"clients must be a positive integer; got {num_clients!r}")
    if num_clients > n:
        raise ValueError(f"clients must be <= the number of training samples ({n}); got {num_clients}")


def _as_tensors(parts) -> List[torch.Tensor]:
    return [torch.from_numpy(np.sort(np.asarray(p, dtype=np.int64))) for p in parts]


def iid(labels: torch.Tensor, num_clients: int, rng: np.random.Generator) -> List[torch.Tensor]:
    """Uniformly shuffled, equal-sized parts (sizes differ by at most one)."""
    n = int(labels.numel())
    _check_clients(num_clients, n)
    return _as_tensors(np.array_split(rng.permutation(n), num_clients))


def dirichlet(labels: torch.Tensor, num_clients: int, rng: np.random.Generator, alpha: float = 0.5,
              min_size: int = 2) -> List[torch.Tensor]:
    """Label-skewed parts: for each class, its samples are split across clients
    in proportions drawn from Dirichlet(α·1) (Hsu et al., 2019). Small α → each
    client sees few classes; large α → close to i.i.d. Redrawn (at most 100
    times) until every client has at least ``min_size`` samples.
    """
    if not (alpha > 0):
        raise ValueError(f"alpha must be > 0; got {alpha!r}")
    y = labels.cpu().numpy()
    n = len(y)
    _check_clients(num_clients, n)
    min_size = min(min_size, n // num_clients)
    classes = np.unique(y)
    for _ in range(100):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return _as_tensors(parts)
    raise ValueError(f"Dirichlet(alpha={alpha}) could not give every one of {num_clients} clients "
                     f"{min_size} samples in 100 draws; raise alpha or lower clients")


def shards(labels: torch.Tensor, num_clients: int, rng: np.random.Generator,
           classes_per_client: int = 2) -> List[torch.Tensor]:
    """McMahan et al.'s pathological split: sort by label, cut into
    ``num_clients * classes_per_client`` equal shards, give each client
    ``classes_per_client`` random shards. A shard holds one class when the
    shard size divides the class sizes (McMahan et al.: 200 shards of 300 on
    MNIST), otherwise it may straddle two classes.
    """
    n = int(labels.numel())
    _check_clients(num_clients, n)
    if not isinstance(classes_per_client, int) or classes_per_client < 1:
        raise ValueError(f"classes_per_client must be a positive integer; got {classes_per_client!r}")
    num_shards = num_clients * classes_per_client
    if num_shards > n:
        raise ValueError(f"clients*classes_per_client = {num_shards} shards exceed the {n} training samples")
    order = np.argsort(labels.cpu().numpy(), kind="stable")
    shard_size = n // num_shards
    pieces = order[: shard_size * num_shards].reshape(num_shards, shard_size)
    assign = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    return _as_tensors(pieces[row].reshape(-1) for row in assign)


def partition(kind: str, labels: torch.Tensor, num_clients: int, rng: np.random.Generator,
              alpha: float = 0.5, classes_per_client: int = 2) -> List[torch.Tensor]:
    if kind == "iid":
        return iid(labels, num_clients, rng)
    if kind == "dirichlet":
        return dirichlet(labels, num_clients, rng, alpha=alpha)
    if kind == "shards":
        return shards(labels, num_clients, rng, classes_per_client=classes_per_client)
    raise ValueError(f"partition must be one of {', '.join(PARTITIONS)}; got {kind!r}")
