"""What every network here ends in: the chain that flattens 10 channels into 10
log-probabilities (registered families and [net] tables alike), and the branching blocks a
[net] table may hold: residual sums and squeeze-and-excitation.

The joins (Add, Mul) are layers of their own rather than `+` and `*` in forward(), so that a
summary lists where paths meet, with the receptive field and multiply count of each join.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Chain(nn.Module):
    """A feature chain ending in 10 channels, flattened to log-probabilities."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.layers(x).flatten(1), dim=1)


class Add(nn.Module):
    """a + b: where a residual's paths join."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Mul(nn.Module):
    """a * b: a map scaled by a gate (one value per channel, broadcast over the map)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Residual(nn.Module):
    """body(x) + shortcut(x); without a shortcut module, body(x) + x (an identity)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.body(x), x if self.shortcut is None else self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation from 1x1 convolutions (Hu et al., 2018), no Linear layer:
    global average pool -> 1x1 conv to `hidden` -> ReLU -> 1x1 conv back -> sigmoid, the
    result scaling each channel of the input."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()
        self.scale = Mul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return self.scale(x, gate)
