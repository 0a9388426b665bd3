"""An exported ONNX file run by ONNX Runtime alone: no torch, no training code.

The file carries what using it needs in its metadata (exporters.py writes it): the mean and
std its input is normalised with, what its output is ("log_probs" or "logits"), the dataset
and, for an int8 file, how it was calibrated. `OnnxModel` reads them and turns 28x28 images
in [0, 1] into class probabilities; evaluation and prediction build on that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError

SUFFIX = ".onnx"
DIGITS = tuple(str(d) for d in range(10))


def is_onnx_file(target: Any) -> bool:
    """A path naming an ONNX file (by its suffix), as `--checkpoint` and ml.evaluate take."""
    return isinstance(target, str | Path) and str(target).lower().endswith(SUFFIX)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities of logits or log-probabilities (both give the same)."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class OnnxModel:
    """One ONNX file in an InferenceSession, with its metadata (`meta`: mean, std, outputs,
    dataset, model, and int8 calibration where there is one)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MnistlabError(
                "running an ONNX file needs onnxruntime: pip install 'mnistlab[inference]'"
            ) from None
        self.path = Path(path)
        if not self.path.is_file():
            raise MnistlabError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types for a damaged file
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MnistlabError(
                f"{self.path}: not a readable ONNX file ({first}); export it again"
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.mean, self.std = float(props["mean"]), float(props["std"])
        except (KeyError, ValueError):
            raise MnistlabError(
                f"{self.path}: its metadata has no mean and std; export it with `mnistlab export`"
            ) from None
        self.meta: dict[str, Any] = dict(props)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = self.session.get_outputs()[0].name  # "log_probs" or "logits"
        # Files from before these records are MNIST's digits.
        self.classes = tuple(json.loads(props["classes"])) if "classes" in props else DIGITS
        self.digits = props.get("digits", "true") == "true"  # preprocess photos as digits

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The graph's output for a normalised float32 batch [N, 1, 28, 28]."""
        return self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]

    def log_probabilities(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class log-probabilities [N, classes] for images [N, 28, 28] in [0, 1]."""
        images = np.asarray(images, dtype=np.float32)
        out = []
        for start in range(0, len(images), batch_size):
            batch = (images[start : start + batch_size, None] - self.mean) / self.std
            out.append(log_softmax(self(batch)))
        return np.concatenate(out) if out else np.empty((0, 10), dtype=np.float32)

    def probabilities(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities [N, classes] for images [N, 28, 28] in [0, 1]."""
        return np.exp(self.log_probabilities(images, batch_size))
