"""The fully connected MNIST network, and the module that averages a committee's probabilities (what gets exported)."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class MnistFC(nn.Module):
    """Fully connected classifier: pixels in [0, 1], shape (N, 1, 28, 28) -> logits (N, 10)."""

    def __init__(self, hidden: Sequence[int] = (512, 256), dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        # Normalisation lives in the module so exported models take raw [0, 1] pixels.
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))
        layers: List[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            # A bias before BatchNorm is redundant (BN subtracts the mean), so drop it.
            layers.append(nn.Linear(width, h, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class Probabilities(nn.Module):
    """Softmax probabilities (N, 10) of one model, or the mean of the members' softmaxes for an ensemble."""

    def __init__(self, models):
        super().__init__()
        self.members = nn.ModuleList(models if isinstance(models, (list, tuple)) else [models])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs: List[torch.Tensor] = []
        for member in self.members:  # a plain loop so torch.jit.script and torch.export both unroll it
            probs.append(torch.softmax(member(x), dim=1))
        return torch.stack(probs, dim=0).mean(dim=0)
