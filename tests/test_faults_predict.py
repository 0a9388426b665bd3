"""predict and export against files that are not what they seem and disks that refuse writes.

Each failure: one line on stderr for it, exit status 1, and nothing left behind that was not
there before; predictions that could be made are still printed.
"""

import contextlib
import os
import pickle
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import (
    assert_disk_untouched,
    assert_no_new_files,
    assert_one_line_failure,
    snapshot,
    unwritable_paths,
)
from PIL import Image, ImageDraw

from mnistlab.inference import classify as predict
from mnistlab.runs.rundir import load_model


def digit(size: int = 120) -> np.ndarray:
    """A black-on-white 7 as uint8."""
    image = Image.new("L", (size, size), 255)
    ImageDraw.Draw(image).line([(30, 20), (90, 20), (50, 100)], fill=0, width=12)
    return np.asarray(image)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Three good digit images in tmp_path/in."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for name in ("a", "b", "c"):
        Image.fromarray(digit()).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a blocked open() is interrupted by SIGALRM."""

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def predict_args(model_file: Path, *more) -> list[str]:
    return ["predict", "--checkpoint", str(model_file), "--device", "cpu", *map(str, more)]


# ----------------------------------------------------------------------------- input files


def special_file(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
        return path
    if kind == "socket":
        path = tmp_path / "sock.png"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))  # the file stays after close
        server.close()
        return path
    if kind == "directory":
        (tmp_path / "folder.png").mkdir()
        return tmp_path / "folder.png"
    if kind == "char-device":
        return Path("/dev/zero")
    if kind == "tty-like":
        return Path("/dev/stdin")
    if kind == "missing":
        return tmp_path / "nothing.png"
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("fifo", "FIFO"),
        ("socket", "socket"),
        ("directory", "directory"),
        ("char-device", "character device"),
        ("tty-like", "not an image file"),
        ("missing", "no such file"),
    ],
)
def test_non_regular_file_is_an_error_for_that_file_without_blocking(
    tmp_path, model_file, images, cli, kind, fragment
):
    bad = special_file(tmp_path, kind)
    before = snapshot(tmp_path)
    with deadline(60):
        result = cli(*predict_args(model_file, images[0], bad, images[1]))
    assert_one_line_failure(result, str(bad), fragment)
    assert result.stdout.count(": 7") + result.stdout.count("png: ") >= 2  # both predicted
    assert len(result.stdout.splitlines()) == 2
    assert_no_new_files(before, tmp_path)


def test_twelve_bit_data_in_a_sixteen_bit_image_is_not_blank(tmp_path, model_file, cli):
    eight = digit()
    twelve = (eight.astype(np.int64) * 4095 // 255).astype(np.uint16)
    assert twelve.max() == 4095  # 12-bit data: 1/16 of the 16-bit range
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    assert Image.open(tmp_path / "twelve.png").mode.startswith("I")
    a = predict.prepare_file(tmp_path / "eight.png")
    b = predict.prepare_file(tmp_path / "twelve.png")
    np.testing.assert_allclose(a, b, atol=0.02)
    code, out, err = cli(*predict_args(model_file, tmp_path / "twelve.png"))
    assert code == 0 and err == "" and out.startswith(str(tmp_path / "twelve.png"))


@pytest.mark.parametrize("value", [0, 255, 128])
@pytest.mark.parametrize("mode", ["L", "I;16"])
def test_no_preprocess_rejects_a_blank_image(tmp_path, model_file, cli, value, mode):
    pixels = np.full((28, 28), value * (257 if mode == "I;16" else 1))
    path = tmp_path / "blank.png"
    Image.fromarray(pixels.astype(np.uint16 if mode == "I;16" else np.uint8)).save(path)
    before = snapshot(tmp_path)
    result = cli(*predict_args(model_file, "--no-preprocess", path))
    assert_one_line_failure(result, "blank.png", "blank")
    assert_no_new_files(before, tmp_path)


def test_no_preprocess_still_takes_a_real_digit(tmp_path, model_file, cli):
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 13:16] = 255
    Image.fromarray(pixels).save(tmp_path / "one.png")
    code, _, err = cli(*predict_args(model_file, "--no-preprocess", tmp_path / "one.png"))
    assert code == 0 and err == ""


# ----------------------------------------------------------------------------- checkpoints


def garbage_checkpoint(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "text":
        path.write_text("hello\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(os.getcwd, protocol=4))
    elif kind == "module":
        torch.save({"model": torch.nn.Linear(2, 2)}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-zip":
        torch.save({"format": "mnistlab-model"}, path)
        path.write_bytes(path.read_bytes()[:100])
    return path


@pytest.mark.parametrize("kind", ["random", "text", "pickle", "module", "empty", "truncated-zip"])
def test_garbage_checkpoint_is_one_line_without_loading_advice(tmp_path, cli, images, kind):
    path = garbage_checkpoint(tmp_path, kind)
    before = snapshot(tmp_path)
    commands = [
        ["predict", "--checkpoint", str(path), str(images[0])],
        ["evaluate", str(path)],
        ["export", "--checkpoint", str(path), "--format", "torchscript", "--out", "x.pt"],
    ]
    for argv in commands:
        line = assert_one_line_failure(cli(*argv), str(path))
        assert "weights_only" not in line and "trust" not in line
    assert_no_new_files(before, tmp_path)


# ----------------------------------------------------------------------------- previews


@pytest.mark.parametrize(
    "where", ["under-a-file", "under-proc-file", "in-proc-self", "a-file-itself"]
)
def test_previews_that_cannot_be_written_lose_no_prediction(
    tmp_path, model_file, images, cli, where
):
    paths = unwritable_paths(tmp_path)
    folder = paths["under-a-file"].parent if where == "a-file-itself" else paths[where]
    before = snapshot(tmp_path)
    result = cli(*predict_args(model_file, "--show-preprocessed", folder, *images))
    assert_one_line_failure(result, "--show-preprocessed", str(folder))
    assert len(result.stdout.splitlines()) == 3  # every prediction printed
    assert_no_new_files(before, tmp_path)


@pytest.mark.parametrize("after", [0, 1, 2])
def test_a_preview_failing_midway_leaves_no_preview(
    tmp_path, model_file, images, cli, write_fault, after
):
    fault = write_fault("ENOSPC", after=after, match="*.png")
    before = snapshot(tmp_path)
    folder = tmp_path / "new" / "previews"
    result = cli(*predict_args(model_file, "--json", "--show-preprocessed", folder, *images))
    assert_one_line_failure(result, "No space left on device", "--show-preprocessed")
    assert fault.failures == 1
    assert '"prediction"' in result.stdout
    assert_no_new_files(before, tmp_path)


def test_previews_written_when_they_can_be(tmp_path, model_file, images, cli):
    folder = tmp_path / "previews"
    code, out, err = cli(*predict_args(model_file, "--show-preprocessed", folder, *images))
    assert code == 0 and err == ""
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "c.png"]


def test_library_predict_files_writes_previews_after_classifying(
    tmp_path, model_file, images, monkeypatch
):
    model, _ = load_model(model_file)
    order = []
    classify = predict.classify
    monkeypatch.setattr(predict, "classify", lambda *a, **k: order.append("c") or classify(*a, **k))
    save = predict.save_previews
    monkeypatch.setattr(predict, "save_previews", lambda *a: order.append("s") or save(*a))
    predict.predict_files(model, images, show_dir=tmp_path / "p")
    assert order == ["c", "s"]


@pytest.mark.parametrize("kind", ["full", "ro"])
def test_previews_on_a_full_or_read_only_disk(tmp_path, model_file, images, real_disk, kind):
    disk = tmp_path / "disk"
    args = predict_args(model_file, "--show-preprocessed", disk / "previews", *images)
    result = real_disk(disk, kind, *args[0:], files={"kept.txt": b"x"}, cwd=tmp_path)
    reason = "No space left" if kind == "full" else "Read-only"
    assert_one_line_failure(result[:3], "--show-preprocessed", reason)
    assert len(result.stdout.splitlines()) == 3
    assert_disk_untouched(result)


# ----------------------------------------------------------------------------- export


def export_args(model_file: Path, out) -> list[str]:
    return ["export", "--checkpoint", str(model_file), "--format", "torchscript", "--out", str(out)]


@pytest.mark.parametrize("where", ["under-a-file", "under-proc-file", "in-proc-self"])
def test_export_to_an_unwritable_path_is_one_line(tmp_path, model_file, cli, where):
    out = unwritable_paths(tmp_path)[where] / "model.pt"
    before = snapshot(tmp_path)
    assert_one_line_failure(cli(*export_args(model_file, out)), "--out", str(out))
    assert_no_new_files(before, tmp_path)


def test_export_failing_midway_leaves_nothing(tmp_path, model_file, cli, write_fault):
    write_fault("EIO")
    before = snapshot(tmp_path)
    out = tmp_path / "new" / "folder" / "model.pt"
    assert_one_line_failure(cli(*export_args(model_file, out)), "Input/output error", str(out))
    assert_no_new_files(before, tmp_path)


def test_export_keeps_the_old_file_when_the_new_one_fails(tmp_path, model_file, cli, write_fault):
    out = tmp_path / "model.pt"
    out.write_bytes(b"the old export")
    write_fault("ENOSPC")
    assert_one_line_failure(cli(*export_args(model_file, out)), "No space left")
    assert out.read_bytes() == b"the old export" and sorted(os.listdir(tmp_path)) == ["model.pt"]


@pytest.mark.parametrize("kind", ["full", "ro"])
def test_export_on_a_full_or_read_only_disk(tmp_path, model_file, real_disk, kind):
    disk = tmp_path / "disk"
    result = real_disk(disk, kind, *export_args(model_file, disk / "sub" / "m.pt"), cwd=tmp_path)
    reason = "No space left" if kind == "full" else "Read-only"
    assert_one_line_failure(result[:3], "--out", reason)
    assert_disk_untouched(result)
