"""The fault-injection harness itself: each check can fail, each fault really happens."""

import errno
import os
from pathlib import Path

import pytest
from faults import (
    CliResult,
    assert_no_new_files,
    assert_one_line_failure,
    assert_unchanged,
    run_cli,
    snapshot,
    unwritable_paths,
)

from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize(
    "result",
    [
        CliResult(0, "", "mnistlab: error: something is wrong with the input\n"),
        CliResult(2, "", "mnistlab: error: something is wrong with the input\n"),
        CliResult(1, "", "mnistlab: error: one thing is wrong\nand another line\n"),
        CliResult(1, "", "Traceback (most recent call last):\n"),
        CliResult(1, "", "error: without the program name prefix\n"),
        CliResult(1, "", ""),
    ],
)
def test_assert_one_line_failure_rejects_other_shapes(result):
    with pytest.raises(AssertionError):
        assert_one_line_failure(result)


def test_assert_one_line_failure_checks_fragments():
    result = CliResult(1, "", "mnistlab: error: x.toml: seed must be >= 0, got -1\n")
    assert assert_one_line_failure(result, "x.toml", "seed").endswith("got -1")
    with pytest.raises(AssertionError):
        assert_one_line_failure(result, "--threads")


def test_snapshot_sees_hidden_temporary_files_and_changes(tmp_path):
    (tmp_path / "kept.txt").write_text("a")
    before = snapshot(tmp_path)
    assert_unchanged(before, tmp_path)
    (tmp_path / ".kept.txt.x1y2.tmp").write_text("half")
    with pytest.raises(AssertionError, match="kept.txt.x1y2.tmp"):
        assert_no_new_files(before, tmp_path)
    (tmp_path / ".kept.txt.x1y2.tmp").unlink()
    (tmp_path / "kept.txt").write_text("b")
    assert_no_new_files(before, tmp_path)
    with pytest.raises(AssertionError, match="changed"):
        assert_unchanged(before, tmp_path)


def test_write_fault_fails_mid_write_and_the_real_writer_cleans_up(tmp_path, write_fault):
    fault = write_fault("ENOSPC", after=1, match="b.txt")
    atomic_write_text(tmp_path / "a.txt", "not matched")
    atomic_write_text(tmp_path / "b.txt", "the one allowed write")
    before = snapshot(tmp_path)
    # OSError, or already the one-line error where the writer turns it into one
    with pytest.raises((OSError, MnistlabError)) as caught:
        atomic_write_bytes(tmp_path / "b.txt", b"x" * 1000)
    assert os.strerror(errno.ENOSPC) in str(caught.value) and fault.failures == 1
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("name", ["under-a-file", "under-proc-file", "in-proc-self"])
def test_unwritable_paths_cannot_be_written(tmp_path, name):
    path = unwritable_paths(tmp_path)[name]
    with pytest.raises((OSError, MnistlabError)):
        atomic_write_bytes(path, b"data")


def test_run_cli_runs_the_command_with_an_injected_write_fault(tmp_path, tiny_mnist):
    # `data fetch --from` writes four files: let two through, then fail with EIO on the third.
    args = ("data", "fetch", "--from", str(tiny_mnist), "--no-verify", "--data-dir", str(tmp_path))
    line = assert_one_line_failure(
        run_cli(*args, write_error="EIO:2", cwd=tmp_path), "cannot write"
    )
    assert "Input/output error" in line and "t10k-images-idx3-ubyte" in line
    assert not (tmp_path / "MNIST").exists()  # a fetch lands all four files or none


def test_full_and_read_only_disks_are_real(tmp_path, real_disk):
    disk = tmp_path / "disk"
    args = ("data", "fetch", "--from", str(tmp_path), "--data-dir", str(disk))
    for kind, message in (("full", "No space left"), ("ro", "Read-only file system")):
        result = real_disk(disk, kind, *args, files={"keep.txt": b"seeded"}, cwd=tmp_path)
        assert result.before["keep.txt"] == result.after["keep.txt"]
        assert message in result.stderr, result.stderr
    assert not any(Path(disk).iterdir())  # the mount never reached the host


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_real_disk_tests_fail_under_ci_and_skip_elsewhere(monkeypatch, ci, outcome):
    import faults

    monkeypatch.setattr(faults, "real_disk_problem", lambda: "unshare is not on PATH")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="unshare is not on PATH"):
        faults.need_real_disk()
