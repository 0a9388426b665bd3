"""`mnistlab search run`: an architecture search on Optuna under a parameter budget.

Each trial draws a network of the GAP family and a recipe from a search space (space.py),
checks the constraints on the built network (an infeasible trial is pruned with the user
attribute "infeasible" before any data is read), and trains through the trainer into an
ordinary run directory, <runs>/<study>/trial-<N>. The objective is the mean validation
accuracy of the last 3 epochs (all of them, for a trial of fewer) on images held out of the
training set; trials are configured test = "never", so the test set is never read. A second
objective (parameters or MACs) makes the search multi-objective (a Pareto front).

Workers share one study through its storage: a SQLite file beside the runs by default, or any
SQLAlchemy URL (PostgreSQL for several machines). A new SQLite file is made whole or not at
all (built under a temporary name, renamed once the study is recorded), and the space, the
training data and the runs folder are checked before anything is created or a worker starts.

`--trials N` counts the trials that reached an outcome: complete, pruned (infeasible too) or
failed by their own error. A trial lost with its worker (killed, paused past its heartbeat,
Ctrl-C) is failed with the user attribute "lost" and does not count: another takes its place.
A worker starts a trial only while the ended and running trials number fewer than N, and
waits for running trials rather than exit while they could still leave the study short, so
the study ends with N (a few more when workers ask at the same moment). Running trials beat
every `--heartbeat` seconds; a worker fails a trial silent for 3 of its beats (the beat it
recorded, so workers with different heartbeats judge each other right). A worker whose trial
was failed meanwhile (it was paused) says so in one line, drops the trial's run and goes on.

Each trial records its worker ("host:pid", and "host"), heartbeat, pruner and run directory
(relative to the study's folder, <runs>/<study>, on that host); each worker records its
sampler's seed in the study ("worker HOST:PID"), drawn from the space's seed, the host and
the process, so that no two workers, on one machine or several, draw the same trials.
"""

import contextlib
import datetime
import gzip
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from mnistlab.config import (
    LAST_N,  # the objective: mean validation accuracy of the last 3
    NAME_MAX,
    SEED_MAX,
)
from mnistlab.errors import MnistlabError, arg
from mnistlab.fileio import WriteError, make_dirs, remove_dirs
from mnistlab.runs import rundir
from mnistlab.search.space import (
    Space,
    infeasible,
    load_space,
    measure,
    prune_from,
    same_search,
    suggest,
    trial_config,
)

DEFAULT_RUNS = Path("results/search")
STUDY_DB = "study.db"


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise MnistlabError(
            "mnistlab search needs Optuna; pip install 'mnistlab[search]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the worker prints one line a trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Workers ask and tell under a heartbeat of their own (run_one), not Study.optimize's.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


# ----------------------------------------------------------------------------- storage


def study_path(runs: str | Path, study: str) -> Path:
    """The study's SQLite file, beside its trials' run directories: <runs>/<study>/study.db."""
    return Path(runs) / study / STUDY_DB


def default_storage(runs: str | Path, study: str) -> str:
    """The storage URL of a study kept in its default file (see study_path)."""
    return f"sqlite:///{study_path(runs, study).as_posix()}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def missing_module(e: BaseException) -> ImportError | None:
    """The innermost ImportError behind `e`, if any: Optuna wraps a missing database driver
    in its own "Failed to import DB access module", which names no module."""
    found, seen = None, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = e if isinstance(e, ImportError) else found
        e = e.__cause__ or e.__context__
    return found


def storage_error(url: str, e: BaseException) -> MnistlabError:
    missing = missing_module(e)
    if missing is not None:
        name = (missing.name or "").split(".")[0]
        said = str(missing).strip().splitlines()[0] if str(missing).strip() else "not found"
        if name == "psycopg2":  # SQLAlchemy's default for a bare postgresql:// URL
            return MnistlabError(
                f"storage {shown_url(url)}: needs psycopg2, which is not installed; use a "
                "postgresql+psycopg:// URL and pip install 'mnistlab[postgres]'"
            )
        if name == "psycopg" or url.startswith("postgresql"):
            return MnistlabError(
                f"storage {shown_url(url)}: cannot load the PostgreSQL driver psycopg ({said}); "
                "pip install 'mnistlab[postgres]'"
            )
        return MnistlabError(
            f"storage {shown_url(url)}: cannot load its database driver ({said}); install it, "
            "or use a sqlite:/// or postgresql+psycopg:// URL"
        )
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return MnistlabError(
        f"storage {shown_url(url)}: cannot be used ({reason}); check the URL, the server and "
        "the network"
    )


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite storage URL; None for another database or SQLite in memory."""
    if not url.startswith("sqlite"):
        return None
    try:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
    except Exception:  # a malformed URL: open_storage says so
        return None
    return Path(database) if database and database != ":memory:" else None


def _rdb_storage(url: str, heartbeat: int | None = None):
    """optuna's RDBStorage for `url`; its errors are raised as they come."""
    optuna = optuna_module()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Two local workers write the same file: wait for its lock rather than fail.
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    beat = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat} if heartbeat else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beat)


