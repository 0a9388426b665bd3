"""`mnistlab search run`: an architecture search on Optuna under a parameter budget.

Each trial draws a network of the GAP family and a recipe from a search space
(searchspace.py), checks the constraints on the built network (an infeasible trial is pruned
with the user attribute "infeasible" before any data is read), and trains through the trainer
into an ordinary run directory, <runs>/<study>/trial-<N>. The objective is the mean
validation accuracy of the last 3 epochs on images held out of the training set; trials are
configured test = "never", so the test set is never read. A second objective (parameters or
MACs) makes the search multi-objective (a Pareto front).

Workers share one study through its storage: a SQLite file beside the runs by default, or any
SQLAlchemy URL (PostgreSQL for several machines). A new SQLite file is made whole or not at
all (built under a temporary name, renamed once the study is recorded), and the runs folder
is checked before anything is created or any worker starts. `--trials N` caps the study's
total across workers: a worker asks for a trial only while fewer than N exist, so W workers
end with N to N+W-1. A worker killed mid-trial stops its heartbeat; the next worker that asks
for a trial marks it failed. Ctrl-C marks the running trial failed before the worker exits.
"""

import os
import secrets
import subprocess
import sys
import threading
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


def storage_error(url: str, e: BaseException) -> MnistlabError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, ModuleNotFoundError) and "psycopg" in str(e):
        reason += "; pip install 'mnistlab[postgres]'"
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


def make_sampler(space: Space, worker: int, done: int = 0):
    """The space's sampler; seeded, each worker (and each restart, by the trials `done`
    before it) draws its own sequence, so no two draw the same trials."""
    optuna = optuna_module()
    # numpy takes 32-bit seeds: a large seed and many trials wrap around
    seed = None if space.seed is None else (space.seed + 1000 * done + worker) % (SEED_MAX + 1)
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
    # Epochs before prune_from are never compared: a one-cycle schedule's warm-up ranks how
    # fast a trial starts, not where it ends (1 stopped most of under-5k's trials there).
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=space.prune_from)


def open_study(space: Space, name: str, storage, worker: int = 0, create: bool = True):
    """The study, created with the space's record on first use; a study made from another
    space is refused."""
    optuna = optuna_module()
    kwargs = dict(
        study_name=name,
        storage=storage,
        sampler=make_sampler(space, worker),
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


class PruneSink:
    """Reports each epoch's validation accuracy to the trial; raises TrialPruned to stop it
    (never after the last epoch: a trained trial keeps its result)."""

    def __init__(self, trial, epochs: int) -> None:
        self.trial, self.epochs = trial, epochs

    def epoch(self, records: list[dict], parts) -> None:
        record = records[-1]
        self.trial.report(record["val_acc"], record["epoch"])
        if record["epoch"] < self.epochs and self.trial.should_prune():
            raise optuna_module().TrialPruned(f"pruned after epoch {record['epoch']}")

    def close(self) -> None:
        pass


def last_mean(records: list[dict], key: str = "val_acc") -> float:
    last = [r[key] for r in records[-LAST_N:]]
    return sum(last) / len(last)


def end_trial(out: Path, trial) -> None:
    """Name the study in run.json; drop the checkpoint, as no trial is ever run again (a
    pruned trial keeps its metrics, not its weights)."""
    rundir.update_info(out, search={"study": trial.study.study_name, "trial": trial.number})
    rundir.drop_checkpoint(out)


def run_trial(trial, space: Space, runs: Path, device, data_dir) -> float | tuple[float, float]:
    """The objective: check the network, then train it into runs/trial-<N>."""
    from mnistlab.training.trainer import train_run

    optuna = optuna_module()
    net, recipe = suggest(trial, space)
    stats = measure(net)
    for key in ("params", "macs", "rf"):
        if key in stats:
            trial.set_user_attr(key, stats[key])
    reason = infeasible(stats, space)
    if reason:
        trial.set_user_attr("infeasible", reason)
        raise optuna.TrialPruned(f"infeasible: {reason}")
    name = f"trial-{trial.number}"
    out = Path(runs) / name
    trial.set_user_attr("run", out.as_posix())
    cfg = trial_config(space, name, net, recipe)
    sinks = (PruneSink(trial, cfg.epochs),) if space.objective2 == "none" else ()
    pruner = space.pruner if sinks else "none"
    if pruner == "median":
        pruner += f" from epoch {space.prune_from}"
    trial.set_user_attr("pruner", pruner)
    try:
        records = train_run(cfg, out, device, data_dir, console=False, sinks=sinks)
    except optuna.TrialPruned:
        end_trial(out, trial)
        raise
    except MnistlabError as e:
        trial.set_user_attr("error", str(e))
        raise
    end_trial(out, trial)
    value = last_mean(records)
    trial.set_user_attr("epochs", len(records))
    return value if space.objective2 == "none" else (value, float(stats[space.objective2]))


def state_name(trial) -> str:
    """COMPLETE, PRUNED, FAIL, RUNNING, ... with pruned-before-training shown as INFEASIBLE."""
    if trial.state.name == "PRUNED" and "infeasible" in trial.user_attrs:
        return "INFEASIBLE"
    return trial.state.name


def trial_line(study, trial) -> str:
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


def count_trials(study) -> int:
    return len(study.get_trials(deepcopy=False))


def check_training_data(space: Space, data_dir) -> None:
    """The training split's files must be there before a worker asks for trials (else every
    trial would fail); only their presence is checked, nothing is read."""
    from mnistlab.data.datasets import get_spec, split_paths

    split_paths(get_spec(space.experiment.get("dataset", "mnist")), True, data_dir)


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
    worker: int = 0,
) -> int:
    """One worker: trials until the study holds `trials` of any state (or the timeout)."""
    optuna = optuna_module()
    import sqlalchemy.exc

    storage = open_storage(storage_url, heartbeat)
    try:
        study = open_study(space, study_name, storage, worker)
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial, if its time is up
        done = count_trials(study)
        if done == 0 and any((runs / study_name).glob("trial-*")):
            raise earlier_trials(runs / study_name)
        if done >= trials:
            print(f"study {study_name!r} holds {done} trials; nothing to do")
            return 0
        study.sampler = make_sampler(space, worker, done)

        def report(study, trial) -> None:
            print(trial_line(study, trial), flush=True)

        # MaxTrialsCallback counts every state after each trial; the check above covers a
        # study that is already full when the worker starts.
        study.optimize(
            lambda trial: run_trial(trial, space, runs / study_name, device, data_dir),
            timeout=timeout,
            catch=(MnistlabError,),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=None), report],
        )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise storage_error(storage_url, e) from None
    return 0


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
    """Run (or continue) a study of `space_file` until it holds `trials` trials, in any state:
    one worker in this process, or `workers` worker processes on this machine."""
    import torch

    from mnistlab.device import pick_device

    for name, value, low in (("trials", trials, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MnistlabError(f"{arg(name)} {value!r}: must be a whole number >= {low}")
    if timeout is not None and not timeout > 0:
        raise MnistlabError(f"{arg('timeout')} {timeout}: must be > 0 seconds")
    if heartbeat < 1:
        raise MnistlabError(f"{arg('heartbeat')} {heartbeat}: must be >= 1 second")
    space = load_space(space_file)  # a bad space fails here, before any storage is touched
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
        print(
            f"worker {worker_index}: study {study!r} at {shown_url(storage)}, "
            f"{threads} thread{'s' if threads != 1 else ''}, runs in {runs / study}",
            flush=True,
        )
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
