"""Writes that fail, for the commands that write runs and tables: train --out, --resume,
compare --out, report --out, plot --out, bench --out, confirm --out.

Each test asserts all three: one line on stderr, exit status 1, and nothing left behind that
was not there before (a run that fails before its first epoch leaves no folder at all).
"""

import shutil
from pathlib import Path

import pytest
from faults import assert_disk_untouched, assert_no_new_files, assert_one_line_failure, snapshot
from faults import unwritable_paths as unwritable

RUNS = Path(__file__).parent / "fixtures" / "runs"
TINY = ["--model", "gap_tiny", "--epochs", "2", "--batch-size", "64", "--quiet"]


def train_args(out: Path, data_dir: Path) -> list[str]:
    return ["train", *TINY, "--out", str(out), "--data-dir", str(data_dir), "--threads", "1"]


def table_commands(out: Path) -> dict[str, list[str]]:
    """Commands that read the committed fixture runs and write one file or folder at `out`."""
    runs = [str(RUNS / "01-seed"), str(RUNS / "03-final")]
    return {
        "compare": ["compare", *runs, "--out", str(out)],
        "report": ["report", *runs, "--out", str(out)],
        "plot": ["plot", runs[1], "--out", str(out)],
    }


@pytest.mark.parametrize("where", ["under-a-file", "under-proc-file", "in-proc-self"])
def test_train_out_where_nothing_can_be_written(tmp_path, data_dir, cli, where):
    out = unwritable(tmp_path)[where] / "run"
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*train_args(out, data_dir)), "cannot write")
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize("command", ["compare", "report", "plot"])
@pytest.mark.parametrize("where", ["under-a-file", "under-proc-file", "in-proc-self"])
def test_tables_where_nothing_can_be_written(tmp_path, cli, command, where):
    out = unwritable(tmp_path)[where] / "table"
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*table_commands(out)[command]), "cannot write")
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize("after", [0, 1, 2])
def test_train_whose_first_writes_fail_leaves_no_folder(
    tmp_path, data_dir, cli, write_fault, after
):
    # after 0: config.toml; 1: run.json; 2: the first epoch's checkpoint.pt
    write_fault("ENOSPC", after=after)
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*train_args(tmp_path / "a" / "run", data_dir)), "No space")
    assert_no_new_files(before, tmp_path)
    assert not (tmp_path / "a").exists()


def test_train_failing_in_its_second_epoch_keeps_the_first(tmp_path, data_dir, cli, write_fault):
    # config.toml, run.json, then epoch 1's checkpoint.pt and metrics.jsonl; epoch 2 fails
    write_fault("ENOSPC", after=4)
    out = tmp_path / "run"
    assert_one_line_failure(cli(*train_args(out, data_dir)), "No space", "checkpoint.pt")
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.toml",
        "metrics.jsonl",
        "run.json",
    ]
    assert (out / "metrics.jsonl").read_text().count("\n") == 1


def test_resume_whose_writes_fail_changes_nothing(tmp_path, data_dir, cli, write_fault):
    out = tmp_path / "run"
    write_fault("ENOSPC", after=4)
    assert cli(*train_args(out, data_dir)).returncode == 1  # stopped after epoch 1
    before = snapshot(tmp_path)
    write_fault("EIO", after=0)
    result = cli("train", "--resume", str(out), "--data-dir", str(data_dir), "--quiet")
    assert_one_line_failure(result, "checkpoint.pt", "Input/output error")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["compare", "report", "plot"])
@pytest.mark.parametrize("after", [0, 2])
def test_tables_failing_midway_leave_nothing(tmp_path, cli, write_fault, command, after):
    write_fault("ENOSPC", after=after)
    before = snapshot(tmp_path)
    result = cli(*table_commands(tmp_path / "out" / "table")[command])
    if command != "report" and after > 0:  # one file: the first write is the only one
        assert result.returncode == 0
        return
    assert_one_line_failure(result, "No space")
    assert_no_new_files(before, tmp_path)


def test_a_report_over_an_old_one_keeps_it_whole_when_a_write_fails(tmp_path, cli, write_fault):
    out = tmp_path / "report"
    assert cli(*table_commands(out)["report"]).returncode == 0
    before = snapshot(tmp_path)
    write_fault("ENOSPC", after=1)
    assert_one_line_failure(cli(*table_commands(out)["report"]), "No space")
    assert snapshot(tmp_path) == before  # every file whole: the old or the same new bytes


@pytest.mark.parametrize("kind", ["full", "ro"])
def test_train_on_a_full_or_read_only_disk(tmp_path, data_dir, real_disk, kind):
    disk = tmp_path / "disk"
    result = real_disk(disk, kind, *train_args(disk / "run", data_dir), files={"kept": b"x"})
    assert_one_line_failure(result[:3], str(disk))
    assert_disk_untouched(result)


def test_resume_on_a_read_only_disk(tmp_path, data_dir, cli, write_fault, real_disk):
    out = tmp_path / "run"
    write_fault("ENOSPC", after=4)
    assert cli(*train_args(out, data_dir)).returncode == 1  # a stopped run, epoch 1 kept
    files = {f"run/{p.name}": p.read_bytes() for p in out.iterdir()}
    disk = tmp_path / "disk"
    args = ["train", "--resume", str(disk / "run"), "--data-dir", str(data_dir), "--quiet"]
    result = real_disk(disk, "ro", *args, files=files)
    assert_one_line_failure(result[:3], "Read-only file system")
    assert result.after == result.before


@pytest.mark.parametrize("kind", ["full", "ro"])
def test_report_on_a_full_or_read_only_disk(tmp_path, real_disk, kind):
    disk = tmp_path / "disk"
    args = table_commands(disk / "report")["report"]
    result = real_disk(disk, kind, *args, files={"kept": b"x"})
    assert_one_line_failure(result[:3], "cannot write")
    assert_disk_untouched(result)


def test_compare_out_on_a_read_only_disk(tmp_path, real_disk):
    disk = tmp_path / "disk"
    result = real_disk(disk, "ro", *table_commands(disk / "t.md")["compare"])
    assert_one_line_failure(result[:3], "Read-only file system")
    assert_disk_untouched(result)


def test_confirm_out_where_nothing_can_be_written(tmp_path, data_dir, cli):
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('model = "gap_tiny"\nepochs = 3\nbatch_size = 64\n')
    common = ["confirm", str(experiment), "--seeds", "1", "--threads", "1", "--device", "cpu"]
    common += ["--results", str(tmp_path / "results"), "--data-dir", str(data_dir)]
    assert cli(*common).returncode == 0  # the run, trained once
    out = unwritable(tmp_path)["under-a-file"] / "table.md"
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*common, "--out", str(out)), "cannot write")
    assert_no_new_files(before, tmp_path)


def test_a_run_copied_read_only_still_compares(tmp_path, cli):
    run = Path(shutil.copytree(RUNS / "03-final", tmp_path / "run"))
    for path in run.iterdir():
        path.chmod(0o444)
    assert cli("compare", str(run)).returncode == 0