def _storage_errors() -> tuple[type[BaseException], ...]:
    optuna = optuna_module()
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        ImportError,
        ValueError,
        OSError,
    )


def open_storage(url: str, heartbeat: int | None = None):
    """An Optuna RDB storage; with `heartbeat`, running trials record a heartbeat every so
    many seconds and a trial silent for 3 of them is failed by the next worker that asks.

    A SQLite file must exist: only `create_study_file` makes one (whole or not at all), so
    that opening a storage never leaves an empty database behind.
    """
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        what = "is not a file" if os.path.lexists(file) else "does not exist"
        raise MnistlabError(
            f"storage {shown_url(url)}: {file} {what}; check the URL, or run "
            "`mnistlab search run` to start the study"
        )
    try:
        return _rdb_storage(url, heartbeat)
    except _storage_errors() as e:
        raise storage_error(url, e) from None


def close_storage(storage) -> None:
    """Close every connection of an RDB storage (its SQLite file may then be renamed)."""
    storage.remove_session()
    storage.engine.dispose()


def create_study_file(space: Space, study: str, url: str, file: Path) -> None:
    """A new SQLite study, all or nothing: written under a temporary name beside `file` and
    linked to its name once the study and its space are recorded. A failure (a full disk)
    leaves neither a file nor the folders made for it; a study file another worker made
    meanwhile is kept, and joined."""
    from sqlalchemy.engine import make_url

    try:
        created = make_dirs(file.parent)
    except WriteError as e:
        raise storage_error(url, OSError(e.reason)) from None
    tmp = file.parent / f".{file.name}.{secrets.token_hex(4)}.tmp"
    leftovers = [tmp] + [tmp.with_name(tmp.name + end) for end in ("-journal", "-wal", "-shm")]
    try:
        storage = _rdb_storage(make_url(url).set(database=str(tmp)).render_as_string(False))
        try:
            open_study(space, study, storage, create=True)
        finally:
            close_storage(storage)
        try:
            os.link(tmp, file)  # never over a study file made meanwhile (that one is joined)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not file.exists():
                os.rename(tmp, file)
    except _storage_errors() as e:
        raise storage_error(url, e) from None
    finally:
        for path in leftovers:
            path.unlink(missing_ok=True)
        if not file.exists():
            remove_dirs(created)


BEATS = 3  # a running trial silent for this many of its own heartbeats is failed
POLL = 1.0  # seconds between looks at the study while a worker waits for running trials


