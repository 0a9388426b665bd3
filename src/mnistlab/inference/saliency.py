"""Which pixels drove a prediction: gradient x input on the 28x28 image the model saw.

The gradient of the predicted class's log-probability says how much each pixel's brightness
pushes towards that class; multiplied by the pixel (ink is bright, background is 0) it keeps
only what is on the page. Positive values drove the answer, negative ones argued against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


def gradient_x_input(
    model: nn.Module, image: np.ndarray, mean: float, std: float, target: int
) -> np.ndarray:
    """[28, 28] attribution of class `target` for one image in [0, 1], scaled to [-1, 1]."""
    import torch

    model.eval()
    x = torch.tensor(np.asarray(image, dtype=np.float32)[None, None], requires_grad=True)
    with torch.enable_grad():
        log_probs = torch.log_softmax(model((x - mean) / std).float(), dim=1)
        (grad,) = torch.autograd.grad(log_probs[0, target], x)
    attribution = (grad * x).detach()[0, 0].numpy()
    peak = float(np.abs(attribution).max())
    return attribution / peak if peak > 0 else attribution
