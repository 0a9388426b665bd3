"""Export a trained model to ONNX or TorchScript for use outside this package.

Both take a float32 batch [N, 1, 28, 28] of any size N, normalised as in training
((pixel / 255 - mean) / std, white ink on black), and return log-probabilities [N, 10].
The mean and std travel inside the file (ONNX metadata, a TorchScript extra file); the ONNX
graph's input is named "image" and its output "log_probs".

torch is imported where a model is exported, not with this module (see classify.py).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.errors import MnistlabError, given
from mnistlab.fileio import WriteError, write_files

if TYPE_CHECKING:
    from torch import nn

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "log_probs"
EXAMPLE_BATCH = 2  # any size > 1, so nothing gets specialised to a batch of one


def export_onnx(model: nn.Module, info: dict[str, Any]) -> bytes:
    """The model as an ONNX file's bytes, batch dimension dynamic."""
    import torch

    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise MnistlabError(
            "ONNX export needs the export extras: pip install 'mnistlab[export]'"
        ) from None
    example = torch.zeros(EXAMPLE_BATCH, 1, 28, 28)
    # The exporter warns about optional packages this model never uses (torchvision ops).
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in info.items()})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_torchscript(model: nn.Module, info: dict[str, Any]) -> bytes:
    """The model as a TorchScript file's bytes (traced; works for any batch size)."""
    import torch

    example = torch.zeros(EXAMPLE_BATCH, 1, 28, 28)
    buffer = io.BytesIO()
    # TorchScript is deprecated in recent PyTorch but still what C++ (libtorch) and older
    # deployments load; the warning would only repeat that on every export.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, buffer, _extra_files={"mnistlab.json": json.dumps(info)})
    return buffer.getvalue()


def export_model(model: nn.Module, fmt: str, out: str | Path, info: dict[str, Any]) -> int:
    """Write the model to `out` in `fmt` (atomically); returns the file size in bytes."""
    out = Path(out)
    if fmt not in FORMATS:
        raise MnistlabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    try:
        is_dir = out.is_dir()
    except OSError as e:
        raise MnistlabError(
            f"{given('path', out)}: unusable path ({e.strerror}); give another"
        ) from None
    if is_dir:
        raise MnistlabError(f"{given('path', out)}: is a directory; give a file name")
    model = model.cpu().eval()
    data = export_onnx(model, info) if fmt == "onnx" else export_torchscript(model, info)
    try:
        write_files({out: data})
    except WriteError as e:
        raise MnistlabError(
            f"{given('path', out)}: cannot write the {fmt} file ({e.reason}); nothing was written; "
            "choose a writable path with free space"
        ) from None
    return len(data)


def export_info(meta: dict[str, Any]) -> dict[str, Any]:
    """What an exported file carries from a model file's metadata: model, mean and std."""
    from mnistlab.data.datasets import normalization

    mean, std = normalization(meta)
    return {"model": meta.get("model_name"), "mean": mean, "std": std}
