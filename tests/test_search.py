"""The architecture search: real tiny networks trained through the trainer by Optuna workers
sharing one study in SQLite; infeasible trials, bad spaces, faults, the report and the test
set that a search never reads. Workers on a real PostgreSQL server: test_search_workers.py."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
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
from mnistlab.search.report import counts_text, trial_row, trials_table
from mnistlab.search.run import sampler_seed
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


def study_of(storage: str, study: str):
    return optuna.load_study(study_name=study, storage=storage)


def trials_of(storage: str, study: str) -> list:
    return study_of(storage, study).get_trials(deepcopy=False)


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
    """Every trial that trained has its own run directory (named relative to the study's
    folder), trained once, and no other does; an ended trial keeps no training state, and
    a failed one no model either."""
    trained = {t.number for t in trials if "run" in t.user_attrs}
    assert {int(p.name.removeprefix("trial-")) for p in runs.glob("trial-*")} == trained
    for t in trials:
        assert t.state.is_finished(), f"trial {t.number} is still {t.state.name}"
        assert t.user_attrs["host"] == socket.gethostname() and "pruner" in t.user_attrs
        if "run" not in t.user_attrs:
            continue
        path = runs / t.user_attrs["run"]
        assert t.user_attrs["run"] == f"trial-{t.number}"
        assert not (path / rundir.CHECKPOINT).exists()  # no trial is run again
        info = json.loads((path / rundir.RUN_INFO).read_text())
        if t.state.name == "COMPLETE":
            metrics = rundir.read_metrics(path)
            assert [r["epoch"] for r in metrics] == list(range(1, t.user_attrs["epochs"] + 1))
            assert (path / rundir.MODEL).is_file()
        if t.state.name == "FAIL":
            assert not (path / rundir.MODEL).exists() and not info["finished"]
            assert info["search"]["failed"] == t.user_attrs["error"]


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
        # 2 epochs and no schedule: the pruner judges from the epoch after the first third
        assert t.user_attrs["pruner"] == "median from epoch 2"
        if "run" in t.user_attrs:
            run = runs / "s" / t.user_attrs["run"]
            cfg = rundir.read_config(run)
            assert cfg.test == "never" and cfg.val_size == 100 and cfg.model == "net"
            assert not (run / rundir.PREDICTIONS).exists()
            info = json.loads((run / rundir.RUN_INFO).read_text())
            assert info["params"] == t.user_attrs["params"] <= 5000
            assert info["search"] == {"study": "s", "trial": t.number}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    for t in done:  # the objective: the last 3 epochs' mean validation accuracy (2 epochs here)
        metrics = rundir.read_metrics(runs / "s" / t.user_attrs["run"])
        assert t.values[0] == pytest.approx(sum(r["val_acc"] for r in metrics) / len(metrics))
    # The study says what drew its trials: each worker's sampler seed, from its host and pid.
    (worker,) = {t.user_attrs["worker"] for t in trials}
    recorded = study_of(f"sqlite:///{runs}/s/study.db", "s").user_attrs[f"worker {worker}"]
    assert recorded["seed"] == sampler_seed(load_space(space), worker)

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
        assert t.user_attrs["pruner"] == ("none" if t.number == 3 else "median from epoch 2")
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
    counts = (report / "counts.md").read_text().strip()
    assert counts.startswith("4 trials in all: ") and counts in text
    assert "a trial's last 2 epochs" in text and "| val. last 2 (%) |" in text
    assert "last 3" not in text  # every trial ran 2 epochs
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
    trial_cfg = rundir.read_config(runs / "s" / best.user_attrs["run"])
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
        assert not t.intermediate_values and "pruner" in t.user_attrs  # every trial names one
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


def test_pruning_starts_after_the_schedule_warms_up(tmp_path):
    """prune_from defaults to each trial's schedule: one-cycle, the epoch after its warm-up;
    others, the epoch after the first third. An explicit value wins; the sink asks the
    pruner nothing before it."""
    from mnistlab.search.run import TrialSink, make_pruner
    from mnistlab.search.space import prune_from

    text = write_space(tmp_path).read_text()

    def space_with(search: str = "", experiment: str = ""):
        path = tmp_path / "s.toml"
        path.write_text(
            text.replace("seed = 0", "seed = 0\n" + search).replace(
                "test_batch_size = 100", "test_batch_size = 100\n" + experiment
            )
        )
        return load_space(path)

    onecycle = 'scheduler = { name = "onecycle", pct_start = 0.3 }'
    for epochs, expected in ((15, 6), (10, 4), (12, 5), (2, 2)):
        space = space_with(experiment=onecycle)
        assert prune_from(space, {"epochs": epochs}) == expected, epochs
    for schedule in ("step", "cosine", "none"):
        space = space_with(experiment=f'scheduler = {{ name = "{schedule}" }}')
        assert prune_from(space, {"epochs": 15}) == 6 and prune_from(space, {"epochs": 2}) == 2
    assert prune_from(space_with("prune_from = 1", onecycle), {"epochs": 15}) == 1

    space = space_with("prune_from = 3")
    study = optuna.create_study(direction="maximize", pruner=make_pruner(space))
    for _ in range(5):  # n_startup_trials: completed trials at 99% in every epoch
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(99.0, epoch)
        study.tell(trial, 99.0)
    slow = study.ask()
    sink = TrialSink(slow, study._storage, epochs=4, first=prune_from(space, {}))
    stopped, records = [], []
    for epoch in (1, 2, 3):
        records.append({"epoch": epoch, "val_acc": 90.0})  # far under the median throughout
        try:
            sink.epoch(records, None)
            stopped.append(False)
        except optuna.TrialPruned:
            stopped.append(True)
    assert stopped == [False, False, True]


def test_bad_spaces_and_storages_are_one_line(data_dir, tmp_path, capsys, monkeypatch):
    space = write_space(tmp_path)
    net = "[space.net]\nlayers = [[1], [1]]\n"
    cases = {
        "[space.net]\nlayers = [[1]]\nwidth = []\n": "space.net.width is an empty list",
        "[space.net]\nlayers = [[1]]\ndepth = [2]\n": "space.net.depth is not a knob",
        '[space.net]\nlayers = [[1]]\n[space.recipe]\n"optimizer.lrr" = [0.1]\n': "'optimizer.lrr'",
        "[space.net]\nlayers = [[1]]\n[space.recipe]\nseed = { low = 3, high = 1 }\n": "low must",
        '[space.net]\nlayers = [[1]]\n[space.recipe]\n"optimizer.lr" = [-1.0]\n': "optimizer.lr",
        "[search]\nsampler = 'nsga2'\n[space.net]\nlayers = [[1]]\n": "needs a second objective",
        "[experiment]\ntest = 'end'\n[space.net]\nlayers = [[1]]\n": "experiment.test is set",
        "[search]\nprune_from = 0\n[space.net]\nlayers = [[1]]\n": "prune_from must be >= 1",
        # values no trial could train with: refused before a study exists
        net + 'width = { low = 4, high = 8, step = "x" }\n': "space.net.width step must be",
        net + "width = { low = 4, high = 8, step = 0 }\n": "space.net.width step must be",
        net + "width = 0\n": "space.net.width must be whole numbers in [1,",
        net + 'width = ["six"]\n': "space.net.width must be whole numbers",
        "[space.net]\nlayers = [[0], [0]]\n": "space.net.layers[0] must be whole numbers",
        "[space.net]\nlayers = [[1], [12]]\n": "space.net cannot build its corner",
        net + '[space.recipe]\n"optimizer.lr" = { low = 0.01, high = 0.1, step = "x" }\n': (
            "space.recipe.'optimizer.lr' step must be a number > 0"
        ),
        net + '[space.recipe]\n"optimizer.lr" = { low = 0.01, high = 0.1, log = "yes" }\n': (
            "log must be true or false"
        ),
        "[search]\nval_size = 1000\n[experiment]\nlimit_train = 500\n" + net: (
            "experiment.limit_train 500 leaves no image to train on"
        ),
        "[search]\nval_size = 100\n" + net + "[space.recipe]\nlimit_train = [80, 500]\n": (
            "space.recipe.'limit_train' 80 leaves no image"
        ),
        # against the training data: 320 images here
        "[search]\nval_size = 70000\n" + net: "search.val_size 70000 leaves no image to train on",
        # what any experiment file is checked for
        "[search\n": "not valid TOML",
        b"\xff\xfe[search]\n": "not a text file (byte 0 is not UTF-8)",
        b"\x00\x01\x02binary": "not valid TOML",
        None: "not a regular file",  # a FIFO: read, it would block forever
    }
    runs = tmp_path / "runs"
    run = ["search", "run", "--trials", "1", "--runs", str(runs), "--data-dir", str(data_dir)]
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.unlink(missing_ok=True)
        if text is None:
            os.mkfifo(bad)
        elif isinstance(text, bytes):
            bad.write_bytes(text)
        else:
            bad.write_text(text)
        assert main([*run, str(bad)]) == 1, text
        err = capsys.readouterr().err
        assert err.startswith("mnistlab: error: ") and err.count("\n") == 1, err
        assert message in err and str(bad) in err, err
        assert not runs.exists(), text  # no study.db, no folder
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
    # Without psycopg (or with a bare postgresql:// URL, psycopg2), one line says what to
    # install, rather than Optuna's "Failed to import DB access module".
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "psycopg", None)
        m.setitem(sys.modules, "psycopg2", None)
        for given in (url, url.replace("+psycopg", "")):
            assert main([*run, "--storage", given]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "pip install 'mnistlab[postgres]'" in err, err
            assert "Failed to import" not in err and "secret" not in err
    # Missing training images stop the search before a study or a trial exists.
    assert main([*run, "--runs", str(runs), "--data-dir", str(tmp_path / "none")]) == 1
    assert "train-images-idx3-ubyte: missing" in capsys.readouterr().err and not runs.exists()
    for committed in ("under-5k", "demo"):
        assert load_space(ROOT / f"searches/{committed}.toml").max_params == 5000


# ----------------------------------------------------------------------------- workers


def test_two_workers_share_a_sqlite_study(data_dir, tmp_path):
    space, runs = write_space(tmp_path), tmp_path / "runs"
    done = subprocess.run(
        search_command(space, runs, data_dir, "--trials", "3", "--workers", "2"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    starts = [line for line in done.stdout.splitlines() if line.startswith("worker ")]
    assert len(starts) == 2  # each worker says where it works
    study = study_of(f"sqlite:///{runs}/space/study.db", "space")
    trials = study.get_trials(deepcopy=False)
    assert 3 <= len(trials) <= 4  # --trials N with W workers: N, more if they ask at once
    check_no_trial_ran_twice(trials, runs / "space")
    # Each worker process drew from a sampler seeded by its own host and pid.
    seeds = {k: v["seed"] for k, v in study.user_attrs.items() if k.startswith("worker ")}
    assert len(seeds) == 2 and len(set(seeds.values())) == 2
    assert {f"worker {t.user_attrs['worker']}" for t in trials} <= set(seeds)


def test_sampler_seeds_differ_by_host_and_process(tmp_path):
    space = load_space(write_space(tmp_path))
    seeds = {sampler_seed(space, w) for w in ("a:1", "b:1", "a:2", "b:2")}
    assert len(seeds) == 4 and all(0 <= s < 2**32 for s in seeds)
    assert sampler_seed(space, "a:1") == sampler_seed(space, "a:1")  # the space's seed holds


def wait_for_first_epoch(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ctrl_c_and_a_killed_worker_leave_a_study_that_completes(data_dir, tmp_path):
    space, runs = write_space(tmp_path, epochs=10), tmp_path / "runs"
    storage = f"sqlite:///{runs}/space/study.db"
    command = search_command(space, runs, data_dir, "--trials", "1", "--heartbeat", "1")

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    # Ctrl-C mid-trial: the trial is recorded failed, with why, before the worker exits.
    worker = start()
    wait_for_first_epoch(runs / "space/trial-0", worker)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and err.strip().endswith("mnistlab: interrupted")
    (trial,) = trials_of(storage, "space")
    assert trial.state.name == "FAIL" and trial.user_attrs["error"] == "interrupted (Ctrl-C)"

    # SIGKILL mid-trial: nothing is recorded; the trial's heartbeat stops.
    worker = start()  # the interrupted trial does not count toward --trials: another starts
    wait_for_first_epoch(runs / "space/trial-1", worker)
    worker.kill()
    worker.wait()
    assert [t.state.name for t in trials_of(storage, "space")] == ["FAIL", "RUNNING"]
    assert (runs / "space/trial-1" / rundir.CHECKPOINT).exists()

    # A restarted worker fails the stale trial (it counts for nothing either), tidies its
    # run directory on this host, and completes the study.
    worker = start()
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert "trial 1: failed, lost with its worker (no heartbeat for 3 s" in out
    trials = trials_of(storage, "space")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert [bool(t.user_attrs.get("lost")) for t in trials] == [True, True, False]
    assert rundir.read_metrics(runs / "space/trial-2")[-1]["epoch"] == 10
    assert not rundir.read_run(runs / "space/trial-1").finished
    check_no_trial_ran_twice(trials, runs / "space")
    # The report counts them apart and says why each failed.
    rows = [trial_row(t) for t in trials]
    assert "2 failed (2 lost with their worker)" in counts_text(rows, load_space(space))
    table = trials_table(rows)
    assert "interrupted (Ctrl-C)" in table and "no heartbeat for 3 s from worker " in table


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
