"""Export a trained model to ONNX or TorchScript for use outside this package.

Both take a float32 batch [N, 1, 28, 28] of any size N, normalised as in training
((pixel / 255 - mean) / std, white ink on black), and return log-probabilities [N, 10].
The mean and std travel inside the file (ONNX metadata, a TorchScript extra file); the ONNX
graph's input is named "image" and its output "log_probs".
"""

import argparse
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.data import MNIST
from mnistlab.errors import MnistlabError
from mnistlab.fileio import WriteError, write_files
from mnistlab.predict import checkpoint_path
from mnistlab.rundir import load_model

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "log_probs"
EXAMPLE_BATCH = 2  # any size > 1, so nothing gets specialised to a batch of one


def export_onnx(model: nn.Module, info: dict[str, Any]) -> bytes:
    """The model as an ONNX file's bytes, batch dimension dynamic."""
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
        raise MnistlabError(f"--out {out}: unusable path ({e.strerror}); give another") from None
    if is_dir:
        raise MnistlabError(f"--out {out}: is a directory; give a file name")
    model = model.cpu().eval()
    data = export_onnx(model, info) if fmt == "onnx" else export_torchscript(model, info)
    try:
        write_files({out: data})
    except WriteError as e:
        raise MnistlabError(
            f"--out {out}: cannot write the {fmt} file ({e.reason}); nothing was written; "
            "choose a writable path with free space"
        ) from None
    return len(data)


def export_info(meta: dict[str, Any]) -> dict[str, Any]:
    """What an exported file carries from a model file's metadata: model, mean and std."""
    return {
        "model": meta.get("model_name"),
        "mean": float(meta.get("mean", MNIST.mean)),
        "std": float(meta.get("std", MNIST.std)),
    }


def export_from_cli(args: argparse.Namespace) -> None:
    model, meta = load_model(checkpoint_path(args.checkpoint))
    info = export_info(meta)
    size = export_model(model, args.format, args.out, info)
    print(f"wrote {args.out} ({args.format}, {size:,} bytes, model {info['model']})")
    print(
        f"  input:  float32 [N, 1, 28, 28], white ink on black, "
        f"(pixel / 255 - {info['mean']}) / {info['std']}"
    )
    print("  output: float32 [N, 10], log-probabilities of the digits 0-9")
