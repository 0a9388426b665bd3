"""The fastest public MNIST recipe's network, as published, to race against.

tuomaso/train_mnist_fast, notebook 8_Final_00s76.ipynb (MIT licence): 99.04% mean test
accuracy over 30 runs after one epoch, 0.76 s on a GTX 1660 Ti. experiments/peer-fast.toml
holds its recipe (Adam, OneCycle, batch 256, one fixed batch order).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.registry import register_model


class PeerNet(nn.Module):
    """The notebook's `Net`, layer for layer (PyTorch's default initialisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 24, 5, 1)  # 24x24
        self.conv2 = nn.Conv2d(24, 32, 3, 1)  # 10x10 (after the first 2x2 max-pool)
        self.fc1 = nn.Linear(800, 256)  # 32 channels x 5x5 after the second max-pool
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Max-pool before ReLU, as the notebook has it (same function, a quarter of the ReLUs).
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


@register_model
def peer_fast() -> nn.Module:
    """tuomaso/train_mnist_fast's final network (8_Final_00s76.ipynb); 215,194 params."""
    return PeerNet()