def worker_id() -> str:
    """This worker process as the study records it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sampler_seed(space: Space, worker: str) -> int:
    """The seed of a worker's sampler: the space's seed (a random one where it sets none)
    mixed with the worker's host and process, so that workers started together on several
    machines, or restarted, never draw the same sequence. The study records it (see work)."""
    base = space.seed if space.seed is not None else secrets.randbits(32)
    digest = hashlib.sha256(f"{base} {worker}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (SEED_MAX + 1)  # numpy takes 32-bit seeds


def make_sampler(space: Space, seed: int | None = None):
    optuna = optuna_module()
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # constant_liar: a running trial counts as a poor one, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def make_pruner(space: Space):
    optuna = optuna_module()
    if space.pruner == "none" or space.objective2 != "none":  # Optuna prunes one objective only
        return optuna.pruners.NopPruner()
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    # No warm-up steps here: each trial's first epoch to judge (space.prune_from) depends on
    # its own schedule, and TrialSink asks the pruner nothing before it.
    return optuna.pruners.MedianPruner(n_startup_trials=5)


def open_study(space: Space, name: str, storage, create: bool = True, sampler=None):
    """The study, created with the space's record on first use; a study made from another
    space is refused."""
    optuna = optuna_module()
    kwargs = dict(
        study_name=name,
        storage=storage,
        sampler=sampler or make_sampler(space),
        pruner=make_pruner(space),
    )
    if create:
        study = optuna.create_study(directions=space.directions, load_if_exists=True, **kwargs)
    else:
        study = optuna.load_study(**kwargs)
    recorded = study.user_attrs.get("space")
    if recorded is None:
        study.set_user_attr("space", space.as_data())
        study.set_user_attr("objectives", ["val_acc_last3", space.objective2])
    elif not same_search(recorded, space):
        raise MnistlabError(
            f"study {name!r} was started from another search space than {space.path}; "
            "use that space or a new --study"
        )
    return study


# ----------------------------------------------------------------------------- a trial


class TrialLost(Exception):
    """Another worker failed this worker's running trial (it was paused or cut off past its
    heartbeat): the trial is over in the study, whatever this worker makes of it."""


def trial_state(storage, trial) -> str:
    return storage.get_trial(trial._trial_id).state.name


class TrialSink:
    """After each epoch: stop if the trial is no longer running in the study (failed by
    another worker meanwhile); with a pruner, report the validation accuracy and, from
    epoch `first` on, let the pruner stop the trial (never after the last epoch: a trained
    trial keeps its result)."""

    def __init__(self, trial, storage, epochs: int, first: int | None) -> None:
        self.trial, self.storage, self.epochs, self.first = trial, storage, epochs, first

    def epoch(self, records: list[dict], parts) -> None:
        if trial_state(self.storage, self.trial) != "RUNNING":
            raise TrialLost
        if self.first is None:
            return
        record = records[-1]
        self.trial.report(record["val_acc"], record["epoch"])
        if self.first <= record["epoch"] < self.epochs and self.trial.should_prune():
            raise optuna_module().TrialPruned(f"pruned after epoch {record['epoch']}")

    def close(self) -> None:
        pass


def last_mean(records: list[dict], key: str = "val_acc") -> float:
    last = [r[key] for r in records[-LAST_N:]]
    return sum(last) / len(last)


def end_trial(out: Path, study: str, number: int) -> None:
    """Name the study in run.json; drop the checkpoint, as no trial is ever run again (a
    pruned trial keeps its metrics, not its weights)."""
    rundir.update_info(out, search={"study": study, "trial": number})
    rundir.drop_checkpoint(out)


def drop_failed_run(out: Path, study: str, number: int, reason: str) -> None:
    """A failed trial's run directory keeps its config, its metrics and run.json, which names
    the study, the trial and why it failed; not its checkpoint (no trial is run again) nor
    its model (a failed trial has no result, even one that trained to its last epoch before
    another worker failed it). run.json changes first, so no reader sees a finished run
    without its model."""
    if not (out / rundir.RUN_INFO).is_file():
        return  # never started, or removed again by the trainer
    search = {"study": study, "trial": number, "failed": reason}
    rundir.update_info(out, finished=False, search=search)
    rundir.drop_checkpoint(out)
    for name in (rundir.MODEL, rundir.PREDICTIONS):
        (out / name).unlink(missing_ok=True)


def run_trial(
    trial, space: Space, folder: Path, device, data_dir, storage
) -> float | tuple[float, float]:
    """The objective: check the network, then train it into folder/trial-<N>."""
    from mnistlab.training.trainer import train_run

    optuna = optuna_module()
    net, recipe = suggest(trial, space)
    pruning = space.objective2 == "none" and space.pruner != "none"
    first = prune_from(space, recipe) if pruning else None
    trial.set_user_attr("pruner", f"{space.pruner} from epoch {first}" if pruning else "none")
    stats = measure(net)
    for key in ("params", "macs", "rf"):
        if key in stats:
            trial.set_user_attr(key, stats[key])
    reason = infeasible(stats, space)
    if reason:
        trial.set_user_attr("infeasible", reason)
        raise optuna.TrialPruned(f"infeasible: {reason}")
    name = f"trial-{trial.number}"
    out = folder / name
    trial.set_user_attr("run", name)  # relative to the study's folder, on the trial's host
    cfg = trial_config(space, name, net, recipe)
    sink = TrialSink(trial, storage, cfg.epochs, first)
    try:
        records = train_run(cfg, out, device, data_dir, console=False, sinks=[sink])
    except optuna.TrialPruned:
        end_trial(out, trial.study.study_name, trial.number)
        raise
    end_trial(out, trial.study.study_name, trial.number)
    value = last_mean(records)
    trial.set_user_attr("epochs", len(records))
    return value if space.objective2 == "none" else (value, float(stats[space.objective2]))


def state_name(trial) -> str:
    """COMPLETE, PRUNED, FAIL, RUNNING, ... with pruned-before-training shown as INFEASIBLE."""
    if trial.state.name == "PRUNED" and "infeasible" in trial.user_attrs:
        return "INFEASIBLE"
    return trial.state.name


def counts(trial) -> bool:
    """Whether a trial counts toward --trials: it reached an outcome (complete, pruned,
    infeasible, or failed by its own error), rather than being lost with its worker."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and not trial.user_attrs.get("lost"))


