"""Round 2 of the fault sweep: models that build but do not fit the task, resuming a run whose
config.toml was edited, confirm's checks before it trains, mistakes that exited 0, and API
arguments of train, evaluate and export.

Every refusal is one line (one MnistlabError naming the keyword from Python), made before
any data is read or any file is created.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from faults import (
    assert_no_new_files,
    assert_one_line_failure,
    assert_unchanged,
    interrupted_in_epoch,
    snapshot,
)
from torch import nn

import mnistlab as ml
from mnistlab import api
from mnistlab.config import dumps_toml, from_dict
from mnistlab.errors import MnistlabError
from mnistlab.models import check_fits
from mnistlab.runs import confirm as confirm_module
from mnistlab.runs import rundir
from mnistlab.runs.checkpoint import load_torch
from mnistlab.training import trainer

CPU = torch.device("cpu")
QUIET = {"progress": False, "console": False}
TINY = ["--epochs", "1", "--batch-size", "64", "--quiet", "--device", "cpu", "--threads", "1"]

# ----------------------------------------------------------------------------- models

MODELS = """
import sys

import torch
import torch.nn.functional as F
from torch import nn


class Fits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


class FiveOutputs(Fits):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 5)


class NoFlatten(Fits):
    def forward(self, x):
        return self.fc(x)


class Raises(Fits):
    def forward(self, x):
        raise ValueError("forward is not written yet\\nsecond line")


class NaNs(Fits):
    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


class Infinite(Fits):
    def forward(self, x):
        return torch.full((len(x), 10), float("inf"))


class Integers(Fits):
    def forward(self, x):
        return self.fc(x.flatten(1)).argmax(1, keepdim=True).expand(-1, 10)


class ExtraDims(Fits):
    def forward(self, x):
        return super().forward(x)[:, None]


class NoBatch(Fits):
    def forward(self, x):
        return super().forward(x).mean(0)


class Pair(Fits):
    def forward(self, x):
        return super().forward(x), None


class ExitsInForward(Fits):
    def forward(self, x):
        sys.exit(0)


class ExitsInInit(nn.Module):
    def __init__(self):
        sys.exit(0)
"""

# class -> words its refusal holds (besides the spec)
DOES_NOT_FIT = {
    "FiveOutputs": ["[2, 5]", "5 values per image, not 10"],
    "NoFlatten": ["RuntimeError", "flatten before an nn.Linear"],
    "Raises": ["ValueError: forward is not written yet"],
    "NaNs": ["NaN"],
    "Infinite": ["infinite"],
    "Integers": ["int64", "not floating point"],
    "ExtraDims": ["[2, 1, 10]", "extra dimensions"],
    "NoBatch": ["[10]", "batch"],
    "Pair": ["tuple", "not a tensor"],
    "ExitsInForward": ["SystemExit"],
}


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The model file, also importable as the module `round2_models`."""
    folder = tmp_path / "code"
    folder.mkdir()
    path = folder / "round2_models.py"
    path.write_text(MODELS)
    monkeypatch.syspath_prepend(str(folder))
    yield path
    sys.modules.pop("round2_models", None)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's current folder: a train that ignored --out would make runs/ here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading any data fails the test: the refusals come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the refusal")

    monkeypatch.setattr(trainer, "load_split", refuse)


@pytest.mark.parametrize("name", sorted(DOES_NOT_FIT))
@pytest.mark.parametrize("form", ["file", "module"])
def test_a_model_that_does_not_fit_is_one_line_before_any_data(
    tmp_path, cli, models, workdir, no_data, name, form
):
    spec = f"{models}:{name}" if form == "file" else f"round2_models:{name}"
    before = snapshot(tmp_path)
    result = cli("train", "--model", spec, *TINY, "--out", str(tmp_path / "run"))
    line = assert_one_line_failure(result, f"model {spec!r}", *DOES_NOT_FIT[name])
    assert "[2, 1, 28, 28]" in line
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize("name", ["FiveOutputs", "NoFlatten", "NaNs", "ExitsInForward"])
def test_a_model_that_does_not_fit_is_refused_from_python(tmp_path, models, no_data, name):
    import round2_models

    cls = getattr(round2_models, name)
    for target in (cls, cls(), f"{models}:{name}", "round2_models:" + name):
        with pytest.raises(MnistlabError) as raised:
            ml.train(target, out=tmp_path / "run", device="cpu", **QUIET)
        message = str(raised.value)
        assert "\n" not in message and "[2, 1, 28, 28]" in message, message
        assert all(word in message for word in DOES_NOT_FIT[name]), message
    assert not (tmp_path / "run").exists()


