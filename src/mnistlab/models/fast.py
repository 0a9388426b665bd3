"""Networks built for time to accuracy (issue #13): the peer's shape, made to learn faster.

The peer (models/peer.py) pools each convolution at once and ends in a wide Linear layer; on
two CPU cores that trains faster per image than the drill-down's thin, deep, BatchNorm-heavy
chains. experiments/fast-99.toml and fast-994.toml say which of these they train and why.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.registry import register_model


class PoolNet(nn.Module):
    """conv 5x5 -> max-pool -> ReLU [-> BN], conv 3x3 -> max-pool -> ReLU [-> BN], Linear, Linear.

    Max-pool comes before ReLU (and BatchNorm), so both pass over a quarter of the values.
    """

    def __init__(self, c1: int, c2: int, hidden: int, bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, bias=not bn)  # 24x24, pooled to 12x12
        self.conv2 = nn.Conv2d(c1, c2, 3, bias=not bn)  # 10x10, pooled to 5x5
        self.bn1 = nn.BatchNorm2d(c1) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c2) if bn else nn.Identity()
        self.fc1 = nn.Linear(c2 * 25, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(F.relu(F.max_pool2d(self.conv1(x), 2)))
        x = self.bn2(F.relu(F.max_pool2d(self.conv2(x), 2)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


@register_model
def pool_bn() -> nn.Module:
    """The peer's network with BatchNorm after each pooled conv; 215,250 params."""
    return PoolNet(24, 32, 256, bn=True)


@register_model
def pool_bn_small() -> nn.Module:
    """pool_bn at 16 and 32 channels and 128 hidden units: about two thirds of the MACs."""
    return PoolNet(16, 32, 128, bn=True)
