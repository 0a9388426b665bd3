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


# int8: ONNX Runtime's static quantization, QDQ with per-channel weights, its activation
# ranges calibrated (MinMax) on training images only, never the test set.
CALIBRATION_IMAGES = 2000
CALIBRATION_SEED = 0


def calibration_batches(
    dataset: str, mean: float, std: float, data_dir=None, count: int = CALIBRATION_IMAGES
) -> list:
    """`count` training images of `dataset` drawn with a fixed seed, normalised as the model
    was trained, in batches [64, 1, 28, 28] float32."""
    import numpy as np

    from mnistlab.data.datasets import load_split

    images, _ = load_split(dataset, True, data_dir)
    rng = np.random.default_rng(CALIBRATION_SEED)
    picked = images.numpy()[np.sort(rng.permutation(len(images))[:count])]
    x = ((picked.astype(np.float32) / 255 - mean) / std)[:, None]
    return [x[i : i + 64] for i in range(0, len(x), 64)]


def quantize_int8(fp32: bytes, info: dict[str, Any], batches: list) -> bytes:
    """An ONNX file's bytes quantized to int8 (QDQ, per-channel weights), calibrated on
    `batches`; its metadata says how."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.rest, None)
            return None if batch is None else {INPUT_NAME: batch}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    # The quantizer logs advice and per-channel fallbacks (BatchNorm's 1-d scales) on the root
    # logger; the result is what the metadata records.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, pre, dst = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "pre", "int8"))
            src.write_bytes(fp32)
            # Shape inference and graph optimisation first, as ONNX Runtime advises (a
            # smaller file, and closer to fp32; results/bench/int8.txt).
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre),
                str(dst),
                Batches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,  # S8S8 QDQ: ONNX Runtime's advice for CPUs
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            proto = onnx.load(str(dst))
    finally:
        root.setLevel(level)
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in info.items()})
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


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    info: dict[str, Any],
    int8: bool = False,
    data_dir=None,
) -> int:
    """Write the model to `out` in `fmt` (atomically); returns the file size in bytes.
    `int8` (ONNX only): quantized, calibrated on training images of info's dataset, read
    from `data_dir`."""
    fmt = check_format(fmt)
    out = check_out(out, fmt)
    check_int8(int8, fmt)
    model = model.cpu().eval()
    if int8:
        # The data first: a missing dataset fails before the slower export.
        batches = calibration_batches(info["dataset"], info["mean"], info["std"], data_dir)
        calibration = (
            f"{sum(len(b) for b in batches)} {info['dataset']} training images, seed "
            f"{CALIBRATION_SEED}, MinMax; QDQ int8, per-channel weights"
        )
        info = {**info, "int8": "true", "calibration": calibration}
        data = quantize_int8(export_onnx(model, info), info, batches)
    elif fmt == "onnx":
        data = export_onnx(model, info)
    else:
        data = export_torchscript(model, info)
    try:
        write_files({out: data})
    except WriteError as e:
        raise MnistlabError(
            f"{given('path', out)}: cannot write the {fmt} file ({e.reason}); nothing was written; "
            "choose a writable path with free space"
        ) from None
    return len(data)


def check_int8(int8: Any, fmt: str) -> None:
    if not isinstance(int8, bool):
        raise MnistlabError(f"{given('int8', int8)}: must be True or False")
    if int8 and fmt != "onnx":
        raise MnistlabError(
            f"{arg('int8')} quantizes ONNX files only; drop it or export with format 'onnx'"
        )


def export_info(meta: dict[str, Any]) -> dict[str, Any]:
    """What an exported file carries from a model file's metadata: model, dataset, mean, std
    and what the output is ("log_probs" when a file from before the record does not say)."""
    from mnistlab.data.datasets import normalization, recorded_dataset
    from mnistlab.models import recorded_outputs

    mean, std = normalization(meta)
    outputs = recorded_outputs(meta)  # the ONNX output's name
    spec = recorded_dataset(meta)
    return {
        "model": meta.get("model_name"),
        "dataset": spec.name,
        "classes": json.dumps(list(spec.classes)),  # for a runtime that has no dataset table
        "digits": str(spec.digits).lower(),
        "mean": mean,
        "std": std,
        "outputs": outputs,
    }


def exported_outputs(path: str | Path, fmt: str) -> str:
    """What an exported file's output is ("log_probs" or "logits"), read back from the file."""
    if fmt == "onnx":
        import onnx

        return onnx.load(str(path)).graph.output[0].name
    import torch

    from mnistlab.models import recorded_outputs

    extra = {"mnistlab.json": ""}
    with warnings.catch_warnings():  # deprecated, as export_torchscript says
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(path), _extra_files=extra)
    return recorded_outputs(json.loads(extra["mnistlab.json"]))