def test_the_dry_pass_changes_nothing_of_the_model_or_the_random_state():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(2704, 10)
    ).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    check_fits(model, "mine", CPU)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # BatchNorm's statistics too
    assert torch.equal(rng, torch.get_rng_state())
    model.eval()
    check_fits(model, "mine", CPU)
    assert not model.training


def test_the_dry_pass_leaves_a_runs_numbers_as_they_were(tmp_path, data_dir, monkeypatch):
    """Bit-identical metrics and weights with and without the check: committed runs reproduce."""
    cfg = from_dict({"name": "t", "model": "gap_dropout", "epochs": 1, "batch_size": 64, "seed": 3})
    trainer.train_run(cfg, tmp_path / "checked", CPU, data_dir, console=False)
    monkeypatch.setattr(trainer, "check_model", lambda *args, **kwargs: (None, "log_probs"))
    trainer.train_run(cfg, tmp_path / "unchecked", CPU, data_dir, console=False)
    metrics = [rundir.read_metrics(tmp_path / run) for run in ("checked", "unchecked")]
    for record in metrics[0] + metrics[1]:
        record.pop("seconds"), record.pop("images_per_s")
    assert metrics[0] == metrics[1]
    a, b = (
        load_torch(tmp_path / run / "model.pt")["model_state"] for run in ("checked", "unchecked")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_dry_pass_leaves_a_users_instance_training_as_it_was(tmp_path, data_dir, monkeypatch):
    """A caller's own instance (BatchNorm, dropout) trains to the same numbers either way."""

    def net() -> nn.Module:
        torch.manual_seed(7)
        return nn.Sequential(
            nn.Conv2d(1, 4, 5, stride=4),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(144, 10),
            nn.LogSoftmax(dim=1),
        )

    options = dict(epochs=1, batch_size=64, data_dir=data_dir, device="cpu", **QUIET)
    checked = ml.train(net(), out=tmp_path / "checked", **options)
    monkeypatch.setattr(trainer, "check_model", lambda *args, **kwargs: (None, "log_probs"))
    unchecked = ml.train(net(), out=tmp_path / "unchecked", **options)
    strip = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in checked.metrics
    ]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in unchecked.metrics
    ]
    a, b = checked.model.state_dict(), unchecked.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fitting_user_model_still_trains(tmp_path, data_dir, models, cli):
    result = cli(
        "train",
        "--model",
        f"{models}:Fits",
        *TINY,
        "--out",
        str(tmp_path / "run"),
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    assert rundir.read_run(tmp_path / "run").finished


# ----------------------------------------------------------------------------- mistakes that exit 0


@pytest.mark.parametrize(
    "spec, words",
    [
        ("builtins:exit", ["SystemExit(None)"]),
        ("{code}/exits_at_import.py:Net", ["running", "SystemExit(0)"]),
        ("exits_at_import:Net", ["importing", "SystemExit(0)"]),
        ("{models}:ExitsInInit", ["calling it", "SystemExit(0)"]),
    ],
)
def test_user_code_that_exits_is_one_line_not_exit_0(
    tmp_path, cli, models, workdir, no_data, spec, words
):
    (models.parent / "exits_at_import.py").write_text("import sys\nsys.exit(0)\n")
    spec = spec.format(code=models.parent, models=models)
    before = snapshot(tmp_path)
    assert_one_line_failure(cli("train", "--model", spec, *TINY), repr(spec), *words)
    assert_no_new_files(before, tmp_path)
    with pytest.raises(MnistlabError, match="SystemExit"):
        ml.train(spec, device="cpu", **QUIET)
    sys.modules.pop("exits_at_import", None)


def test_a_class_whose_constructor_exits_is_refused_from_python(models, workdir, no_data):
    import round2_models

    with pytest.raises(MnistlabError, match=r"SystemExit"):
        ml.train(round2_models.ExitsInInit, device="cpu", **QUIET)
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("flag", ["--out", "--tensorboard", "--resume"])
@pytest.mark.parametrize("value", ["", "  "])
def test_blank_paths_are_refused_not_taken_as_the_default(tmp_path, cli, workdir, flag, value):
    before = snapshot(tmp_path)
    args = ["train", "--model", "gap_tiny", *TINY, flag, value]
    assert_one_line_failure(cli(*args), f"{flag} {value!r}", "empty")
    assert_no_new_files(before, tmp_path)
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("key", ["out", "tensorboard", "resume"])
def test_blank_paths_are_refused_from_python(workdir, key):
    with pytest.raises(MnistlabError, match=f"^{key}='': empty"):
        ml.train("gap_tiny", device="cpu", **QUIET, **{key: ""})
    assert not (workdir / "runs").exists()


def test_tensorboard_under_a_file_is_refused_before_any_data(tmp_path, cli, no_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    args = ["train", "--model", "gap_tiny", *TINY, "--out", str(tmp_path / "run")]
    result = cli(*args, "--tensorboard", str(blocker / "tb"))
    assert_one_line_failure(result, "--tensorboard", "is a file, not a folder")
    assert_no_new_files(before, tmp_path)


def test_train_out_under_a_file_is_refused_before_any_data(tmp_path, cli, no_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    result = cli("train", "--model", "gap_tiny", *TINY, "--out", str(blocker / "run"))
    assert_one_line_failure(result, "cannot write", str(blocker), "--out")
    assert_no_new_files(before, tmp_path)


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize(
    "out, words",
    [
        ("newdir/", ["ends in a separator", "newdir/model.pt"]),
        ("", ["empty"]),
        (".", ["is a directory", "model.pt"]),
        ("{tmp}", ["is a directory", "model.pt"]),
        ("{tmp}/a-file/x.pt", ["cannot write there", "a-file is a file"]),
        ("{tmp}/loop", ["cannot be resolved", "symbolic link loop"]),
    ],
)
def test_export_paths_that_cannot_be_a_file_are_refused_before_any_work(
    tmp_path, model_file, cli, workdir, monkeypatch, out, words
):
    (tmp_path / "a-file").write_text("x")
    os.symlink("loop", tmp_path / "loop")
    out = out.format(tmp=tmp_path)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the path was checked")

    before = snapshot(tmp_path)
    argv = ["export", "--checkpoint", str(model_file), "--format", "torchscript", "--out", out]
    monkeypatch.setattr(api, "_resolve", no_load)
    assert_one_line_failure(cli(*argv), "--out", *words)
    with pytest.raises(MnistlabError, match="path=") as raised:
        ml.export(model_file, out, "torchscript")
    assert all(word in str(raised.value) for word in words)
    assert_unchanged(before, tmp_path)  # the loop is still a link to itself
    assert not (workdir / "newdir").exists()


def test_export_through_a_link_writes_the_file_it_names(tmp_path, model_file, cli):
    target = tmp_path / "real.pt"
    os.symlink(target, tmp_path / "link.pt")
    argv = ["export", "--checkpoint", str(model_file), "--format", "torchscript"]
    assert cli(*argv, "--out", str(tmp_path / "link.pt")).returncode == 0
    assert (tmp_path / "link.pt").is_symlink() and target.stat().st_size > 0


@pytest.mark.parametrize("fmt", ["pdf", "ONNX", None, 3])
def test_export_format_outside_the_table_is_refused(tmp_path, model_file, fmt):
    with pytest.raises(MnistlabError, match=r"^format=.*onnx, torchscript"):
        ml.export(model_file, tmp_path / "m.x", fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", [5, None, b"bytes"])
def test_export_path_of_another_type_is_refused(tmp_path, model_file, path):
    with pytest.raises(MnistlabError, match="path="):
        ml.export(model_file, path, "torchscript")


# ----------------------------------------------------------------------------- report, search


def test_report_experiments_that_is_not_a_folder_is_refused(tmp_path, cli):
    runs = Path(__file__).parent / "fixtures" / "runs"
    file = tmp_path / "notes.toml"
    file.write_text("")
    before = snapshot(tmp_path)
    for given, word in ((file, "is not a folder"), (tmp_path / "none", "no such folder")):
        argv = ["report", str(runs / "01-seed"), "--out", str(tmp_path / "r")]
        assert_one_line_failure(cli(*argv, "--experiments", str(given)), "--experiments", word)
    assert_no_new_files(before, tmp_path)


def test_search_report_export_best_with_no_completed_trial(tmp_path, data_dir, cli):
    space = tmp_path / "space.toml"
    space.write_text(
        "[search]\nval_size = 64\nseed = 0\n\n[constraints]\nmax_params = 50\n\n"
        "[experiment]\nepochs = 1\nbatch_size = 32\n\n"
        "[space.net]\nfirst = [4, 8]\nlayers = [[1, 2]]\nwidth = [4, 8]\nsqueeze = [0]\n"
    )
    runs = tmp_path / "runs"
    argv = ["search", "run", str(space), "--runs", str(runs), "--trials", "1"]
    assert cli(*argv, "--threads", "1", "--data-dir", str(data_dir)).returncode == 0
    before = snapshot(tmp_path)
    report = ["search", "report", "--runs", str(runs), "--study", "space"]
    result = cli(*report, "--out", str(tmp_path / "report"), "--export-best", "3")
    assert_one_line_failure(result, "no trial has completed", "1 infeasible", "--export-best")
    assert_no_new_files(before, tmp_path)
    assert cli(*report, "--out", str(tmp_path / "report")).returncode == 0  # the report alone


# ----------------------------------------------------------------------------- resume


def stopped_run(folder: Path, data_dir: Path) -> Path:
    """A 2-epoch run stopped in epoch 2: epoch 1's checkpoint and metrics on disk."""
    cfg = from_dict(
        {
            "name": "tiny",
            "model": "gap_tiny",
            "epochs": 2,
            "batch_size": 32,
            "seed": 5,
            "scheduler": {"name": "onecycle", "max_lr": 0.1},
        }
    )
    with interrupted_in_epoch(2):
        trainer.train_run(cfg, folder, CPU, data_dir, console=False)
    return folder


def edit_config(run: Path, key: str, value) -> None:
    data = tomllib.loads((run / "config.toml").read_text())
    table, _, leaf = key.rpartition(".")
    (data[table] if table else data)[leaf] = value
    (run / "config.toml").write_text(dumps_toml(data))


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("epochs", 3, ["epochs = 3", "started with 2", "run.json and checkpoint.pt"]),
        ("batch_size", 16, ["batch_size = 16", "started with 32", "checkpoint.pt"]),
        ("optimizer.lr", 0.5, ["optimizer.lr = 0.5", "0.01"]),
        ("scheduler.max_lr", 0.2, ["scheduler.max_lr = 0.2", "0.1"]),
        ("augment.rotation", 5.0, ["augment.rotation = 5.0", "0.0"]),
    ],
)
def test_resume_refuses_an_edited_config_before_touching_a_file(
    tmp_path, data_dir, cli, key, value, words
):
    run = stopped_run(tmp_path / "run", data_dir)
    edit_config(run, key, value)
    before, stamps = snapshot(tmp_path), mtimes(run)
    result = cli("train", "--resume", str(run), "--data-dir", str(data_dir), "--quiet")
    assert_one_line_failure(result, str(run / "config.toml"), *words, "put the value back")
    with pytest.raises(MnistlabError, match="put the value back") as raised:
        ml.train(resume=run, data_dir=data_dir, **QUIET)
    assert " --" not in f" {raised.value}"
    assert_unchanged(before, tmp_path)
    assert mtimes(run) == stamps


def test_resume_names_every_edited_key(tmp_path, data_dir, cli):
    run = stopped_run(tmp_path / "run", data_dir)
    edit_config(run, "epochs", 3)
    edit_config(run, "seed", 6)
    result = cli("train", "--resume", str(run), "--quiet")
    assert_one_line_failure(result, "epochs = 3", "seed = 6", "put the values back")


def test_putting_the_value_back_resumes_as_an_uninterrupted_run(tmp_path, data_dir, capsys):
    run = stopped_run(tmp_path / "run", data_dir)
    original = (run / "config.toml").read_text()
    edit_config(run, "epochs", 3)
    with pytest.raises(MnistlabError):
        trainer.resume_run(run, CPU, data_dir)
    (run / "config.toml").write_text(original)
    trainer.resume_run(run, CPU, data_dir)
    assert f"Resuming {run} at epoch 2 of 2" in capsys.readouterr().out
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2]
    assert rundir.read_run(run).finished


def test_a_run_left_by_an_earlier_bad_resume_is_refused(tmp_path, data_dir, cli):
    """A checkpoint written under an edited config (epochs 3) beside config.toml's 2: the
    'epoch 3 of 2' state."""
    run = stopped_run(tmp_path / "run", data_dir)
    state = load_torch(run / "checkpoint.pt")
    state["config"]["epochs"] = 3
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(tmp_path)
    result = cli("train", "--resume", str(run), "--quiet")
    assert_one_line_failure(result, "epochs = 2", "started with 3", "checkpoint.pt")
    assert_unchanged(before, tmp_path)


def test_a_checkpoint_past_the_configured_epochs_is_refused(tmp_path, data_dir, cli):
    run = stopped_run(tmp_path / "run", data_dir)
    state = load_torch(run / "checkpoint.pt")
    state["epoch"] = 3  # "epoch 4 of 2" once resumed
    state["record"] = {**state["record"], "epoch": 3}
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(tmp_path)
    result = cli("train", "--resume", str(run), "--quiet")
    assert_one_line_failure(result, "checkpoint.pt", "epoch 3 of a run of 2", "damaged")
    assert_unchanged(before, tmp_path)


def test_a_run_killed_after_its_last_checkpoint_is_finished_not_resumed_past_its_end(
    tmp_path, data_dir, capsys
):
    cfg = from_dict({"name": "tiny", "model": "gap_tiny", "epochs": 1, "batch_size": 64})
    trainer.train_run(cfg, tmp_path / "run", CPU, data_dir, console=False)
    run = tmp_path / "run"
    (run / "model.pt").unlink()
    rundir.update_info(run, finished=False)
    trainer.resume_run(run, CPU, data_dir)
    out = capsys.readouterr().out
    assert "epoch 1 of 1 was trained" in out and "epoch 2 of 1" not in out
    assert rundir.read_run(run).finished and (run / "model.pt").is_file()


# ----------------------------------------------------------------------------- confirm


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """confirm starts no training process: every refusal comes before the first."""

    def refuse(*args, **kwargs):
        raise AssertionError("confirm started a training")

    monkeypatch.setattr(confirm_module.subprocess, "run", refuse)


def write_experiment(folder: Path, text: str, model: str = "gap_tiny") -> Path:
    path = folder / "exp.toml"
    path.write_text(f'model = "{model}"\nbatch_size = 64\n' + text)
    return path


@pytest.mark.parametrize(
    "text, model, words",
    [
        (
            'epochs = 3\ntest = "never"\nval_size = 64\n',
            "gap_tiny",
            ["test = 'never'", "every-epoch"],
        ),
        ('epochs = 3\ntest = "end"\n', "gap_tiny", ["test = 'end'", "every-epoch"]),
        ("epochs = 2\n", "gap_tiny", ["epochs = 2", "3 or more"]),
        ("epochs = 3\n", "{models}:FiveOutputs", ["FiveOutputs", "[2, 5]"]),
    ],
)
def test_confirm_refuses_an_experiment_it_cannot_tabulate_before_training(
    tmp_path, cli, models, no_training, text, model, words
):
    experiment = write_experiment(tmp_path, text, model.format(models=models))
    results = tmp_path / "results"
    before = snapshot(tmp_path)
    argv = ["confirm", str(experiment), "--seeds", "1", "--threads", "1", "--device", "cpu"]
    assert_one_line_failure(cli(*argv, "--results", str(results)), *words)
    with pytest.raises(MnistlabError) as raised:
        ml.confirm(experiment, seeds=1, threads=1, device="cpu", results=results)
    assert all(word in str(raised.value) for word in words)
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize(
    "flag, where, words",
    [
        ("--out", "{tmp}/a-file/table.md", ["cannot write there", "a-file is a file"]),
        ("--out", "{tmp}/folder", ["names a folder", "confirm.md"]),
        ("--out", "{tmp}/new/", ["names a folder"]),
        ("--out", "", ["empty"]),
        ("--results", "{tmp}/a-file", ["cannot write there", "a-file is a file"]),
        ("--results", "{tmp}/a-file/results", ["a-file is a file"]),
        ("--results", "  ", ["empty"]),
    ],
)
def test_confirm_refuses_where_it_cannot_write_before_training(
    tmp_path, cli, no_training, flag, where, words
):
    experiment = write_experiment(tmp_path, "epochs = 3\n")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder").mkdir()
    where = where.format(tmp=tmp_path)
    argv = ["confirm", str(experiment), "--seeds", "1", "--threads", "1", "--device", "cpu"]
    if flag == "--out":
        argv += ["--results", str(tmp_path / "results")]
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*argv, flag, where), flag, *words)
    key = flag.removeprefix("--")
    options = {"results": tmp_path / "results", key: where}
    with pytest.raises(MnistlabError, match=f"{key}="):
        ml.confirm(experiment, seeds=1, threads=1, device="cpu", **options)
    assert_no_new_files(before, tmp_path)


