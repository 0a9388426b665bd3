"""`mnistlab confirm`: every seed under every thread setting, one table, resumable."""

import json
import tomllib
from pathlib import Path

import pytest

import mnistlab as ml
from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.runs.confirm import summarize
from mnistlab.runs.rundir import run_folder


def test_confirm_trains_every_seed_and_setting_then_reads_them_again(tmp_path, data_dir, capsys):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('model = "gap_tiny"\nepochs = 3\nbatch_size = 64\n')
    args = ["confirm", str(experiment), "--seeds", "2", "--threads", "1,2", "--device", "cpu"]
    args += ["--results", str(tmp_path / "results"), "--data-dir", str(data_dir)]
    args += ["--out", str(tmp_path / "table.md")]
    assert main(args) == 0
    runs = [
        tmp_path / "results" / "tiny" / f"cpu-{t}t" / f"seed{s}" for t in (1, 2) for s in (1, 2)
    ]
    lasts = []
    for run in runs:
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        lasts.append([m["test_acc"] for m in metrics[-3:]])
        info = json.loads((run / "run.json").read_text())
        assert info["threads"] == int(run.parent.name[4]) and info["finished"] is True
    assert tomllib.loads((runs[1] / "config.toml").read_text())["seed"] == 2
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| ") == 1 + 4  # the rule and four runs
    lowest = min(a for last in lasts for a in last)
    assert f"lowest of the last-3 accuracies {lowest:.2f}%;" in table
    stamps = [(run / "metrics.jsonl").stat().st_mtime_ns for run in runs]
    capsys.readouterr()
    assert main(args) == 0  # everything is there: read, not retrained
    assert capsys.readouterr().out.count("finished, read as it is") == 4
    assert [(run / "metrics.jsonl").stat().st_mtime_ns for run in runs] == stamps


def test_summary_counts_runs_holding_the_line_in_each_of_their_last_3():
    rows = [
        {"last3": [99.41, 99.5, 99.45], "last3_mean": 99.4533, "holds": True},
        {"last3": [99.41, 99.39, 99.5], "last3_mean": 99.4333, "holds": False},
    ]
    assert summarize(rows) == {
        "runs": 2,
        "min": 99.39,
        "mean_of_last3_means": 99.4433,
        "holding": 1,
    }


def test_run_folders_follow_one_scheme():
    assert run_folder(Path("r"), "19", "cuda:0", 16, True, 3) == Path(
        "r/19/cuda-16t-compiled/seed3"
    )
    assert run_folder(Path("r"), "19", "cpu", 1, False, 1) == Path("r/19/cpu-1t/seed1")


@pytest.mark.parametrize("text", ["0", "1,x", "", "-2"])
def test_bad_thread_lists_are_refused(text, capsys, tmp_path):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('model = "gap_tiny"\n')
    assert main(["confirm", str(experiment), "--threads", text]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error:") and "--threads" in err and err.count("\n") == 1


@pytest.mark.parametrize("threads", [0, [1, 0], [], ["2"], [True]])
def test_bad_thread_lists_are_refused_from_python(threads, tmp_path):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('model = "gap_tiny"\n')
    with pytest.raises(MnistlabError, match="threads="):
        ml.confirm(experiment, threads=threads, results=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_no_train_reads_only_and_refuses_a_missing_run(tmp_path, capsys):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('model = "gap_tiny"\nepochs = 3\n')
    args = ["confirm", str(experiment), "--seeds", "1", "--threads", "1", "--no-train"]
    assert main([*args, "--results", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert "not a finished run" in err and "--no-train" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()
