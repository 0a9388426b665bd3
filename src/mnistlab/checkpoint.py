"""Run files on disk: atomic writes, training checkpoints and final model weights.

A run directory holds:
  config.toml       the resolved experiment
  run.json          model facts (params, MACs, RF), device, torch version, finished flag
  metrics.jsonl     one JSON object per epoch
  checkpoint.pt     training state after the last finished epoch (for --resume)
  model.pt          final weights with their config and test accuracy
  predictions.npz   test-set label, predicted label and confidence per image
"""

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError

CHECKPOINT_FORMAT = "mnistlab-checkpoint"
MODEL_FORMAT = "mnistlab-model"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_torch(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: Path, expected_format: str | None = None) -> dict[str, Any]:
    """Load a file this project wrote; a truncated or foreign file is a MnistlabError."""
    path = Path(path)
    if not path.is_file():
        raise MnistlabError(f"{path}: no such checkpoint file")
    try:
        # torch warns on stderr about foreign pickles; the error below says all there is
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for damaged files, with advice that is wrong here
        raise MnistlabError(
            f"{path}: not a readable mnistlab checkpoint or model file (truncated or foreign); "
            "train again or point at another file"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise MnistlabError(f"{path}: not an mnistlab checkpoint or model file")
    if expected_format and obj["format"] != expected_format:
        raise MnistlabError(f"{path}: is a {obj['format']} file, expected {expected_format}")
    return obj


def save_model(
    path: Path,
    model_name: str,
    model_state: dict[str, torch.Tensor],
    *,
    config: dict[str, Any],
    test_acc: float,
    dataset: str = "mnist",
    mean: float = 0.1307,
    std: float = 0.3081,
) -> None:
    """Write final weights (model.pt) with what is needed to use them: model, data, accuracy."""
    save_torch(
        {
            "format": MODEL_FORMAT,
            "version": 1,
            "model_name": model_name,
            "model_state": {k: v.contiguous() for k, v in model_state.items()},
            "config": config,
            "test_acc": test_acc,
            "dataset": dataset,
            "mean": mean,
            "std": std,
        },
        path,
    )


def model_file(target: str | Path) -> Path:
    """The weights behind a run directory (model.pt, else checkpoint.pt) or a file path."""
    target = Path(target)
    if target.is_dir():
        for name in ("model.pt", "checkpoint.pt"):
            if (target / name).is_file():
                return target / name
        raise MnistlabError(f"{target}: run directory has no model.pt or checkpoint.pt")
    return target


def load_model(target: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run directory, model.pt or checkpoint.pt.

    Returns the model in eval mode on the CPU and the file's metadata (config, test_acc, ...).
    """
    from mnistlab.models import create_model

    path = model_file(target)
    obj = load_torch(path)
    name = obj.get("model_name")
    model = create_model(name)
    try:
        model.load_state_dict(obj["model_state"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise MnistlabError(
            f"{path}: weights do not fit model {name!r} ({first}); "
            "the file was written for another architecture"
        ) from None
    model.eval()
    meta = {k: v for k, v in obj.items() if k not in ("model_state", "optimizer_state")}
    return model, meta


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MnistlabError(f"{path}: cannot read JSON ({e})") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run; a damaged last line (killed mid-write) is dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MnistlabError(f"{run_dir}: no metrics.jsonl; is this a run directory?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise MnistlabError(f"{path}:{number}: not a JSON line; the file is damaged") from None
    return records


SHIPPED_DIR = Path(__file__).parent / "weights"


def ship_model(run_dir: str | Path, package: Path = SHIPPED_DIR) -> Path:
    """Copy a finished run's model.pt into the package (weights/final.pt) with a description."""
    from mnistlab.compare import load_run, summarize_run

    run_dir = Path(run_dir)
    _, meta = load_model(run_dir / "model.pt")  # refuses a damaged or foreign file
    row = summarize_run(load_run(run_dir))
    atomic_write_bytes(package / "final.pt", (run_dir / "model.pt").read_bytes())
    keys = ("model", "params", "macs", "rf", "epochs", "last_test_acc", "last3_test_acc")
    description = {
        **{key: row[key] for key in keys},
        "dataset": meta["dataset"],
        "experiment": meta["config"]["name"],
        "seed": meta["config"]["seed"],
        "run": run_dir.as_posix(),
    }
    atomic_write_text(package / "final.json", json.dumps(description, indent=2) + "\n")
    print(f"shipped {run_dir / 'model.pt'} as {package / 'final.pt'}")
    return package / "final.pt"
