"""The simulator's models: logistic regression, an MLP and the RLR paper's CNN.

None of them has BatchNorm or dropout, so local training is a pure function of
(parameters, batch) and can be batched over clients with ``torch.func.vmap``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["LogisticRegression", "MLP", "CNN", "build_model", "MODELS"]

MODELS = ("logreg", "mlp", "cnn")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression on the flattened image."""

    def __init__(self, image_shape: Tuple[int, ...], num_classes: int):
        super().__init__()
        n_in = 1
        for s in image_shape:
            n_in *= s
        self.fc = nn.Linear(n_in, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """Flatten → Linear(hidden) → ReLU → Linear(num_classes)."""

    def __init__(self, image_shape: Tuple[int, ...], num_classes: int, hidden: int = 64):
        super().__init__()
        n_in = 1
        for s in image_shape:
            n_in *= s
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class CNN(nn.Module):
    """The shape of the RLR paper's model (Sun et al., 2019): conv 3×3 (32) →
    conv 3×3 (64) → max-pool 2 → FC(128) → FC(num_classes); 1.2M parameters on
    28×28 inputs. The paper's dropout is left out (pure-function local training)."""

    def __init__(self, image_shape: Tuple[int, ...], num_classes: int, hidden: int = 128):
        super().__init__()
        c, h, w = image_shape
        if h < 6 or w < 6:
            raise ValueError(f"CNN needs images of at least 6x6; got {h}x{w}")
        self.conv1 = nn.Conv2d(c, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def build_model(name: str, image_shape, num_classes: int, hidden=None) -> nn.Module:
    if name == "logreg":
        return LogisticRegression(image_shape, num_classes)
    if name == "mlp":
        return MLP(image_shape, num_classes, hidden or 64)
    if name == "cnn":
        return CNN(image_shape, num_classes, hidden or 128)
    raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