def trial_line(trial) -> str:
    state = state_name(trial)
    attrs = trial.user_attrs
    size = f"{attrs['params']:,} params" if "params" in attrs else "not built"
    if state == "COMPLETE":
        last = min(LAST_N, attrs.get("epochs", LAST_N))
        return (
            f"trial {trial.number}: {trial.values[0]:.2f}% validation accuracy (mean of the last "
            f"{last} epoch{'s' if last != 1 else ''}), {size}"
        )
    if state == "INFEASIBLE":
        return f"trial {trial.number}: infeasible, not trained ({attrs['infeasible']})"
    reason = attrs.get("error") or ""
    if state == "PRUNED":
        reason = f"after epoch {trial.last_step}"
    return f"trial {trial.number}: {state.lower()}, {size}" + (f" ({reason})" if reason else "")


# ----------------------------------------------------------------------------- workers


class Heartbeat:
    """A running trial's heartbeat: one beat now, then one every `interval` seconds from a
    thread of its own until the block ends."""

    def __init__(self, storage, trial, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial._trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a dropped connection: the next beat retries
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)  # a trial with no beat is never failed
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def fail_stale(study, storage, heartbeat: int, folder: Path, worker: str) -> None:
    """Fail the running trials silent for BEATS of their own heartbeats (a killed, paused or
    cut-off worker's), each with the reason in "error" and "lost" set, so that it does not
    count toward --trials. A failed trial's run directory on this host is tidied as its own
    worker would have, unless a process still holds it (a paused worker tidies it itself).

    Each trial's own heartbeat, not this worker's, sets its grace: a worker beating every
    second must not fail the trial of one that beats every 30."""
    optuna = optuna_module()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return
    beats = {t._trial_id: max(heartbeat, t.user_attrs.get("heartbeat", heartbeat)) for t in running}
    stale: set[int] = set()
    try:
        for beat in sorted(set(beats.values())):
            storage.grace_period = BEATS * beat
            stale |= {i for i in storage._get_stale_trial_ids(study._study_id) if beats[i] == beat}
    finally:
        storage.grace_period = BEATS * heartbeat
    for trial in running:
        if trial._trial_id not in stale:
            continue
        silent = BEATS * beats[trial._trial_id]
        owner = trial.user_attrs.get("worker", "unknown")
        reason = f"no heartbeat for {silent} s from worker {owner}; failed by worker {worker}"
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", reason)
            storage.set_trial_user_attr(trial._trial_id, "lost", True)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it ended meanwhile
        print(f"trial {trial.number}: failed, lost with its worker ({reason})", flush=True)
        run = trial.user_attrs.get("run")
        if run and trial.user_attrs.get("host") == socket.gethostname():
            try:
                with rundir.locked(folder / run):
                    drop_failed_run(folder / run, study.study_name, trial.number, reason)
            except (MnistlabError, OSError):
                pass  # held by its paused worker, which tidies it on waking; or not here


