"""What every network here ends in: the chain that flattens 10 channels into 10
log-probabilities (registered families and [net] tables alike)."""

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
