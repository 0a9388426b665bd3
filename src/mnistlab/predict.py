"""Predict the digit in image files with a trained model (the shipped one by default).

Each file is read, turned into a 28x28 MNIST-style input (see preprocess.py), normalised with
the model's dataset mean/std and classified in batches. A file that cannot be used gets an
error of its own; the other files are still predicted.
"""

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from mnistlab import preprocess
from mnistlab.data import MNIST
from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_bytes
from mnistlab.rundir import load_model

BATCH_SIZE = 256


@dataclass
class Prediction:
    file: str
    prediction: int | None = None
    top3: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        top3 = [[digit, prob] for digit, prob in self.top3]
        return {"file": self.file, "prediction": self.prediction, "top3": top3}

    def line(self) -> str:
        """`seven.png: 7  (7 0.991, 1 0.006, 2 0.002)`"""
        ranked = ", ".join(f"{digit} {prob:.3f}" for digit, prob in self.top3)
        return f"{self.file}: {self.prediction}  ({ranked})"


def default_checkpoint() -> Path:
    """The model shipped inside the package (weights/final.pt)."""
    return Path(str(resources.files("mnistlab").joinpath("weights", "final.pt")))


def checkpoint_path(checkpoint: str | Path | None) -> Path:
    """The checkpoint to use: the given one, else the shipped model (which must exist)."""
    if checkpoint is not None:
        return Path(checkpoint)
    path = default_checkpoint()
    if not path.is_file():
        raise MnistlabError(
            f"{path}: the shipped model is missing from this installation; "
            "pass --checkpoint RUNDIR_OR_MODEL_PT or reinstall mnistlab"
        )
    return path


def resolve_device(name: str | None) -> torch.device:
    try:
        device = torch.device(name or "cpu")
    except RuntimeError as e:
        raise MnistlabError(f"--device {name}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(f"--device {name}: CUDA is not available; use --device cpu")
    return device


def prepare_file(path: str | Path, preprocess_image: bool = True) -> np.ndarray:
    """One image file as the model's 28x28 input in [0, 1] (white ink on black)."""
    try:
        gray = preprocess.read_grayscale(path)
        return preprocess.mnist_style(gray) if preprocess_image else preprocess.as_28x28(gray)
    except MnistlabError as e:
        raise MnistlabError(f"{path}: {e}") from e


def classify(
    model: nn.Module,
    images: np.ndarray,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Class probabilities [N, 10] for 28x28 images [N, 28, 28] in [0, 1]."""
    model = model.to(device).eval()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)
    probs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            # Not in place: on the CPU `x` shares memory with the caller's array.
            batch = (x[start : start + batch_size].to(device) - mean) / std
            # softmax of log-probabilities is the probabilities (and of logits too).
            probs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(probs) if probs else torch.empty(0, 10)


def predict_files(
    model: nn.Module,
    files: list[str | Path],
    *,
    mean: float = MNIST.mean,
    std: float = MNIST.std,
    preprocess_image: bool = True,
    show_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> list[Prediction]:
    """Predict every file; one that cannot be read or used gets an error, not an exception."""
    results = [Prediction(file=str(f)) for f in files]
    inputs, ready = [], []
    for result in results:
        try:
            inputs.append(prepare_file(result.file, preprocess_image))
            ready.append(result)
        except MnistlabError as e:
            result.error = str(e)
    if show_dir is not None:
        save_inputs(Path(show_dir), [r.file for r in ready], inputs)
    rank(model, ready, inputs, mean, std, device)
    return results


def rank(
    model: nn.Module,
    results: list[Prediction],
    inputs: list[np.ndarray],
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
) -> None:
    """Fill in each result's prediction and top 3 from its 28x28 input."""
    if not results:
        return
    probs = classify(model, np.stack(inputs), mean, std, device)
    top_probs, top_digits = probs.topk(3, dim=1)
    for result, digits, ps in zip(results, top_digits.tolist(), top_probs.tolist(), strict=True):
        result.prediction = digits[0]
        result.top3 = list(zip(digits, ps, strict=True))


def prepare_array(image: np.ndarray, preprocess_image: bool = True) -> np.ndarray:
    """One grayscale image array (uint8 0-255, or floats in [0, 1]) as the model's input."""
    gray = np.asarray(image)
    if gray.ndim != 2:
        raise MnistlabError(f"image has shape {gray.shape}; expected one grayscale image [H, W]")
    gray = (gray / 255.0 if gray.dtype == np.uint8 else gray).astype(np.float32)
    return preprocess.mnist_style(gray) if preprocess_image else preprocess.as_28x28(gray)


def predict_arrays(
    model: nn.Module,
    images: np.ndarray,
    *,
    mean: float = MNIST.mean,
    std: float = MNIST.std,
    preprocess_image: bool = True,
    device: torch.device | str = "cpu",
) -> list[Prediction]:
    """predict_files for images in memory [N, H, W]; results are named "image 0", ..."""
    results = [Prediction(file=f"image {i}") for i in range(len(images))]
    inputs, ready = [], []
    for result, image in zip(results, images, strict=True):
        try:
            inputs.append(prepare_array(image, preprocess_image))
            ready.append(result)
        except MnistlabError as e:
            result.error = f"{result.file}: {e}"
    rank(model, ready, inputs, mean, std, device)
    return results


def save_inputs(folder: Path, files: list[str], inputs: list[np.ndarray]) -> None:
    """Write each model input as `<stem>.png`; a repeated stem gets `-2`, `-3`, ..."""
    used: set[str] = set()
    for file, pixels in zip(files, inputs, strict=True):
        stem, number = Path(file).stem, 1
        name = f"{stem}.png"
        while name in used:
            number += 1
            name = f"{stem}-{number}.png"
        used.add(name)
        buffer = io.BytesIO()
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, "PNG")
        atomic_write_bytes(folder / name, buffer.getvalue())


def predict_from_cli(args: argparse.Namespace) -> int:
    """`mnistlab predict`: exit status 1 when any file failed, 0 otherwise."""
    model, meta = load_model(checkpoint_path(args.checkpoint))
    results = predict_files(
        model,
        args.images,
        mean=float(meta.get("mean", MNIST.mean)),
        std=float(meta.get("std", MNIST.std)),
        preprocess_image=not args.no_preprocess,
        show_dir=args.show_preprocessed,
        device=resolve_device(args.device),
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            if result.error is None:
                print(result.line())
            else:
                print(f"mnistlab: error: {result.error}", file=sys.stderr)
    return 1 if any(r.error is not None for r in results) else 0