def tell(study, storage, trial, state, values) -> bool:
    """Record the trial's end; False if another worker failed it first."""
    optuna = optuna_module()
    try:
        study.tell(trial, values, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        if trial_state(storage, trial) == "RUNNING":
            raise
        return False
    return True


def give_up(study, storage, trial, out: Path, reason: str) -> None:
    """Fail a trial this worker cannot finish (Ctrl-C, an unexpected error) before the
    exception goes on: "lost" when the trial itself is not to blame."""
    optuna = optuna_module()
    try:
        trial.set_user_attr("error", reason)
        if reason.startswith("interrupted"):
            trial.set_user_attr("lost", True)
        tell(study, storage, trial, optuna.trial.TrialState.FAIL, None)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker failed it already
    drop_failed_run(out, study.study_name, trial.number, reason)


def attempt(study, storage, trial, space: Space, folder: Path, device, data_dir) -> tuple[Any, Any]:
    """Run the trial: its end state and values, with a trial's own error ("error") a FAIL.
    Ctrl-C and unexpected errors fail it and go on up; TrialLost and UpdateFinishedTrialError
    (another worker failed it) go on up."""
    optuna = optuna_module()
    states = optuna.trial.TrialState
    out = folder / f"trial-{trial.number}"
    try:
        return states.COMPLETE, run_trial(trial, space, folder, device, data_dir, storage)
    except optuna.TrialPruned:
        return states.PRUNED, None
    except (TrialLost, optuna.exceptions.UpdateFinishedTrialError):
        raise
    except MnistlabError as e:
        trial.set_user_attr("error", str(e))
        return states.FAIL, None
    except KeyboardInterrupt:
        give_up(study, storage, trial, out, "interrupted (Ctrl-C)")
        raise
    except Exception as e:  # a bug: the trial fails, and the traceback says where
        give_up(study, storage, trial, out, f"{type(e).__name__}: {e}".splitlines()[0])
        raise


def run_one(
    study, storage, space: Space, folder: Path, device, data_dir, heartbeat: int, worker: str
) -> None:
    """Ask for a trial, run it under its heartbeat, and tell the study how it ended."""
    optuna = optuna_module()
    trial = study.ask()
    out = folder / f"trial-{trial.number}"
    try:
        with Heartbeat(storage, trial, heartbeat):
            for key, value in (
                ("worker", worker),
                ("host", socket.gethostname()),
                ("heartbeat", heartbeat),  # other workers judge its silence by it
            ):
                trial.set_user_attr(key, value)
            state, values = attempt(study, storage, trial, space, folder, device, data_dir)
        if state == optuna.trial.TrialState.FAIL:
            drop_failed_run(out, study.study_name, trial.number, trial.user_attrs["error"])
        told = tell(study, storage, trial, state, values)
    except (TrialLost, optuna.exceptions.UpdateFinishedTrialError):
        told = False
    if not told:
        reason = storage.get_trial(trial._trial_id).user_attrs.get("error", "no reason given")
        drop_failed_run(out, study.study_name, trial.number, reason)
        print(
            f"trial {trial.number}: failed by another worker while this one ran it ({reason}); "
            "its run here is dropped, going on",
            flush=True,
        )
        return
    print(trial_line(storage.get_trial(trial._trial_id)), flush=True)


def check_training_data(space: Space, data_dir) -> None:
    """The training split's files must be there before a worker asks for trials (else every
    trial would fail), and hold more images than val_size; only the image file's header is
    read."""
    from mnistlab.data.datasets import IMAGES_MAGIC, get_spec, split_paths

    images = split_paths(get_spec(space.experiment.get("dataset", "mnist")), True, data_dir)[0]
    try:
        with (gzip.open if images.suffix == ".gz" else open)(images, "rb") as f:
            header = f.read(8)
    except OSError:
        return  # the trainer says what is wrong with the file
    if len(header) < 8 or int.from_bytes(header[:4], "big") != IMAGES_MAGIC:
        return
    count = int.from_bytes(header[4:], "big")
    if space.val_size >= count:
        raise MnistlabError(
            f"{space.path}: search.val_size {space.val_size} leaves no image to train on: "
            f"{images} holds {count:,}; lower val_size"
        )


def work(
    space: Space,
    study_name: str,
    storage_url: str,
    runs: Path,
    trials: int,
    timeout: float | None,
    device,
    data_dir,
    heartbeat: int,
    worker_index: int = 0,
) -> int:
    """One worker: trials until `trials` of the study count (see counts), then wait for the
    trials still running, at most one grace period, so that none outlives every worker."""
    optuna = optuna_module()
    import sqlalchemy.exc

    storage = open_storage(storage_url, heartbeat)
    folder = runs / study_name
    worker = worker_id()
    seed = sampler_seed(space, worker)
    try:
        study = open_study(space, study_name, storage, sampler=make_sampler(space, seed))
        if not study.get_trials(deepcopy=False) and any(folder.glob("trial-*")):
            raise earlier_trials(folder)
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        record = {"sampler": space.sampler, "seed": seed, "heartbeat": heartbeat}
        study.set_user_attr(f"worker {worker}", {**record, "started": started})
        threads = torch_threads()
        print(
            f"worker {worker_index} ({worker}): study {study_name!r} at {shown_url(storage_url)}, "
            f"{threads} thread{'s' if threads != 1 else ''}, sampler seed {seed}, "
            f"runs in {folder}",
            flush=True,
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting, full_since, first = False, None, True
        while deadline is None or time.monotonic() < deadline:
            fail_stale(study, storage, heartbeat, folder, worker)
            held = study.get_trials(deepcopy=False)
            ended = sum(counts(t) for t in held)
            running = [t for t in held if t.state.name == "RUNNING"]
            if ended >= trials:
                if not running:
                    if first:
                        print(f"study {study_name!r} holds {ended} trials; nothing to do")
                    break
                # Full, with other workers' trials running: wait until they end or go silent,
                # for one grace period at most (a trial still beating by then has a live
                # worker, which ends it).
                grace = BEATS * max(heartbeat, *(t.user_attrs.get("heartbeat", 0) for t in running))
                if full_since is None:
                    full_since = time.monotonic()
                    print(
                        f"study {study_name!r} is full; waiting up to {grace} s for "
                        f"{plural(len(running), 'running trial')} of other workers to end",
                        flush=True,
                    )
                elif time.monotonic() - full_since >= grace:
                    break
            elif ended + len(running) >= trials:
                # Those trials would fill the study: wait rather than start one too many; if
                # one fails with its worker, it is replaced.
                if not waiting:
                    print(
                        f"waiting for {plural(len(running), 'running trial')} of other "
                        f"workers: with them, the study holds {trials}",
                        flush=True,
                    )
                waiting = True
            else:
                waiting, full_since, first = False, None, False
                run_one(study, storage, space, folder, device, data_dir, heartbeat, worker)
                continue
            first = False
            left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            time.sleep(max(0.0, min(left, heartbeat)))
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise storage_error(storage_url, e) from None
    finally:
        storage.remove_session()
    return 0


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def earlier_trials(folder: Path) -> MnistlabError:
    return MnistlabError(
        f"{folder}: holds trials of an earlier study; move them away or choose another "
        f"{arg('study')} or {arg('runs')}"
    )


def check_study_name(study: str) -> None:
    """The study names a folder under the runs folder: one plain folder name."""
    bad = [c for c in study if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not study.strip() or study in (".", "..") or bad or len(study) > NAME_MAX:
        raise MnistlabError(
            f"{arg('study')} {study!r}: must be 1 to {NAME_MAX} characters without slashes or "
            "control characters (it names the folder of the study's runs)"
        )


def check_runs_folder(folder: Path, study: str, storage_url: str) -> None:
    """Before anything is created or a worker starts: <runs>/<study> is a folder or nothing,
    and trial-N folders in it belong to this study (which then holds trials)."""
    try:
        if os.path.lexists(folder) and not folder.is_dir():
            raise MnistlabError(
                f"{folder}: is not a folder; choose another {arg('runs')} or {arg('study')}"
            )
        if not folder.is_dir() or not any(folder.glob("trial-*")):
            return
    except OSError as e:
        raise MnistlabError(
            f"{folder}: cannot be read ({e.strerror or e}); choose another {arg('runs')}"
        ) from None
    file = sqlite_file(storage_url)
    if file is not None and not file.exists():
        raise earlier_trials(folder)
    storage = open_storage(storage_url)
    try:
        try:
            held = storage.get_n_trials(storage.get_study_id_from_name(study))
        except KeyError:  # no such study yet
            held = 0
    except _storage_errors() as e:
        raise storage_error(storage_url, e) from None
    finally:
        close_storage(storage)
    if held == 0:
        raise earlier_trials(folder)


def worker_command(
    space: str | Path,
    trials: int,
    study: str,
    storage: str,
    runs: Path,
    threads: int,
    heartbeat: int,
    index: int,
    timeout: float | None,
    device: str | None,
    data_dir: str | Path | None,
) -> list[str]:
    command = [sys.executable, "-m", "mnistlab", "search", "run", str(space)]
    command += ["--trials", str(trials), "--workers", "1", "--study", study]
    command += ["--storage", storage, "--runs", str(runs), "--threads", str(threads)]
    command += ["--heartbeat", str(heartbeat), "--worker-index", str(index)]
    command += ["--timeout", str(timeout)] if timeout else []
    command += ["--device", str(device)] if device else []
    return command + (["--data-dir", str(data_dir)] if data_dir else [])


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_search(
    space_file: str | Path,
    trials: int,
    *,
    workers: int = 1,
    study: str | None = None,
    storage: str | None = None,
    runs: str | Path = "results/search",
    timeout: float | None = None,
    threads: int | None = None,
    heartbeat: int = 30,
    device: str | None = None,
    data_dir: str | Path | None = None,
    worker_index: int = 0,
) -> None:
    """Run (or continue) a study of `space_file` until `trials` of its trials count (complete,
    pruned, infeasible, or failed by their own error; not those lost with their worker): one
    worker in this process, or `workers` worker processes on this machine."""
    import torch

    from mnistlab.device import pick_device

    for name, value, low in (("trials", trials, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MnistlabError(f"{arg(name)} {value!r}: must be a whole number >= {low}")
    if timeout is not None and not timeout > 0:
        raise MnistlabError(f"{arg('timeout')} {timeout}: must be > 0 seconds")
    if heartbeat < 1:
        raise MnistlabError(f"{arg('heartbeat')} {heartbeat}: must be >= 1 second")
    # A bad space, or one the training data cannot serve, fails here, before any storage is
    # touched: no study and no study.db is left behind.
    space = load_space(space_file)
    check_training_data(space, data_dir)
    study = Path(space_file).stem if study is None else study
    check_study_name(study)
    runs = Path(runs)
    storage = storage or default_storage(runs, study)
    check_runs_folder(runs / study, study, storage)  # before anything is created
    file = sqlite_file(storage)
    if file is not None and not file.exists():
        create_study_file(space, study, storage, file)
    threads = threads or max(1, cpu_count() // workers)
    if workers == 1:
        torch.set_num_threads(threads)
        torch_device = pick_device(device)
        work(
            space,
            study,
            storage,
            runs,
            trials,
            timeout,
            torch_device,
            data_dir,
            heartbeat,
            worker_index,
        )
        return
    # Join (or create) the study once, so that the workers only join it.
    storage_handle = open_storage(storage)
    try:
        open_study(space, study, storage_handle, create=True)
    except _storage_errors() as e:
        raise storage_error(storage, e) from None
    finally:
        close_storage(storage_handle)
    procs = [
        subprocess.Popen(
            worker_command(
                space_file,
                trials,
                study,
                storage,
                runs,
                threads,
                heartbeat,
                i,
                timeout,
                device,
                data_dir,
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    errors: list[list[str]] = [[] for _ in procs]
    relays = [relay_stderr(p, errors[i]) for i, p in enumerate(procs)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: let them record it
        for p in procs:
            p.wait()
        raise
    finally:
        for relay in relays:
            relay.join()
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        i, code = failed[0]
        said = next((errors[j][0] for j, _ in failed if errors[j]), None)
        if said is not None:  # the worker's own one line, as the command's
            raise MnistlabError(said)
        raise MnistlabError(
            f"worker {i} exited with status {code}; run the command again to continue the study"
        )


ERROR_LINE = "mnistlab: error: "


def relay_stderr(proc: subprocess.Popen, errors: list[str]) -> threading.Thread:
    """Pass a worker's stderr on as it comes, except its one-line errors (kept in `errors`,
    so that the command ends with one line) and its own "interrupted" (the command says it)."""

    def pump() -> None:
        for line in proc.stderr:
            if line.startswith(ERROR_LINE):
                errors.append(line[len(ERROR_LINE) :].rstrip("\n"))
            elif line.rstrip("\n") != "mnistlab: interrupted":
                sys.stderr.write(line)
                sys.stderr.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread
