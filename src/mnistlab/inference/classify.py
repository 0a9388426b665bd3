"""Predict the digit in image files with a trained model (the shipped one by default).

Each file is read, turned into a 28x28 MNIST-style input (see preprocess.py), normalised with
the model's mean/std and classified in batches. A file that cannot be used gets an error of
its own; the other files are still predicted.

torch is imported where a model runs, not with this module: everything before that (reading,
preprocessing, previews) works without it.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mnistlab import weights
from mnistlab.errors import MnistlabError, given
from mnistlab.fileio import WriteError, write_files
from mnistlab.inference import preprocess
from mnistlab.inference.onnxfile import OnnxModel

if TYPE_CHECKING:
    import torch
    from torch import nn

BATCH_SIZE = 256


@dataclass
class Prediction:
    """One image's answer: the class, its name, the top 3 and every class's probability."""

    file: str
    prediction: int | None = None
    top3: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    model_input: np.ndarray | None = field(default=None, repr=False, compare=False)  # previews
    name: str | None = None  # the class's name ("7", "Sneaker")
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)
    classes: tuple[str, ...] = field(default=(), repr=False, compare=False)  # names by class

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        top3 = [[label, prob] for label, prob in self.top3]
        return {"file": self.file, "prediction": self.prediction, "name": self.name, "top3": top3}

    def line(self) -> str:
        """`seven.png: 7  (7 0.991, 1 0.006, 2 0.002)`; named classes by their names."""
        ranked = ", ".join(f"{self._shown(label)} {prob:.3f}" for label, prob in self.top3)
        return f"{self.file}: {self._shown(self.prediction)}  ({ranked})"

    def _shown(self, label: int | None) -> str:
        if label is None or not self.classes or self.classes[label] == str(label):
            return str(label)
        return f"{label} {self.classes[label]}"


class Predictions(list):
    """Predictions in input order, with their numbers stacked for a batch: `.labels` [N],
    `.probabilities` [N, classes], `.names`. An image that failed (errors="keep") has label
    -1, no name and NaN probabilities."""

    @property
    def labels(self) -> np.ndarray:
        return np.array([-1 if p.prediction is None else p.prediction for p in self], np.int64)

    @property
    def names(self) -> list[str | None]:
        return [p.name for p in self]

    @property
    def probabilities(self) -> np.ndarray:
        width = next((len(p.probabilities) for p in self if p.probabilities is not None), 0)
        rows = [
            p.probabilities if p.probabilities is not None else np.full(width, np.nan, np.float32)
            for p in self
        ]
        return np.stack(rows) if rows else np.empty((0, width), np.float32)


def checkpoint_path(checkpoint: str | Path | None) -> Path:
    """The checkpoint to use: the given one, else the shipped model (which must exist)."""
    if checkpoint is not None:
        return Path(checkpoint)
    path = weights.shipped_weights()
    if not path.is_file():
        raise MnistlabError(
            f"{path}: the shipped model is missing from this installation; "
            "pass --checkpoint RUNDIR_OR_MODEL_PT or reinstall mnistlab"
        )
    return path


def file_kind_problem(path: str | Path) -> str | None:
    """Why a path cannot be read as an image file, from stat alone (None: it is a regular
    file). Opening a FIFO or a terminal would block, so nothing is opened before this."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"cannot read ({e.strerror or type(e).__name__})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not an image"
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not an image file; give the path of an image file"


def prepare_file(path: str | Path, preprocess_image: bool = True) -> np.ndarray:
    """One image file as the model's 28x28 input in [0, 1] (white ink on black)."""
    problem = file_kind_problem(path)
    if problem is not None:
        raise MnistlabError(f"{path}: {problem}")
    try:
        gray = preprocess.read_grayscale(path)
        if preprocess_image:
            return preprocess.mnist_style(gray)
        return check_not_blank(preprocess.as_28x28(gray))
    except MnistlabError as e:
        raise MnistlabError(f"{path}: {e}") from e


def check_not_blank(image: np.ndarray) -> np.ndarray:
    """A 28x28 input fed as it is must still hold a digit: some pixels differ from the rest."""
    if float(image.max()) - float(image.min()) < preprocess.MIN_CONTRAST:
        raise MnistlabError(
            "blank image: no ink found (every pixel is about the same); "
            "give an image of a digit, white ink on black"
        )
    return image


def classify(
    model: nn.Module,
    images: np.ndarray,
    mean: float,
    std: float,
    device: torch.device | str = "cpu",
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Class probabilities [N, classes] for 28x28 images [N, 28, 28] in [0, 1]."""
    import torch

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


def prepare(item: Path | np.ndarray, preprocess_image: bool = True) -> np.ndarray:
    """One image, a file or a gray array [H, W] in [0, 1], as the model's 28x28 input."""
    if isinstance(item, Path):
        return prepare_file(item, preprocess_image)
    if preprocess_image:
        return preprocess.mnist_style(item)
    return check_not_blank(preprocess.as_28x28(item))


def predict_items(
    model: nn.Module,
    items: list[tuple[str, Path | np.ndarray]],
    *,
    mean: float | None = None,
    std: float | None = None,
    classes: tuple[str, ...] = (),
    preprocess_image: bool = True,
    device: torch.device | str = "cpu",
) -> Predictions:
    """Predict every named image (see inputs.items); one that cannot be read or used gets an
    error, not an exception. `mean`, `std`: the model's normalisation (default: the recorded
    dataset's); `classes`: names by class."""
    results = Predictions(Prediction(file=name) for name, _ in items)
    for result, (_, item) in zip(results, items, strict=True):
        try:
            result.model_input = prepare(item, preprocess_image)
        except MnistlabError as e:
            result.error = str(e) if isinstance(item, Path) else f"{result.file}: {e}"
    ready = [r for r in results if r.model_input is not None]
    rank(model, ready, [r.model_input for r in ready], mean, std, classes, device)
    return results


def predict_files(
    model: nn.Module, files: list[str | Path], *, show_dir: str | Path | None = None, **options
) -> Predictions:
    """predict_items for image files; with `show_dir`, each model input is then written there
    as a PNG (see save_previews), after the predictions are made."""
    results = predict_items(model, [(str(f), Path(f)) for f in files], **options)
    if show_dir is not None:
        save_previews(Path(show_dir), results)
    return results


def rank(
    model: nn.Module | OnnxModel,
    results: list[Prediction],
    inputs: list[np.ndarray],
    mean: float | None,
    std: float | None,
    classes: tuple[str, ...] = (),
    device: torch.device | str = "cpu",
) -> None:
    """Fill in each result's class, name, top 3 and probabilities from its 28x28 input. An
    OnnxModel runs through ONNX Runtime with its own normalisation (no torch)."""
    if not results:
        return
    if isinstance(model, OnnxModel):
        probs = model.probabilities(np.stack(inputs))
    else:
        if mean is None or std is None:
            from mnistlab.data.datasets import normalization

            mean, std = normalization({})
        probs = classify(model, np.stack(inputs), mean, std, device).numpy()
    names = classes or tuple(str(i) for i in range(probs.shape[1]))
    # Highest first; a stable sort keeps the lower class first on a tie, as topk does.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    top_probs = np.take_along_axis(probs, order, axis=1)
    rows = zip(results, order.tolist(), top_probs.tolist(), probs, strict=True)
    for result, labels, ps, row in rows:
        result.prediction, result.name = labels[0], names[labels[0]]
        result.top3 = list(zip(labels, ps, strict=True))
        result.probabilities, result.classes = row, names


def preview_files(folder: Path, results: list[Prediction]) -> dict[Path, bytes]:
    """Each model input as PNG bytes at `<folder>/<stem>.png`; a repeated stem gets `-2`, ..."""
    files: dict[Path, bytes] = {}
    for result in results:
        if result.model_input is None:
            continue
        stem, number = Path(result.file).stem, 1
        name = f"{stem}.png"
        while folder / name in files:
            number += 1
            name = f"{stem}-{number}.png"
        buffer = io.BytesIO()
        pixels = np.round(result.model_input * 255).astype(np.uint8)
        Image.fromarray(pixels).save(buffer, "PNG")
        files[folder / name] = buffer.getvalue()
    return files


def save_previews(folder: Path, results: list[Prediction]) -> None:
    """Write the previews, all or none: a failure removes the files and folders this call
    made and is one error naming the folder."""
    try:
        write_files(preview_files(folder, results))
    except WriteError as e:
        raise MnistlabError(
            f"{given('show_preprocessed', folder)}: cannot write the previews ({e.reason}); "
            "no preview was kept; choose a writable folder"
        ) from None


def predict_onnx(
    items: list[tuple[str, Path | np.ndarray]],
    path: str | Path,
    *,
    preprocess_image: bool | None = None,
    threads: int | None = None,
) -> Predictions:
    """predict_items with an exported ONNX file, through ONNX Runtime alone: no torch, no
    training code. Its metadata gives the normalisation, the class names and whether the
    images are digits to preprocess (`preprocess_image`: None for that)."""
    model = OnnxModel(path, threads)
    digits = model.digits if preprocess_image is None else preprocess_image
    return predict_items(model, items, classes=model.classes, preprocess_image=digits)
