"""The architecture search: real tiny networks trained through the trainer by Optuna workers
sharing one study in SQLite and in a real PostgreSQL server; infeasible trials, faults, the
report and the test set that a search never reads."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch

from mnistlab.cli import main
from mnistlab.config import load_config
from mnistlab.runs import rundir
from mnistlab.search.space import load_space
from mnistlab.training import trainer as train

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src"
DEMO = ROOT / "results/search/demo"

SPACE = """
[search]
val_size = 100
seed = 0

[constraints]
max_params = {max_params}

[experiment]
epochs = {epochs}
batch_size = 32
test_batch_size = 100

[experiment.optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9

[space.net]
first = [4, 8]
layers = [[1, 2], [2, 3]]
width = [4, 8]
squeeze = [0, 4]

[space.recipe]
"optimizer.lr" = {{ low = 0.02, high = 0.1, log = true }}
"""


def write_space(folder: Path, epochs: int = 2, max_params: int = 5000) -> Path:
    path = folder / "space.toml"
    path.write_text(SPACE.format(epochs=epochs, max_params=max_params))
    return path


def trials_of(storage: str, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def search_command(space: Path, runs: Path, data_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mnistlab",
        "search",
        "run",
        str(space),
        "--runs",
        str(runs),
        "--data-dir",
        str(data_dir),
        "--threads",
        "1",
        *args,
    ]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }


def check_no_trial_ran_twice(trials: list, runs: Path) -> None:
    """Every trial that trained has its own run directory, trained once, and no other does."""
    trained = {t.number for t in trials if "run" in t.user_attrs}
    assert {int(p.name.removeprefix("trial-")) for p in runs.glob("trial-*")} == trained
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in trials:
        path = runs / f"trial-{t.number}"
        if t.state == optuna.trial.TrialState.COMPLETE:
            metrics = rundir.read_metrics(path)
            assert [r["epoch"] for r in metrics] == list(range(1, t.user_attrs["epochs"] + 1))
            assert (path / rundir.MODEL).is_file()
        if t.state in ended and "run" in t.user_attrs:  # never run again: no training state
            assert not (path / rundir.CHECKPOINT).exists()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- in one process


def test_a_search_never_reads_the_test_set(data_dir, tmp_path, monkeypatch, capsys, one_thread):
    read = []

    def recording_load_split(dataset="mnist", train=True, root=None, limit=0):
        read.append(train)
        return load_split(dataset, train, root, limit)

    load_split = train.load_split
    monkeypatch.setattr(train, "load_split", recording_load_split)
    space, runs = write_space(tmp_path), tmp_path / "runs"
    args = ["search", "run", str(space), "--runs", str(runs), "--data-dir", str(data_dir)]
    assert main([*args, "--trials", "3", "--threads", "1", "--study", "s"]) == 0
    assert read and all(read), "the test split was loaded"
    trials = trials_of(f"sqlite:///{runs}/s/study.db", "s")
    assert [t.number for t in trials] == [0, 1, 2]
    check_no_trial_ran_twice(trials, runs / "s")
    for t in trials:
        if "run" in t.user_attrs:
            cfg = rundir.read_config(t.user_attrs["run"])
            assert cfg.test == "never" and cfg.val_size == 100 and cfg.model == "net"
            assert not (Path(t.user_attrs["run"]) / rundir.PREDICTIONS).exists()
            info = json.loads((Path(t.user_attrs["run"]) / rundir.RUN_INFO).read_text())
            assert info["params"] == t.user_attrs["params"] <= 5000
            assert info["search"] == {"study": "s", "trial": t.number}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    for t in done:  # the objective: the last 3 epochs' mean validation accuracy (2 epochs here)
        metrics = rundir.read_metrics(t.user_attrs["run"])
        assert t.values[0] == pytest.approx(sum(r["val_acc"] for r in metrics) / len(metrics))

    # Run again: the study continues to the new total, here under another pruner (it only
    # decides when trials stop; each trial names its own); another space is refused.
    (tmp_path / "unpruned").mkdir()
    unpruned = write_space(tmp_path / "unpruned")
    unpruned.write_text(unpruned.read_text().replace("seed = 0", 'seed = 0\npruner = "none"'))
    args[2] = str(unpruned)
    assert main([*args, "--trials", "4", "--threads", "1", "--study", "s"]) == 0
    trials = trials_of(f"sqlite:///{runs}/s/study.db", "s")
    assert len(trials) == 4
    for t in trials:
        if "run" in t.user_attrs:
            assert t.user_attrs["pruner"] == ("none" if t.number == 3 else "median from epoch 1")
    (tmp_path / "other").mkdir()
    other = write_space(tmp_path / "other")
    other.write_text(other.read_text().replace("width = [4, 8]", "width = [4, 16]"))
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                "run",
                str(other),
                "--runs",
                str(runs),
                "--trials",
                "9",
                "--study",
                "s",
                "--data-dir",
                str(data_dir),
            ]
        )
        == 1
    )
    assert "another search space" in capsys.readouterr().err
    assert all(read)

    # Trials are run directories: compare reads them; the report shows the study.
    assert main(["compare", str(runs / "s"), "--format", "json"]) == 0
    report = tmp_path / "report"
    args = ["search", "report", "--runs", str(runs), "--study", "s", "--out", str(report)]
    assert main([*args, "--export-best", "1"]) == 0
    text = (report / "README.md").read_text()
    for figure in ("pareto", "history"):
        assert f"figures/{figure}.png" in text and (report / f"figures/{figure}.png").is_file()
    best = max(
        (t for t in trials_of(f"sqlite:///{runs}/s/study.db", "s") if t.values),
        key=lambda t: (t.values[0], -t.user_attrs["params"], -t.number),
    )
    (exported,) = (report / "experiments").glob("*.toml")
    assert exported.name == f"s-trial-{best.number}.toml"
    cfg = load_config(exported)
    assert (cfg.val_size, cfg.test, cfg.model) == (0, "every-epoch", "net")
    assert cfg.expect.params == best.user_attrs["params"] and cfg.expect.rf >= 28
    trial_cfg = rundir.read_config(best.user_attrs["run"])
    assert cfg.net == trial_cfg.net and cfg.optimizer == trial_cfg.optimizer


def test_infeasible_trials_cost_no_training(data_dir, tmp_path, monkeypatch, capsys, one_thread):
    def no_data(*args, **kwargs):
        raise AssertionError("an infeasible trial read data")

    monkeypatch.setattr(train, "load_split", no_data)
    space, runs = write_space(tmp_path, max_params=300), tmp_path / "runs"
    started = time.perf_counter()
    assert (
        main(
            [
                "search",
                "run",
                str(space),
                "--runs",
                str(runs),
                "--trials",
                "4",
                "--threads",
                "1",
                "--data-dir",
                str(data_dir),
            ]
        )
        == 0
    )
    assert time.perf_counter() - started < 10
    trials = trials_of(f"sqlite:///{runs}/space/study.db", "space")
    assert len(trials) == 4
    for t in trials:
        assert t.state.name == "PRUNED" and t.user_attrs["params"] > 300
        assert t.user_attrs["infeasible"] == f"{t.user_attrs['params']:,} parameters > 300"
        assert not t.intermediate_values
    assert not list((runs / "space").glob("trial-*"))
    assert capsys.readouterr().out.count(": infeasible, not trained (") == 4
    assert (
        main(
            [
                "search",
                "report",
                "--runs",
                str(runs),
                "--study",
                "space",
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    text = (tmp_path / "report/README.md").read_text()
    assert text.count("| **infeasible** |") == 4 and "4 infeasible" in text


def test_the_median_pruner_compares_no_epoch_before_prune_from(tmp_path):
    from mnistlab.search.run import make_pruner

    space = write_space(tmp_path)
    space.write_text(space.read_text().replace("seed = 0", "seed = 0\nprune_from = 3"))
    study = optuna.create_study(direction="maximize", pruner=make_pruner(load_space(space)))
    for _ in range(5):  # n_startup_trials: completed trials at 99% in every epoch
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(99.0, epoch)
        study.tell(trial, 99.0)
    slow = study.ask()
    stopped = []
    for epoch in (1, 2, 3):
        slow.report(90.0, epoch)  # far under the median from the first epoch on
        stopped.append(slow.should_prune())
    assert stopped == [False, False, True]


def test_bad_spaces_and_storages_are_one_line(data_dir, tmp_path, capsys):
    space = write_space(tmp_path)
    cases = {
        "[space.net]\nlayers = [[1]]\nwidth = []\n": "space.net.width is an empty list",
        "[space.net]\nlayers = [[1]]\ndepth = [2]\n": "space.net.depth is not a knob",
        '[space.net]\nlayers = [[1]]\n[space.recipe]\n"optimizer.lrr" = [0.1]\n': "'optimizer.lrr'",
        "[space.net]\nlayers = [[1]]\n[space.recipe]\nseed = { low = 3, high = 1 }\n": "low must",
        '[space.net]\nlayers = [[1]]\n[space.recipe]\n"optimizer.lr" = [-1.0]\n': "optimizer.lr",
        "[search]\nsampler = 'nsga2'\n[space.net]\nlayers = [[1]]\n": "needs a second objective",
        "[experiment]\ntest = 'end'\n[space.net]\nlayers = [[1]]\n": "experiment.test is set",
        "[search]\nprune_from = 0\n[space.net]\nlayers = [[1]]\n": "prune_from must be >= 1",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        assert main(["search", "run", str(bad), "--trials", "1", "--runs", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("mnistlab: error: ") and err.count("\n") == 1 and message in err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://user:secret@127.0.0.1:{port}/x"
    run = ["search", "run", str(space), "--trials", "1", "--data-dir", str(data_dir)]
    assert main([*run, "--storage", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: storage postgresql+psycopg://user:***@127.0.0.1")
    assert err.count("\n") == 1 and "secret" not in err
    assert main(["search", "report", "--study", "x", "--storage", url, "--out", "r"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    # Missing training images stop the search before a study or a trial exists.
    runs = tmp_path / "runs"
    assert main([*run, "--runs", str(runs), "--data-dir", str(tmp_path / "none")]) == 1
    assert "train-images-idx3-ubyte: missing" in capsys.readouterr().err and not runs.exists()
    assert load_space(ROOT / "searches/under-5k.toml").max_params == 5000


# ----------------------------------------------------------------------------- workers


def two_workers(space: Path, runs: Path, data_dir: Path, storage: str | None) -> None:
    extra = ["--storage", storage] if storage else []
    done = subprocess.run(
        search_command(space, runs, data_dir, "--trials", "3", "--workers", "2", *extra),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("worker ") == 2  # each worker says where it works
    storage = storage or f"sqlite:///{runs}/space/study.db"
    trials = trials_of(storage, "space")
    assert 3 <= len(trials) <= 4  # --trials N with W workers: N to N+W-1
    assert all(t.state.is_finished() for t in trials)
    check_no_trial_ran_twice(trials, runs / "space")


def test_two_workers_share_a_sqlite_study(data_dir, tmp_path):
    two_workers(write_space(tmp_path), tmp_path / "runs", data_dir, None)


def find_server_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of its own on a free loopback port, for the session."""
    initdb, pg_ctl = find_server_program("initdb"), find_server_program("pg_ctl")
    missing = None if initdb and pg_ctl else "PostgreSQL's initdb and pg_ctl"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing = "psycopg (pip install 'mnistlab[postgres]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"needs {missing}")
        pytest.skip(f"needs {missing}")
    folder = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as postgres
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*as_owner, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
    subprocess.run(
        [
            *as_owner,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options + " -c fsync=off",
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgresql_study(data_dir, tmp_path, postgres_url):
    two_workers(write_space(tmp_path), tmp_path / "runs", data_dir, postgres_url)


def wait_for_first_epoch(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ctrl_c_and_a_killed_worker_leave_a_study_that_completes(data_dir, tmp_path):
    space, runs = write_space(tmp_path, epochs=20), tmp_path / "runs"
    storage = f"sqlite:///{runs}/space/study.db"
    command = search_command(space, runs, data_dir, "--trials", "3", "--heartbeat", "1")

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # Ctrl-C mid-trial: the trial is recorded failed before the worker exits.
    worker = start()
    wait_for_first_epoch(runs / "space/trial-0", worker)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and err.strip().endswith("mnistlab: interrupted")
    assert [t.state.name for t in trials_of(storage, "space")] == ["FAIL"]

    # SIGKILL mid-trial: nothing is recorded; the trial's heartbeat stops.
    worker = start()
    wait_for_first_epoch(runs / "space/trial-1", worker)
    worker.kill()
    worker.wait()
    assert [t.state.name for t in trials_of(storage, "space")] == ["FAIL", "RUNNING"]
    time.sleep(3.5)  # 3 missed heartbeats of 1 s

    # A restarted worker fails the stale trial and completes the study.
    worker = start()
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    trials = trials_of(storage, "space")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert rundir.read_metrics(runs / "space/trial-2")[-1]["epoch"] == 20
    assert not rundir.read_run(runs / "space/trial-1").finished


# ----------------------------------------------------------------------------- the dashboard


def test_optuna_dashboard_serves_the_committed_study(tmp_path):
    dashboard = shutil.which("optuna-dashboard") or str(
        Path(sys.executable).parent / "optuna-dashboard"
    )
    if not Path(dashboard).exists():
        if os.environ.get("CI"):
            pytest.fail("needs optuna-dashboard (pip install 'mnistlab[dev]')")
        pytest.skip("needs optuna-dashboard")
    db = tmp_path / "study.db"
    shutil.copy(DEMO / "study.db", db)  # the dashboard may write; the committed file stays
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [dashboard, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [s["study_name"] for s in studies] == ["demo"]
    space = tomllib.loads((ROOT / "searches/demo.toml").read_text())
    assert space["constraints"]["max_params"] == 5000
