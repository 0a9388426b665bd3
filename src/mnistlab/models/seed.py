"""The seed notebook's network, layer for layer: 10 convolutions, 2 max-pools, a 1x1 head.

258,602 parameters. Kept exactly as the notebook wrote it (no batch norm, biases everywhere,
ReLU after every convolution but the last) so its numbers can be reproduced.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.registry import register_model


def _conv_relu(cin: int, cout: int, kernel: int, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding), nn.ReLU())


class SeedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # Convolution block 1
        self.convblock1 = _conv_relu(1, 32, 3, padding=1)
        self.convblock2 = _conv_relu(32, 64, 3, padding=1)
        self.convblock3 = _conv_relu(64, 128, 3, padding=1)
        # Transition block 1
        self.pool1 = nn.MaxPool2d(2, 2)
        self.convblock4 = _conv_relu(128, 32, 1)
        # Convolution block 2
        self.convblock5 = _conv_relu(32, 64, 3, padding=1)
        self.convblock6 = _conv_relu(64, 128, 3, padding=1)
        # Transition block 2
        self.pool2 = nn.MaxPool2d(2, 2)
        self.convblock7 = _conv_relu(128, 32, 1)
        # Convolution block 3: 7x7 -> 1x1 without padding
        self.convblock8 = _conv_relu(32, 32, 3)
        self.convblock9 = _conv_relu(32, 64, 3)
        self.convblock10 = _conv_relu(64, 64, 3)
        self.convblock11 = nn.Sequential(nn.Conv2d(64, 10, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convblock3(self.convblock2(self.convblock1(x)))
        x = self.convblock4(self.pool1(x))
        x = self.convblock6(self.convblock5(x))
        x = self.convblock7(self.pool2(x))
        x = self.convblock10(self.convblock9(self.convblock8(x)))
        x = self.convblock11(x)
        return F.log_softmax(x.view(-1, 10), dim=1)


@register_model
def seed() -> nn.Module:
    """The seed notebook's 10-conv, 2-pool expand-and-squeeze network (258,602 params)."""
    return SeedNet()
