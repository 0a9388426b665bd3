"""What `ml.predict` accepts, turned into named grayscale images before any model runs.

A path or a list of paths (read later, file by file), a Pillow image, or a numpy array or
torch tensor shaped [H, W], [N, H, W], [N, 1, H, W], or colour: [H, W, 3|4], [N, H, W, 3|4],
[N, 3|4, H, W] (RGB or RGBA, alpha composited on white as for files). Pixels are uint8 0-255
(or whole numbers in that range) or floats in [0, 1]. Anything else is one MnistlabError
naming the argument, its shape or dtype, and what to pass instead.

No torch import: a tensor is read through its own `.numpy()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnistlab.errors import MnistlabError, arg
from mnistlab.inference import preprocess

Item = tuple[str, "Path | np.ndarray"]  # a name for the result, and a file or gray [H, W]
COLOUR = (3, 4)  # channels of RGB and RGBA
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's "L"


def _fail(problem: str) -> MnistlabError:
    return MnistlabError(
        f"{arg('images_or_paths')} {problem}; pass a path, a list of paths, a PIL image, or "
        "an array or tensor shaped [H, W], [N, H, W], [N, 1, H, W] (or RGB/RGBA [H, W, 3])"
    )


def items(images_or_paths: Any) -> list[Item]:
    """The named images in `images_or_paths`, in order."""
    single = _file_or_image(images_or_paths, 0)
    if single is not None:
        return [single]
    if hasattr(images_or_paths, "detach") and hasattr(images_or_paths, "cpu"):  # a tensor
        return _arrays(images_or_paths.detach().cpu().numpy())
    if isinstance(images_or_paths, np.ndarray):
        return _arrays(images_or_paths)
    if isinstance(images_or_paths, list | tuple):
        if not images_or_paths:
            raise _fail("is empty")
        found = []
        for i, entry in enumerate(images_or_paths):
            item = _file_or_image(entry, i)
            if item is None:
                raise _fail(f"holds a {type(entry).__name__} at index {i}")
            found.append(item)
        return found
    raise _fail(f"is a {type(images_or_paths).__name__}")


def _file_or_image(entry: Any, index: int) -> Item | None:
    """A path (read later) or a PIL image (read now); None for anything else."""
    if isinstance(entry, str | Path):
        return (str(entry), Path(entry))
    if isinstance(entry, Image.Image):
        return (f"image {index}", preprocess.to_grayscale(entry))
    return None


def _arrays(array: np.ndarray) -> list[Item]:
    """[H, W], [N, H, W], [N, 1, H, W] or colour as named gray images in [0, 1]."""
    gray = _as_gray(array)
    return [(f"image {i}", image) for i, image in enumerate(gray)]


def _as_gray(array: np.ndarray) -> np.ndarray:
    """Any accepted layout as float32 [N, H, W] in [0, 1]."""
    shape = tuple(array.shape)
    if array.size == 0:
        raise _fail(f"has shape {shape}, with no pixels")
    pixels = _unit_range(array)
    if pixels.ndim == 2:  # [H, W]
        batch = pixels[None]
    elif pixels.ndim == 3 and shape[-1] in COLOUR and min(shape[:2]) > 4:  # [H, W, C]
        batch = _colour_to_gray(pixels[None])
    elif pixels.ndim == 3:  # [N, H, W]
        batch = pixels
    elif pixels.ndim == 4 and shape[1] == 1:  # [N, 1, H, W]
        batch = pixels[:, 0]
    elif pixels.ndim == 4 and shape[1] in COLOUR:  # [N, C, H, W]
        batch = _colour_to_gray(np.moveaxis(pixels, 1, -1))
    elif pixels.ndim == 4 and shape[-1] in COLOUR:  # [N, H, W, C]
        batch = _colour_to_gray(pixels)
    else:
        raise _fail(f"has shape {shape}")
    if min(batch.shape[1:]) < 1:
        raise _fail(f"has shape {shape}, with no pixels")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _unit_range(array: np.ndarray) -> np.ndarray:
    """uint8 (or whole numbers 0-255) / 255, or floats already in [0, 1]."""
    kind = array.dtype.kind
    if kind == "b" or kind not in "uif":
        raise _fail(f"has dtype {array.dtype}; give uint8 pixels or floats in [0, 1]")
    if kind in "ui":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise _fail(f"holds whole numbers from {low} to {high}; pixels are 0-255")
        return array.astype(np.float32) / 255
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise _fail("holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise _fail(
            f"holds values from {low:.3g} to {high:.3g}; floats must be pixels in [0, 1] (a "
            "loader's batch is normalised: pass Data.images, or x * std + mean)"
        )
    return values


def _colour_to_gray(rgb: np.ndarray) -> np.ndarray:
    """[N, H, W, 3|4] in [0, 1] as gray [N, H, W]; alpha composited on white, as for files."""
    colour = rgb[..., :3]
    if rgb.shape[-1] == 4:
        alpha = rgb[..., 3:4]
        colour = colour * alpha + (1 - alpha)
    return colour @ LUMA
