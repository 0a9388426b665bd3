"""Export a trained model to ONNX or TorchScript for use outside this package.

Both take a float32 batch [N, 1, 28, 28] of any size N, normalised as in training
((pixel / 255 - mean) / std, white ink on black), and return what the network returns,
[N, 10]: log-probabilities or logits (softmax of either gives the probabilities). The mean,
std and output kind travel inside the file (ONNX metadata, a TorchScript extra file); the
ONNX graph's input is named "image" and its output "log_probs" or "logits", for what it is.

torch is imported where a model is exported, not with this module (see classify.py).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.errors import MnistlabError, arg, given
from mnistlab.fileio import WriteError, write_files

if TYPE_CHECKING:
    from torch import nn

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAMES = ("log_probs", "logits")  # the ONNX output's name: models.OUTPUTS, as recorded
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
                output_names=[info["outputs"]],
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


SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def check_format(fmt: Any) -> str:
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise MnistlabError(
            f"{given('format', fmt)}: unknown export format; choose one of: {', '.join(FORMATS)}"
        )
    return fmt


def check_out(out: Any, fmt: str) -> Path:
    """The file an export writes for `out`, checked before any work: a file name (not blank,
    not ending in a separator, not a folder), whose folder can be made, resolvable. A link
    to a file is written through, as the shell's `>` would; a link loop is refused."""
    name = f"model{SUFFIXES.get(fmt, '')}"
    if not isinstance(out, str | os.PathLike):
        raise MnistlabError(
            f"{arg('path')} got a {type(out).__name__}; give a file name such as {name!r}"
        )
    text = os.fspath(out)
    if not isinstance(text, str) or not text.strip():
        blank = f"{arg('path')}{'' if arg('path').endswith('=') else ' '}{text!r}"
        raise MnistlabError(f"{blank}: empty; give a file name such as {name!r}")
    shown = given("path", text)
    if text.endswith(("/", os.sep)) or (os.altsep and text.endswith(os.altsep)):
        folder = text.rstrip("/" + os.sep + (os.altsep or ""))
        raise MnistlabError(
            f"{shown}: ends in a separator, so it names a folder; give a file name such as "
            f"{os.path.join(folder, name)!r}"
        )
    path = Path(text)
    try:
        os.stat(path)
    except FileNotFoundError:
        pass  # new, or a link to a file yet to be written
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise MnistlabError(
                f"{shown}: cannot be resolved (a symbolic link loop); remove the link or give "
                "another file name"
            ) from None
        if e.errno != errno.ENOTDIR:
            raise MnistlabError(f"{shown}: unusable path ({e.strerror}); give another") from None
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # write the file the link names, keep the link
    if path.is_dir():
        raise MnistlabError(
            f"{shown}: is a directory; give a file name such as {str(path / name)!r}"
        )
    for parent in path.parents:
        if parent.is_dir():
            break
        if os.path.lexists(parent):
            raise MnistlabError(
                f"{shown}: cannot write there, {parent} is a file, not a folder; give a path "
                "in a folder"
            )
    return path


def export_model(model: nn.Module, fmt: str, out: str | Path, info: dict[str, Any]) -> int:
    """Write the model to `out` in `fmt` (atomically); returns the file size in bytes."""
    fmt = check_format(fmt)
    out = check_out(out, fmt)
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
    """What an exported file carries from a model file's metadata: model, mean, std and what
    the output is ("log_probs" when a file from before the record does not say)."""
    from mnistlab.data.datasets import normalization

    mean, std = normalization(meta)
    outputs = meta.get("outputs") or OUTPUT_NAMES[0]
    return {"model": meta.get("model_name"), "mean": mean, "std": std, "outputs": outputs}


def exported_outputs(path: str | Path, fmt: str) -> str:
    """What an exported file's output is ("log_probs" or "logits"), read back from the file."""
    if fmt == "onnx":
        import onnx

        return onnx.load(str(path)).graph.output[0].name
    import torch

    extra = {"mnistlab.json": ""}
    with warnings.catch_warnings():  # deprecated, as export_torchscript says
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["mnistlab.json"]).get("outputs") or OUTPUT_NAMES[0]
