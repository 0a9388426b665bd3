"""The run directory: created whole or not at all, locked while training, checked when read."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import interrupted_in_epoch

from mnistlab.cli import main
from mnistlab.config import from_dict
from mnistlab.errors import MnistlabError
from mnistlab.runs import rundir
from mnistlab.training import trainer as train_module
from mnistlab.training.trainer import resume_run, train_run

RUNS = Path(__file__).parent / "fixtures" / "runs"
RESULTS = Path(__file__).parent.parent / "results"
SRC = Path(__file__).parent.parent / "src" / "mnistlab"
CPU = torch.device("cpu")


def tiny_config(**changes):
    data = {"name": "tiny", "model": "gap_tiny", "epochs": 2, "batch_size": 64, "seed": 5}
    data.update(changes)
    return from_dict(data)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line_failure(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("mnistlab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------------------- creating


def test_out_that_is_a_file_is_refused_untouched(tmp_path, data_dir, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code = main(["train", "--model", "gap_tiny", "--out", str(target), "--data-dir", str(data_dir)])
    one_line_failure(capsys, code, str(target), "is a file")
    assert target.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["data", "notes.txt"]


def test_out_into_a_users_folder_is_refused_and_their_files_kept(tmp_path, data_dir, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.toml").write_text("# my own config\n")
    before = files_under(folder)
    code = main(["train", "--model", "gap_tiny", "--out", str(folder), "--data-dir", str(data_dir)])
    one_line_failure(capsys, code, "not a run directory", "--out")
    assert files_under(folder) == before


def test_out_into_an_existing_run_points_at_resume(tmp_path, data_dir, capsys):
    train_run(tiny_config(epochs=1), tmp_path / "run", CPU, data_dir, console=False)
    before = files_under(tmp_path / "run")
    code = main(["train", "--model", "gap_tiny", "--out", str(tmp_path / "run")])
    one_line_failure(capsys, code, "already holds a run", "--resume")
    assert files_under(tmp_path / "run") == before


@pytest.mark.parametrize("failure", [KeyboardInterrupt, MnistlabError])
def test_a_run_failing_in_its_first_epoch_leaves_no_stub(tmp_path, data_dir, monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure("stop") if failure is MnistlabError else failure

    monkeypatch.setattr(train_module, "train_epoch", fail)
    with pytest.raises(failure):
        train_run(tiny_config(), tmp_path / "a" / "b" / "run", CPU, data_dir, console=False)
    assert os.listdir(tmp_path) == ["data"]  # not even the parent folders it made


def test_a_failed_start_into_an_empty_folder_keeps_the_folder(tmp_path, data_dir, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(train_module, "train_epoch", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train_run(tiny_config(), tmp_path / "empty", CPU, data_dir, console=False)
    assert os.listdir(tmp_path / "empty") == []


def test_a_run_failing_later_keeps_its_finished_epochs(tmp_path, data_dir, monkeypatch):
    with interrupted_in_epoch(2):
        train_run(tiny_config(), tmp_path / "run", CPU, data_dir, console=False)
    assert len(rundir.read_metrics(tmp_path / "run")) == 1
    assert rundir.read_checkpoint(tmp_path / "run")["epoch"] == 1


# ----------------------------------------------------------------------------- locking


def test_a_locked_run_is_refused_naming_the_holder(tmp_path, data_dir, capsys, monkeypatch):
    with interrupted_in_epoch(2):
        train_run(tiny_config(), tmp_path / "run", CPU, data_dir, console=False)
    before = files_under(tmp_path / "run")
    with rundir.locked(tmp_path / "run"):  # as a training in this process would hold it
        code = main(["train", "--resume", str(tmp_path / "run"), "--data-dir", str(data_dir)])
    one_line_failure(capsys, code, "in use by a training in process", str(os.getpid()))
    assert files_under(tmp_path / "run") == before


def test_two_trainings_on_one_out_leave_one_run(tmp_path, data_dir):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mnistlab", "train", "--model", "gap_tiny", "--epochs", "2"]
    command += ["--out", str(out), "--data-dir", str(data_dir), "--quiet", "--threads", "1"]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(err for code, err in results if code == 1)
    assert err.count("\n") == 1 and ("in use by a training" in err or "already holds" in err)
    metrics = rundir.read_metrics(out)
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert rundir.read_info(out)["finished"] is True


# ----------------------------------------------------------------------------- resuming


def finished_run(tmp_path: Path, data_dir: Path) -> Path:
    train_run(tiny_config(epochs=1), tmp_path / "run", CPU, data_dir, console=False)
    return tmp_path / "run"


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, data_dir, capsys):
    run = finished_run(tmp_path, data_dir)
    before = files_under(run)
    assert main(["train", "--resume", str(run)]) == 0  # no data needed to know that
    assert "already finished" in capsys.readouterr().out
    assert files_under(run) == before


def test_a_missing_checkpoint_after_finished_epochs_is_an_error(tmp_path, data_dir, capsys):
    run = finished_run(tmp_path, data_dir)
    rundir.update_info(run, finished=False)
    (run / "checkpoint.pt").unlink()
    before = files_under(run)
    code = main(["train", "--resume", str(run), "--data-dir", str(data_dir)])
    one_line_failure(capsys, code, "checkpoint.pt is missing", "cannot be resumed")
    assert files_under(run) == before


def test_resuming_with_a_bad_config_value_is_an_error(tmp_path, data_dir, capsys):
    run = finished_run(tmp_path, data_dir)
    rundir.update_info(run, finished=False)
    config = run / "config.toml"
    config.write_text(config.read_text().replace("ema = 0.0", "ema = 2.0"))
    before = files_under(run)
    code = main(["train", "--resume", str(run)])
    one_line_failure(capsys, code, "config.toml", "ema must be in [0, 1)")
    assert files_under(run) == before


def test_resuming_a_folder_that_is_no_run_is_an_error(tmp_path, capsys):
    code = main(["train", "--resume", str(tmp_path)])
    one_line_failure(capsys, code, "not a run directory")
    code = main(["train", "--resume", str(tmp_path / "nope")])
    one_line_failure(capsys, code, "no such run directory")


DAMAGE = {
    "config not TOML": ("config.toml", b"epochs = [\n", "not valid TOML"),
    "config binary": ("config.toml", b"\xff\xfe\x00garbage", "not a text file"),
    "metrics binary": ("metrics.jsonl", b"\x89PNG\xff\x00", "not a text file"),
    "metrics without epoch": ("metrics.jsonl", b'{"train_loss": 1}\n', "lacks epoch"),
    "metrics not objects": ("metrics.jsonl", b"[1, 2]\n", "not a JSON object"),
    "metrics out of order": (
        "metrics.jsonl",
        b'{"epoch": 2, "train_loss": 1, "train_acc": 1, "seconds": 1}\n',
        "epoch 2 where 1 was expected",
    ),
    "run.json a list": ("run.json", b"[1, 2, 3]\n", "not a JSON object"),
    "run.json binary": ("run.json", b"\xff\x00\x01", "not a text file"),
    "run.json not JSON": ("run.json", b"{params: 1", "not JSON"),
    "run.json epochs text": (
        "run.json",
        b'{"params": 1, "macs": 1, "rf": 1, "epochs_planned": "15"}',
        "epochs_planned",
    ),
}
COMMANDS = {
    "resume": lambda run, out: ["train", "--resume", str(run)],
    "compare": lambda run, out: ["compare", str(run), "--out", str(out / "table.md")],
    "plot": lambda run, out: ["plot", str(run), "--out", str(out / "curves.png")],
    "report": lambda run, out: ["report", str(run), "--out", str(out / "report")],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_run_files_are_one_line_errors(tmp_path, capsys, damage, command):
    run = Path(shutil.copytree(RUNS / "02-wide-partial", tmp_path / "run"))
    config = run / "config.toml"  # a model this version knows, so resume gets to the damage
    config.write_text(config.read_text().replace('"slim_bn"', '"gap_tiny"'))
    name, content, message = DAMAGE[damage]
    (run / name).write_bytes(content)
    before = files_under(tmp_path)
    code = main(COMMANDS[command](run, tmp_path / "out"))
    one_line_failure(capsys, code, name, message)
    assert files_under(tmp_path) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["compare", "plot", "report"])
def test_a_run_without_metrics_is_one_line_error(tmp_path, capsys, command):
    run = Path(shutil.copytree(RUNS / "02-wide-partial", tmp_path / "run"))
    (run / "metrics.jsonl").unlink()
    code = main(COMMANDS[command](run, tmp_path / "out"))
    one_line_failure(capsys, code, "no metrics.jsonl")
    assert not (tmp_path / "out").exists()


def test_every_committed_run_reads_as_a_run_directory():
    runs = [p.parent for p in RESULTS.rglob("run.json")]
    assert len(runs) >= 45
    for path in runs:
        if not (path / rundir.METRICS).exists():  # a search trial stopped in its first epoch
            assert path.is_relative_to(RESULTS / "search"), path
            assert not rundir.read_info(path).get("finished"), path
            continue
        run = rundir.read_run(path)
        assert run.metrics and run.info["params"] > 0


# ----------------------------------------------------------------------------- what runs record


def test_a_validation_only_run_never_reads_the_test_set(tmp_path, data_dir, monkeypatch):
    from mnistlab.data import datasets as data

    real = data.load_split

    def no_test_split(name, train=True, root=None, limit=0):
        assert train, "the test split was read"
        return real(name, train, root, limit)

    monkeypatch.setattr(train_module, "load_split", no_test_split)
    cfg = tiny_config(val_size=64, test="never")
    records = train_run(cfg, tmp_path / "run", CPU, data_dir, console=False)
    assert all("val_acc" in r and "test_acc" not in r for r in records)
    assert not (tmp_path / "run" / "predictions.npz").exists()
    assert rundir.read_info(tmp_path / "run")["finished"] is True
    _, meta = rundir.load_model(tmp_path / "run")
    assert meta["test_acc"] is None


def test_test_at_end_measures_the_last_epoch_only(tmp_path, data_dir):
    records = train_run(tiny_config(test="end"), tmp_path / "run", CPU, data_dir, console=False)
    assert ["test_acc" in r for r in records] == [False, True]
    assert (tmp_path / "run" / "predictions.npz").exists()


def test_ema_weights_are_what_is_evaluated_saved_and_resumed(tmp_path, data_dir, monkeypatch):
    cfg = tiny_config(epochs=3, ema=0.9)
    full = train_run(cfg, tmp_path / "full", CPU, data_dir, console=False)
    with interrupted_in_epoch(3):
        train_run(cfg, tmp_path / "killed", CPU, data_dir, console=False)
    resumed = resume_run(tmp_path / "killed", CPU, data_dir, console=False)
    timing = ("seconds", "images_per_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in full]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in resumed]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    raw = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model_state"]
    assert not all(torch.equal(a[k], raw[k]) for k in a)  # model.pt holds the average
    assert rundir.read_info(tmp_path / "full")["ema"] == 0.9


def test_run_json_records_cpu_precision_and_compile(tmp_path, data_dir):
    train_run(tiny_config(epochs=1), tmp_path / "run", CPU, data_dir, console=False)
    info = rundir.read_info(tmp_path / "run")
    assert info["precision"] == "fp32" and info["compile"] is False
    assert isinstance(info["cpu"]["model"], str) and isinstance(info["cpu"]["flags"], list)


def test_tensorboard_events_hold_every_epoch(tmp_path, data_dir):
    from tensorboard.backend.event_processing import event_accumulator  # the dev extra

    records = train_run(
        tiny_config(), tmp_path / "run", CPU, data_dir, tensorboard=tmp_path / "tb", console=False
    )
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    test_acc = events.Scalars("test/acc")
    assert [e.step for e in test_acc] == [1, 2]
    assert [e.value for e in test_acc] == pytest.approx([r["test_acc"] for r in records])
    assert {"train/loss", "train/acc", "test/loss", "lr"} <= set(events.Tags()["scalars"])


def test_files_get_the_umask_and_import_changes_no_process_state(tmp_path):
    # Imported afresh in another process: reloading it here would give the modules that
    # imported it before a WriteError class that its functions no longer raise.
    code = "import os; os.umask(0o077); import mnistlab.fileio; print(oct(os.umask(0o077)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o77"  # the import left the umask alone
    from mnistlab.fileio import atomic_write_text

    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600
        os.umask(0o022)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- structure


def imports_of(path: Path) -> set[str]:
    """mnistlab modules a source file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnistlab"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnistlab")}
    return found


def test_no_import_cycles_inside_the_package():
    modules = {
        "mnistlab."
        + ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }
    graph = {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}
    # A package's __init__ importing its own submodules (the model registry) is no cycle.
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError(" -> ".join(stack[stack.index(node) :] + [node]))
        for dep in graph[node]:
            visit(dep, stack + [node])

    for module in graph:
        visit(module, [])


def test_only_rundir_names_the_run_files():
    for path in SRC.rglob("*.py"):
        if path.name in ("rundir.py",):
            continue
        text = path.read_text()
        for name in ('"metrics.jsonl"', '"run.json"', '"config.toml"', '"predictions.npz"'):
            assert name not in text, f"{path.name} names {name}"
    assert json.dumps(rundir.RUN_FILES)


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
    """A real kill: the process dies between two instructions, not at a Python exception."""
    import signal
    import time

    experiment = tmp_path / "e.toml"
    experiment.write_text(
        'model = "gap_dropout"\nepochs = 4\nbatch_size = 8\nseed = 7\n'
        '[augment]\nrotation = 10.0\n[scheduler]\nname = "onecycle"\n'
    )
    common = ["--threads", "1", "--data-dir", str(data_dir), "--quiet", "--device", "cpu"]
    command = [sys.executable, "-m", "mnistlab", "train", str(experiment)]
    full = subprocess.run([*command, "--out", str(tmp_path / "full"), *common], timeout=300)
    assert full.returncode == 0
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "killed"), *common])
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rundir.read_info(tmp_path / "killed")["finished"] is False  # killed mid-run
    resumed = subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "--resume", str(tmp_path / "killed"), *common],
        timeout=300,
    )
    assert resumed.returncode == 0
    timing = ("seconds", "images_per_s")
    a, b = (rundir.read_metrics(tmp_path / name) for name in ("full", "killed"))
    assert [{k: v for k, v in r.items() if k not in timing} for r in a] == [
        {k: v for k, v in r.items() if k not in timing} for r in b
    ]
    wa = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["model_state"]
    wb = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_between_checkpoint_and_metrics_resumes_exactly(tmp_path, data_dir, write_fault):
    cfg = tiny_config(epochs=3)
    full = train_run(cfg, tmp_path / "full", CPU, data_dir, console=False)
    write_fault("EIO", after=1, match="metrics.jsonl")  # epoch 2's checkpoint is written
    with pytest.raises(MnistlabError, match="metrics.jsonl"):
        train_run(cfg, tmp_path / "run", CPU, data_dir, console=False)
    assert rundir.read_checkpoint(tmp_path / "run")["epoch"] == 2
    assert len(rundir.read_metrics(tmp_path / "run")) == 1
    write_fault("EIO", after=10**6)  # writes work again
    resumed = resume_run(tmp_path / "run", CPU, data_dir, console=False)
    timing = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed] == [
        {k: v for k, v in r.items() if k not in timing} for r in full
    ]
