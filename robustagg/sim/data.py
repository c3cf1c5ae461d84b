"""Datasets for the simulator, all offline: scikit-learn's digits, Fashion-MNIST
from Debian's ``dataset-fashion-mnist`` package, and a synthetic generator.

Every dataset is returned as a :class:`Dataset` of float32 images ``[N, 1, H, W]``
in [0, 1] and int64 labels, already split into train and test.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from typing import Optional

import numpy as np
import torch

__all__ = ["Dataset", "load", "load_digits", "load_fashion_mnist", "synthetic",
           "FASHION_MNIST_DIR", "DATASETS", "SHAPES", "check_available"]

#: Where Debian's ``dataset-fashion-mnist`` package puts the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATASETS = ("digits", "fashion_mnist", "synthetic")
#: (number of classes, image shape) of each dataset, known without loading it
#: (so that options are checked before anything is read or written).
SHAPES = {"digits": (10, (1, 8, 8)), "fashion_mnist": (10, (1, 28, 28)), "synthetic": (10, (1, 8, 8))}


@dataclasses.dataclass
class Dataset:
    """Images in [0, 1] as ``[N, 1, H, W]`` float32, labels ``[N]`` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return dataclasses.replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                                   x_test=self.x_test.to(device), y_test=self.y_test.to(device))


def _split(name, x, y, num_classes, test_fraction, seed) -> Dataset:
    """A stratified train/test split, the same for a given seed."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(test_fraction * len(idx)))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return Dataset(name, t(x[~test_mask]).float(), t(y[~test_mask]).long(),
                   t(x[test_mask]).float(), t(y[test_mask]).long(), num_classes)


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images, 10 classes), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    return _split("digits", x, bunch.target.astype(np.int64), 10, test_fraction, seed)


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(directory: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory!r}; install Debian's package "
        f"dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass the folder holding the idx files")


def fashion_mnist_available(directory: Optional[str] = None) -> bool:
    try:
        _find(directory or FASHION_MNIST_DIR, "train-images-idx3-ubyte")
        return True
    except FileNotFoundError:
        return False


def check_available(name: str, path: Optional[str] = None) -> None:
    """Raises ``FileNotFoundError`` (saying how to get it) when dataset ``name``
    cannot be loaded from ``path``; reads nothing but the folder's listing."""
    if name.replace("-", "_").lower() in ("fashion_mnist", "fmnist"):
        directory = path or FASHION_MNIST_DIR
        for prefix in ("train", "t10k"):
            for stem in ("images-idx3", "labels-idx1"):
                _find(directory, f"{prefix}-{stem}-ubyte")


def load_fashion_mnist(directory: Optional[str] = None) -> Dataset:
    """Fashion-MNIST (60000 train / 10000 test, 28×28, 10 classes) from idx files.

    Args:
        directory: folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
            default :data:`FASHION_MNIST_DIR` (Debian's ``dataset-fashion-mnist``).
    """
    directory = directory or FASHION_MNIST_DIR
    xs = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
        lab = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
        xs[split] = (torch.from_numpy(img.astype(np.float32) / 255.0)[:, None], torch.from_numpy(lab.astype(np.int64)))
    return Dataset("fashion_mnist", xs["train"][0], xs["train"][1], xs["test"][0], xs["test"][1], 10)


def synthetic(num_train: int = 1200, num_test: int = 400, num_classes: int = 10, size: int = 8,
              noise: float = 0.35, seed: int = 0) -> Dataset:
    """A learnable image task for fast tests: each class is a fixed random
    template in [0, 1] (zero on a 2-pixel border, so a corner trigger is
    out-of-distribution as in real digit images) plus Gaussian noise, clipped to [0, 1].
    """
    if num_classes < 2 or size < 5:
        raise ValueError(f"synthetic needs num_classes >= 2 and size >= 5; got {num_classes}, {size}")
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 1, size, size, generator=g)
    templates[:, :, :2, :] = 0
    templates[:, :, :, :2] = 0

    def draw(n):
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = (templates[y] + noise * torch.randn(n, 1, size, size, generator=g)).clamp_(0, 1)
        x[:, :, :2, :] = 0
        x[:, :, :, :2] = 0
        return x, y

    xtr, ytr = draw(num_train)
    xte, yte = draw(num_test)
    return Dataset("synthetic", xtr, ytr, xte, yte, num_classes)


def load(name: str, path: Optional[str] = None, seed: int = 0) -> Dataset:
    """``"digits"`` (default of the CLI), ``"fashion_mnist"`` (``path`` = idx folder) or ``"synthetic"``."""
    key = name.replace("-", "_").lower()
    if key == "digits":
        return load_digits(seed=seed)
    if key in ("fashion_mnist", "fmnist"):
        return load_fashion_mnist(path)
    if key == "synthetic":
        return synthetic(seed=seed)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
