"""The run directory: the one module that creates, locks, reads and writes it.

A run directory holds:
  run.json          what the run is: model facts, device, threads, compile, precision, CPU,
                    finished flag. Its presence is what makes a folder a run directory.
  config.toml       the resolved experiment
  metrics.jsonl     one JSON object per finished epoch
  checkpoint.pt     training state after the last finished epoch (for --resume)
  model.pt          final weights with their config and test accuracy
  predictions.npz   test-set label, predicted label and confidence per image (not written
                    by runs that never read the test set)

Committed runs live in results/<experiment>/<device>-<threads>t[-compiled]/seed<N>; such a
run is named "<experiment>/<setting>/seed<N>" (any other run directory by its folder name),
and its experiment is the folder's, whatever name its config.toml recorded at the time.

Every read checks what it returns and fails as one MnistlabError naming the file; every
write is atomic (fileio). A training holds an exclusive lock on the folder for its life.
"""

import fcntl
import io
import json
import os
import re
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.config import Config, dumps_toml, from_dict, to_dict
from mnistlab.device import cpu_info
from mnistlab.errors import MnistlabError, arg, given
from mnistlab.fileio import atomic_write_bytes, atomic_write_text, make_dirs, remove_dirs
from mnistlab.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    load_torch,
    model_file_state,
    model_from_file,
    save_torch,
)

RUN_INFO = "run.json"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
PREDICTIONS = "predictions.npz"
RUN_FILES = (RUN_INFO, CONFIG, METRICS, CHECKPOINT, MODEL, PREDICTIONS)

# <device>-<threads>t[-compiled]/seed<N>, the last two folders of a committed run's path.
SETTING = re.compile(r"[a-z]+-\d+t(-compiled)?")
SEED_FOLDER = re.compile(r"seed\d+")

INFO_KEYS = ("params", "macs", "rf", "epochs_planned")  # what every reader relies on
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "seconds")


@dataclass
class Run:
    """A run directory as read: its config, run info and per-epoch metrics."""

    name: str
    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        """All planned epochs are in metrics.jsonl and the trainer marked the run finished."""
        return (
            len(self.metrics) >= self.info["epochs_planned"] and self.info.get("finished") is True
        )

    @property
    def progress(self) -> str:
        return f"{len(self.metrics)}/{self.info['epochs_planned']} epochs"

    @property
    def experiment(self) -> str:
        """The experiment's name now: its results folder's, else what config.toml recorded."""
        if "/" in self.name:
            return self.name.split("/")[0]
        return self.config.get("name", self.name)


def run_folder(
    results: Path, experiment: str, device: str, threads: int, compiled: bool, seed: int
) -> Path:
    """results/<experiment>/<device>-<threads>t[-compiled]/seed<N>."""
    setting = f"{device.split(':')[0]}-{threads}t{'-compiled' if compiled else ''}"
    return Path(results) / experiment / setting / f"seed{seed}"


def run_name(path: Path) -> str:
    """'19-thin-stem/cpu-2t-compiled/seed1' for a run in the results scheme, else the folder."""
    path = path.resolve()
    if SEED_FOLDER.fullmatch(path.name) and SETTING.fullmatch(path.parent.name):
        return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    return path.name


# ----------------------------------------------------------------------------- reading


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / RUN_INFO).is_file()


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories named by `paths`: each is a run directory or a folder holding some, at
    any depth (results/<experiment>/<setting>/seed<N>), in path order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(p.parent for p in path.rglob(RUN_INFO) if is_run_dir(p.parent))
            if not candidates:
                raise MnistlabError(
                    f"{path}: not a run directory (no {RUN_INFO}) and holds none; "
                    "pass run directories written by `mnistlab train` or a folder of them"
                )
        elif path.exists():
            raise MnistlabError(f"{path}: is a file; pass a run directory or a folder of them")
        else:
            raise MnistlabError(f"{path}: no such directory")
        # The same run named twice (directly and through its folder) is listed once.
        seen = {f.resolve() for f in found}
        found += [p for p in candidates if p.resolve() not in seen]
    return found


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise MnistlabError(f"{path}: missing; is {path.parent} a run directory?")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MnistlabError(f"{path}: not a text file; the {what} is damaged") from None
    except OSError as e:
        raise MnistlabError(f"{path}: cannot read ({e.strerror})") from None


def read_info(path: str | Path) -> dict[str, Any]:
    """run.json as a dict, with the keys every reader relies on."""
    file = Path(path) / RUN_INFO
    try:
        info = json.loads(_read_text(file, "run info"))
    except json.JSONDecodeError as e:
        raise MnistlabError(f"{file}: not JSON ({e.msg}, line {e.lineno}); it is damaged") from None
    if not isinstance(info, dict):
        raise MnistlabError(f"{file}: not a JSON object; it is damaged")
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise MnistlabError(f"{file}: missing {', '.join(missing)}; the file is damaged")
    if not isinstance(info["epochs_planned"], int) or isinstance(info["epochs_planned"], bool):
        raise MnistlabError(f"{file}: epochs_planned is not a whole number; the file is damaged")
    return info


def read_config_dict(path: str | Path) -> dict[str, Any]:
    file = Path(path) / CONFIG
    try:
        return tomllib.loads(_read_text(file, "config"))
    except tomllib.TOMLDecodeError as e:
        raise MnistlabError(f"{file}: not valid TOML ({e}); the file is damaged") from None


def read_config(path: str | Path) -> Config:
    """config.toml as a checked Config."""
    return from_dict(read_config_dict(path), str(Path(path) / CONFIG))


def read_metrics(path: str | Path, required: bool = True) -> list[dict[str, Any]]:
    """The per-epoch records, epochs 1, 2, ... in order; [] when none and not `required`."""
    file = Path(path) / METRICS
    if not file.is_file():
        if required:
            raise MnistlabError(f"{path}: no {METRICS} yet; wait for the first epoch to finish")
        return []
    records = []
    for number, line in enumerate(_read_text(file, "metrics file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise MnistlabError(f"{file}:{number}: not a JSON line; the file is damaged") from None
        if not isinstance(record, dict):
            raise MnistlabError(f"{file}:{number}: not a JSON object; the file is damaged")
        missing = [k for k in EPOCH_KEYS if k not in record]
        if missing:
            raise MnistlabError(
                f"{file}:{number}: epoch record lacks {', '.join(missing)}; the file is damaged"
            )
        if record["epoch"] != len(records) + 1:
            raise MnistlabError(
                f"{file}:{number}: epoch {record['epoch']!r} where {len(records) + 1} was "
                "expected; the file is damaged"
            )
        records.append(record)
    if required and not records:
        raise MnistlabError(f"{path}: {METRICS} has no epochs yet; wait for the first epoch")
    return records


def existing_run_dir(path: str | Path, hint: str = "") -> Path:
    """`path` if it is a run directory, else the one-line error saying what it is instead."""
    path = Path(path)
    if not path.is_dir():
        raise MnistlabError(f"{path}: no such run directory")
    if not is_run_dir(path):
        raise MnistlabError(f"{path}: not a run directory (no {RUN_INFO}){hint}")
    return path


def read_run(path: str | Path) -> Run:
    """Read and check a run directory's run.json, config.toml and metrics.jsonl."""
    path = existing_run_dir(path)
    info = read_info(path)
    config = read_config_dict(path)
    metrics = read_metrics(path)
    return Run(name=run_name(path), path=path, config=config, info=info, metrics=metrics)


def read_predictions(path: str | Path) -> dict[str, np.ndarray] | None:
    """predictions.npz as {"label", "pred", "confidence"}; None when the run has none."""
    file = Path(path) / PREDICTIONS
    if not file.is_file():
        return None
    try:
        with np.load(file) as npz:
            arrays = {key: npz[key] for key in ("label", "pred", "confidence")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise MnistlabError(
            f"{file}: not a readable predictions file ({e}); it may be truncated"
        ) from None
    if not len(arrays["label"]) == len(arrays["pred"]) == len(arrays["confidence"]):
        raise MnistlabError(f"{file}: label, pred and confidence differ in length; it is damaged")
    return arrays


def weights_file(target: str | Path) -> Path:
    """The weights behind a run directory (model.pt, else checkpoint.pt) or a file path."""
    target = Path(target)
    if target.is_dir():
        for name in (MODEL, CHECKPOINT):
            if (target / name).is_file():
                return target / name
        raise MnistlabError(f"{target}: run directory has no {MODEL} or {CHECKPOINT} yet")
    if not target.exists():
        raise MnistlabError(f"{target}: no such run directory or weights file")
    return target


def load_model(
    target: str | Path, model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model (eval mode, CPU) and its metadata, from a run directory or file.

    `model` is an untrained instance to load the weights into, for a model the file cannot
    rebuild (a class defined in a notebook).
    """
    return model_from_file(weights_file(target), model)


# ----------------------------------------------------------------------------- locking


def _flock_pid(folder: Path) -> str | None:
    """The PID holding a flock on `folder`, from /proc/locks (Linux); None if none is seen.
    Read, not probed: taking the lock to look could make the training that holds it fail."""
    try:
        st = folder.stat()
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and wanted in fields:
                return fields[fields.index(wanted) - 1]
    except (OSError, IndexError):
        pass
    return None


def _lock_holder(folder: Path) -> str:
    """The PID holding a flock on `folder`, from /proc/locks (Linux), else 'another process'."""
    pid = _flock_pid(folder)
    return f"process {pid}" if pid is not None else "another process"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory; the kernel drops it if the process dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MnistlabError(
                f"{folder}: in use by a training in {_lock_holder(folder)}; "
                "wait for it to finish or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- writing


def blocking_file(path: str | Path, itself: bool = False) -> Path | None:
    """The file (anything but a folder) that stops folder `path` (or, `itself` False, a
    file at `path`) from being created: its nearest existing parent, or `path` itself when
    `itself`. None when nothing stands in the way (a write may still fail for rights or
    space; that is one line too, see fileio)."""
    path = Path(path)
    for candidate in [path] * itself + list(path.parents):
        if candidate.is_dir():
            return None
        if os.path.lexists(candidate):  # a file, or a link to nothing or to itself
            return candidate
    return None


def check_new(path: str | Path, starting: bool = False) -> Path:
    """Refuse a path that cannot become a new run directory, before any work is done.

    A folder another training is starting in (locked, its run.json not yet written) is
    named as in use; `starting`: this process holds that lock itself (create)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MnistlabError(f"{path}: is a file, not a folder; choose another {arg('out')}")
    blocker = blocking_file(path, itself=True)
    if blocker is not None:
        what = "is a file" if blocker != path else "is a link to nothing"
        raise MnistlabError(
            f"cannot write {path}: {blocker} {what}, not a folder; choose another {arg('out')}"
        )
    if is_run_dir(path):
        raise MnistlabError(
            f"{path}: already holds a run; use {given('resume', str(path))} or another {arg('out')}"
        )
    if path.is_dir() and any(path.iterdir()):
        pid = None if starting else _flock_pid(path)
        if pid is not None:
            raise MnistlabError(
                f"{path}: in use by a training in process {pid}; "
                f"wait for it to finish or choose another {arg('out')}"
            )
        raise MnistlabError(
            f"{path}: folder holds files but is not a run directory; "
            f"choose a new or empty folder for {arg('out')}"
        )
    return path


@contextmanager
def create(path: str | Path, cfg: Config, info: dict[str, Any]) -> Iterator[Path]:
    """A new run directory with config.toml and run.json, locked for the block.

    If the block fails before its first epoch is recorded, everything created here is
    removed again: a failed start leaves no stub behind.
    """
    path = check_new(path)
    created = make_dirs(path)
    held = False
    try:
        with locked(path):
            held = True
            check_new(path, starting=True)  # another process may have started a run meanwhile
            try:
                atomic_write_text(path / CONFIG, dumps_toml(to_dict(cfg)))
                write_info(path, {**info, "finished": False})
                yield path
            except BaseException:
                if not (path / METRICS).exists():
                    for name in RUN_FILES:
                        (path / name).unlink(missing_ok=True)
                raise
    except BaseException:
        # Only the lock holder may remove what it created: a folder another process holds
        # is that process's.
        if held and not (path / METRICS).exists():
            remove_dirs(created)
        raise


def run_info(
    cfg: Config, model: nn.Module, device: torch.device, compile: bool, precision: str
) -> dict[str, Any]:
    """run.json at the start: what the run is (its untrained `model` measured) and what it
    runs on."""
    from mnistlab.models.summary import model_stats  # not for readers: they need no models

    return {
        "name": cfg.name,
        "model": cfg.model,
        "dataset": cfg.dataset,
        **model_stats(model, (1, 28, 28)),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": compile,
        "precision": precision,
        "ema": cfg.ema,
        "bn_recalibrate": cfg.bn_recalibrate,
        "clean_epochs": cfg.clean_epochs,
        "cpu": cpu_info(),
        "epochs_planned": cfg.epochs,
    }


def data_dir_record(data_dir: str | Path | None) -> str | None:
    """run.json's "data_dir": the data folder a run was given, absolute (None: the default
    folder, looked up again when the run is used), so evaluating or resuming it needs no
    data_dir again."""
    return None if data_dir is None else str(Path(data_dir).resolve())


def write_info(path: Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(path) / RUN_INFO, json.dumps(info, indent=2) + "\n")


def update_info(path: Path, **changes: Any) -> None:
    file = Path(path) / RUN_INFO
    info = json.loads(file.read_text()) if file.is_file() else {}
    write_info(path, {**info, **changes})


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(path) / METRICS, "".join(json.dumps(r) + "\n" for r in records))


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """checkpoint.pt, holding checkpoint.checkpoint_state(...)."""
    save_torch(state, Path(path) / CHECKPOINT)


def drop_checkpoint(path: Path) -> None:
    """Remove the training state of a run that will never be resumed (a search trial)."""
    (Path(path) / CHECKPOINT).unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    file = Path(path) / CHECKPOINT
    state = load_torch(file, CHECKPOINT_FORMAT)
    if not isinstance(state.get("epoch"), int):
        raise MnistlabError(f"{file}: has no epoch number; the file is damaged")
    return state


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """A config as dotted keys -> values, tuples as lists (as TOML and JSON give them)."""
    if isinstance(data, dict):
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(_leaves(value, f"{prefix}{key}."))
        return found
    return {prefix.removesuffix("."): json.loads(json.dumps(data, default=str))}


# run.json's record of the config at the start -> the config key it must still equal.
INFO_CONFIG = {
    "epochs_planned": "epochs",
    "name": "name",
    "model": "model",
    "dataset": "dataset",
    "ema": "ema",
    "bn_recalibrate": "bn_recalibrate",
    "clean_epochs": "clean_epochs",
}


def config_changes(
    cfg: Config, info: dict[str, Any], state: dict[str, Any] | None
) -> list[tuple[str, Any, Any, str]]:
    """Where config.toml (`cfg`) now differs from the run as it started and trained: run.json
    and the checkpoint's own copy of the config. (key, value now, value then, the file saying
    so), one per key; keys an older checkpoint did not have are not compared."""
    now = _leaves(to_dict(cfg))
    sources = [
        (RUN_INFO, {key: info[k] for k, key in INFO_CONFIG.items() if k in info}),
        (CHECKPOINT, state.get("config") if state is not None else None),
    ]
    found: dict[tuple[str, str], tuple[Any, list[str]]] = {}  # (key, value) -> files
    for file, recorded in sources:
        if not isinstance(recorded, dict):
            continue
        for key, value in _leaves(recorded).items():
            if key in now and now[key] != value:
                found.setdefault((key, json.dumps(value)), (value, []))[1].append(file)
    return [
        (key, now[key], value, " and ".join(files)) for (key, _), (value, files) in found.items()
    ]


def check_unchanged(path: Path, cfg: Config, info: dict[str, Any], state: dict | None) -> None:
    """Refuse a config.toml edited after the run started: the schedule, the data order and
    the checkpoint's state were made for the config as it was, so resuming with another
    would mix two runs (and fail part-way, files already rewritten)."""
    changes = config_changes(cfg, info, state)
    if changes:
        said = "; ".join(
            f"{key} = {now!r} but the run was started with {then!r} ({files})"
            for key, now, then, files in changes
        )
        raise MnistlabError(
            f"{Path(path) / CONFIG}: {said}; put the value{'s' if len(changes) > 1 else ''} "
            f"back to resume the run as it was, or train a new run with another {arg('out')}"
        )


def check_checkpoint(path: Path, cfg: Config, state: dict[str, Any]) -> None:
    """The checkpoint belongs to this config and lies within its epochs."""
    if state.get("model_name") != cfg.model:
        raise MnistlabError(
            f"{Path(path) / CHECKPOINT}: holds model {state.get('model_name')!r}, "
            f"{CONFIG} says {cfg.model!r}; the run directory is damaged"
        )
    if state["epoch"] > cfg.epochs:
        raise MnistlabError(
            f"{Path(path) / CHECKPOINT}: is from epoch {state['epoch']} of a run of "
            f"{cfg.epochs} epochs; the run directory is damaged"
        )


def records_at_checkpoint(
    metrics: list[dict[str, Any]], state: dict[str, Any], path: Path
) -> list[dict[str, Any]]:
    """The epoch records up to the checkpoint's epoch.

    Killed between its two writes, a run has a checkpoint one epoch ahead of metrics.jsonl
    (its record is in the checkpoint), or, written by an earlier version of this tool, the
    reverse (that epoch is trained again, exactly). Anything else is damage.
    """
    done = state["epoch"]
    if len(metrics) == done - 1 and isinstance(state.get("record"), dict):
        return [*metrics, state["record"]]
    if len(metrics) in (done, done + 1):
        return metrics[:done]
    raise MnistlabError(
        f"{path}: {CHECKPOINT} is from epoch {done} but {METRICS} records {len(metrics)}; "
        "the run directory is damaged"
    )


def write_final(
    path: Path,
    model_state: dict[str, Any],
    test_labels: torch.Tensor | None = None,
    test_log_probs: torch.Tensor | None = None,
) -> None:
    """model.pt, predictions.npz (if the run read the test set: its labels and the model's
    log-probabilities), then the finished flag."""
    path = Path(path)
    save_torch(model_state, path / MODEL)
    if test_labels is not None and test_log_probs is not None:
        confidence, pred = test_log_probs.exp().max(dim=1)
        predictions = {
            "label": test_labels.cpu().numpy().astype("uint8"),
            "pred": pred.numpy().astype("uint8"),
            "confidence": confidence.numpy().astype("float32"),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **predictions)
        atomic_write_bytes(path / PREDICTIONS, buffer.getvalue())
    update_info(path, finished=True)


def final_model_state(
    cfg: Config,
    model: nn.Module,
    test_acc: float | None,
    mean: float,
    std: float,
    outputs: str,
) -> dict[str, Any]:
    """What model.pt holds for this run."""
    return model_file_state(
        cfg.model,
        model.state_dict(),
        config=to_dict(cfg),
        test_acc=test_acc,
        dataset=cfg.dataset,
        mean=mean,
        std=std,
        outputs=outputs,
    )


@dataclass
class Stopped:
    """A run directory to resume, as resumable() read it."""

    cfg: Config
    metrics: list[dict[str, Any]]
    has_checkpoint: bool
    finished: bool  # every epoch trained and the run marked finished: nothing to resume
    compile: bool  # it trained compiled, and goes on so: the same kernels, the same numbers
    bf16: bool  # ... in the same precision
    outputs: str  # what its model returns (models.LOGITS or LOG_PROBS)
    data_dir: str | None  # the data folder it was given (None: the default one)


def resumable(path: str | Path) -> Stopped:
    """Check a stopped run before any data is loaded or any file touched.

    A checkpoint that is missing while metrics say epochs are done is an error (resuming
    from nothing would quietly retrain from epoch 1); so is a config.toml that differs from
    the run as it started (run.json) and trained (the checkpoint's copy of the config), and a
    checkpoint past the configured epochs.
    """
    from mnistlab.models import recorded_outputs  # not for readers: they need no models

    path = existing_run_dir(path, "; nothing to resume")
    info = read_info(path)
    cfg = read_config(path)
    metrics = read_metrics(path, required=False)
    has_checkpoint = (path / CHECKPOINT).is_file()
    if metrics and not has_checkpoint:
        raise MnistlabError(
            f"{path}: {METRICS} records {len(metrics)} epochs but {CHECKPOINT} is missing; "
            f"it cannot be resumed, start a new run with another {arg('out')}"
        )
    state = read_checkpoint(path) if has_checkpoint else None
    check_unchanged(path, cfg, info, state)
    if len(metrics) > cfg.epochs:
        raise MnistlabError(
            f"{path / METRICS}: {len(metrics)} epochs, more than the {cfg.epochs} configured; "
            "the run directory is damaged"
        )
    if state is not None:
        check_checkpoint(path, cfg, state)
        records_at_checkpoint(metrics, state, path)  # the two files agree
    return Stopped(
        cfg,
        metrics,
        has_checkpoint,
        finished=info.get("finished") is True and len(metrics) >= cfg.epochs,
        compile=bool(info.get("compile", False)),
        bf16=info.get("precision") == "bf16",
        outputs=recorded_outputs(info),
        data_dir=info.get("data_dir"),
    )
