"""The tool's torch files: training checkpoints and final model weights.

Two kinds, told apart by their "format" key: a training checkpoint (model, optimizer,
scheduler and RNG state after an epoch; for --resume) and a model file (final weights with
what is needed to use them: model, dataset normalisation, test accuracy). The shipped model
is a model file. This module alone knows their fields; where these files sit in a run
directory is rundir.py's business.
"""

import io
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mnistlab.config import Config, to_dict
from mnistlab.data.datasets import normalization
from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_bytes

CHECKPOINT_FORMAT = "mnistlab-checkpoint"
MODEL_FORMAT = "mnistlab-model"


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


class TrainingState(Protocol):
    """What a training checkpoint saves and restores (the trainer's Parts)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LR scheduler, or None
    ema: Any  # an AveragedModel, or None
    outputs: str  # what the model returns: logits or log_probs


def checkpoint_state(cfg: Config, parts: TrainingState, record: dict[str, Any]) -> dict[str, Any]:
    """The contents of a training checkpoint after the epoch `record` describes: everything
    --resume continues from, and that record (see rundir.records_at_checkpoint)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "epoch": record["epoch"],
        "model_name": cfg.model,
        "config": to_dict(cfg),
        "outputs": parts.outputs,
        "model_state": parts.model.state_dict(),
        "optimizer_state": parts.optimizer.state_dict(),
        "scheduler_state": parts.scheduler.state_dict() if parts.scheduler else None,
        "ema_state": parts.ema.state_dict() if parts.ema is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "record": record,
    }


def restore_checkpoint(
    parts: TrainingState, state: dict[str, Any], cfg: Config, where: Path
) -> int:
    """Load a checkpoint's state into `parts`; returns the epoch it was written after."""
    if state.get("model_name") != cfg.model:
        raise MnistlabError(
            f"{where}: holds model {state.get('model_name')!r}, config says {cfg.model!r}"
        )
    try:
        parts.model.load_state_dict(state["model_state"])
        parts.optimizer.load_state_dict(state["optimizer_state"])
        if parts.scheduler:
            parts.scheduler.load_state_dict(state["scheduler_state"])
        if parts.ema is not None:
            parts.ema.load_state_dict(state["ema_state"])
        torch.set_rng_state(state["rng_cpu"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise MnistlabError(
            f"{where}: does not match this run's model or optimizer ({e})"
        ) from None
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return state["epoch"]


def model_file_state(
    model_name: str,
    model_state: dict[str, torch.Tensor],
    *,
    config: dict[str, Any],
    test_acc: float | None,
    dataset: str = "mnist",
    mean: float | None = None,
    std: float | None = None,
    outputs: str = "log_probs",
) -> dict[str, Any]:
    """The contents of a model file: weights and what is needed to use them. `mean`, `std`:
    the normalisation trained with (default: the dataset's); `outputs`: what the network
    returns, "logits" or "log_probs" (see models.OUTPUTS)."""
    if mean is None or std is None:
        mean, std = normalization({"dataset": dataset})
    return {
        "format": MODEL_FORMAT,
        "version": 1,
        "model_name": model_name,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in model_state.items()},
        "config": config,
        "test_acc": test_acc,
        "dataset": dataset,
        "mean": mean,
        "std": std,
        "outputs": outputs,
    }


def model_from_file(path: Path, model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a model file or training checkpoint.

    The file names its model as a registered name or a spec (see models.build); `model`, an
    untrained instance of the same architecture, is used instead of rebuilding it (needed for
    a class defined in a notebook). Returns the model in eval mode on the CPU and the file's
    metadata (config, test_acc, ...).
    """
    from mnistlab.models import build
    from mnistlab.models.spec import MAIN, needs_instance

    path = Path(path)
    obj = load_torch(path)
    name = obj.get("model_name")
    user = isinstance(name, str) and ":" in name
    # A user's model that cannot be rebuilt here is passed in instead; a registered one never is.
    hint = (
        f"; pass the model: ml.load(run, {needs_instance(name)})" if user and model is None else ""
    )
    config = obj.get("config")
    net = config.get("net") if isinstance(config, dict) else None
    if model is None:
        try:
            model = build(name, net)  # a [net] model: from the config it holds
        except MnistlabError as e:
            if not user:
                raise MnistlabError(
                    f"{path}: holds weights for model {name!r}, which this version does not know"
                ) from None
            said = name.startswith(f"{MAIN}:")  # the message already says what to pass
            raise MnistlabError(f"{path}: {e}{'' if said else hint}") from None
    try:
        model.load_state_dict(obj["model_state"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MnistlabError(
            f"{path}: weights do not fit model {name!r} ({first}); "
            f"the file was written for another architecture{hint}"
        ) from None
    model.cpu().eval()
    meta = {k: v for k, v in obj.items() if k not in ("model_state", "optimizer_state")}
    return model, meta


def save_model(path: Path, model_name: str, model_state: dict[str, torch.Tensor], **meta) -> None:
    """Write a model file (see model_file_state for `meta`)."""
    save_torch(model_file_state(model_name, model_state, **meta), path)