def test_a_failed_training_process_is_one_line(tmp_path, cli, monkeypatch):
    experiment = write_experiment(tmp_path, "epochs = 3\n")

    def failing(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, None, "mnistlab: error: the disk is full\n")

    monkeypatch.setattr(confirm_module.subprocess, "run", failing)
    argv = ["confirm", str(experiment), "--seeds", "1", "--threads", "1", "--device", "cpu"]
    result = cli(*argv, "--results", str(tmp_path / "results"))
    assert_one_line_failure(result, "training failed (the disk is full)", "run confirm again")


# ----------------------------------------------------------------------------- API arguments


@pytest.mark.parametrize(
    "options, words",
    [
        ({"limit": -5}, ["limit=-5", "whole number >= 1"]),
        ({"limit": 0}, ["limit=0"]),
        ({"limit": True}, ["limit=True", "not a bool"]),
        ({"limit": 2.5}, ["limit=2.5", "not a float"]),
        ({"limit": "100"}, ["limit='100'", "not a str"]),
        ({"limit": 10**12}, ["limit=", "at most"]),
        ({"batch_size": 0}, ["batch_size=0", ">= 1"]),
        ({"batch_size": -1}, ["batch_size=-1"]),
        ({"batch_size": False}, ["batch_size=False"]),
        ({"batch_size": 64.0}, ["batch_size=64.0"]),
        ({"batch_size": 2**40}, ["batch_size=", "at most"]),
        ({"split": "tset"}, ["split='tset'", "'test' or 'train'"]),
        ({"split": "TEST"}, ["split='TEST'"]),
        ({"split": None}, ["split=None"]),
        ({"threads": 0}, ["threads=0"]),
        ({"threads": True}, ["threads=True"]),
        ({"model": "Net"}, ["model=", "nn.Module"]),
    ],
)
def test_evaluate_arguments_are_refused_naming_the_keyword(model_file, no_data, options, words):
    with pytest.raises(MnistlabError) as raised:
        ml.evaluate(model_file, **options)
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.mark.parametrize(
    "options, words",
    [
        ({"threads": 0}, ["threads=0"]),
        ({"threads": True}, ["threads=True"]),
        ({"threads": "2"}, ["threads='2'"]),
        ({"threads": 10**6}, ["threads="]),
        ({"out": 5}, ["out=", "int"]),
        ({"out": " "}, ["out=' '", "empty"]),
        ({"tensorboard": 5}, ["tensorboard=", "int"]),
        ({"compile": 1}, ["compile=1", "True or False"]),
        ({"compile": "yes"}, ["compile='yes'"]),
        ({"progress": "no"}, ["progress='no'"]),
        ({"console": None}, ["console=None"]),
        ({"resume": 3}, ["resume=", "int"]),
    ],
)
def test_train_run_settings_are_refused_naming_the_keyword(workdir, no_data, options, words):
    settings = {**QUIET, **options}
    with pytest.raises(MnistlabError) as raised:
        ml.train("gap_tiny", device="cpu", **settings)
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert " --" not in f" {message}"
    assert not (workdir / "runs").exists()


def test_resume_through_the_api_returns_its_config(tmp_path, data_dir):
    run = stopped_run(tmp_path / "run", data_dir)
    result = ml.train(resume=run, data_dir=data_dir, **QUIET)
    assert result.config.epochs == 2 and "2 epochs" in repr(result)
    again = ml.train(resume=run, data_dir=data_dir, **QUIET)  # finished: read as it is
    assert again.config.model == "gap_tiny" and json.loads((run / "run.json").read_text())
