"""The GLR benchmark's network: :class:`SplitMLP`, an MLP split into a lower part (frozen after
experience 0 by the latent methods) and an upper part, initialised from an explicit generator."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear initialisation, drawn from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class SplitMLP(nn.Module):
    """``in_dim -> hidden... -> n_classes`` with ReLU; ``lower`` holds the first ``split`` hidden layers
    (empty for split 0: the latent is then the input), ``upper`` the rest and the output layer."""

    def __init__(self, in_dim: int, hidden, n_classes: int, split: int, generator: torch.Generator):
        super().__init__()
        dims = [int(in_dim), *map(int, hidden)]
        blocks = [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:])]
        head = nn.Linear(dims[-1], n_classes)
        for m in [*(b[0] for b in blocks), head]:
            with torch.no_grad():
                _init_linear(m, generator)
        self.lower = nn.Sequential(*blocks[:split])
        self.upper = nn.Sequential(*blocks[split:], head)
        self.latent_dim = dims[split]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x))
