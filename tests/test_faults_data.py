"""Broken data files: one line naming the file and the fix for the --data-dir given, exit
status 1, nothing written; for every command that reads data."""

import gzip
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes
from faults import assert_no_new_files, assert_one_line_failure, snapshot

from mnistlab.data import datasets as data

RAW = ("MNIST", "raw")


def images_of(n: int, height: int = 28, width: int = 28) -> bytes:
    return idx_bytes(np.random.default_rng(0).integers(0, 256, (n, height, width)))


def labels_of(values) -> bytes:
    return idx_bytes(np.asarray(values))


def header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


# (what is wrong, kind of file, its bytes given the good bytes, a fragment of the error)
CASES: list[tuple[str, str, Callable[[bytes], bytes], str]] = [
    ("label 10", "labels", lambda good: labels_of([3, 10, 1] + [0] * 97), "outside 0-9"),
    ("label 255", "labels", lambda good: labels_of([255] * 100), "label 255"),
    ("images 14x14", "images", lambda good: images_of(100, 14, 14), "14x14"),
    ("images 27x28", "images", lambda good: images_of(100, 27, 28), "28x27"),
    ("images 56x56", "images", lambda good: images_of(100, 56, 56), "28x28"),
    ("no images", "images", lambda good: images_of(0), "no images"),
    ("no labels", "labels", lambda good: labels_of(np.zeros(0)), "no labels"),
    ("a gzip file", "images", lambda good: gzip.compress(good), "magic number"),
    ("a PNG file", "images", lambda good: b"\x89PNG\r\n\x1a\n" + bytes(100), "magic number"),
    ("float IDX", "images", lambda good: b"\x00\x00\x0d\x03" + good[4:], "magic number"),
    ("labels as images", "images", lambda good: labels_of(np.zeros(100)), "1-dimensional"),
    ("images as labels", "labels", lambda good: images_of(100), "3-dimensional"),
    ("truncated", "images", lambda good: good[:-10], "truncated"),
    ("trailing bytes", "labels", lambda good: good + b"\0\0", "trailing bytes"),
    ("empty file", "labels", lambda good: b"", "truncated"),
    ("header only", "images", lambda good: good[:6], "truncated"),
    ("fewer labels", "labels", lambda good: labels_of(np.zeros(99)), "has 99 labels"),
    ("huge header", "images", lambda good: header(2051, *[2**32 - 1] * 3), "truncated"),
]


@pytest.fixture
def broken_root(tmp_path: Path, data_dir: Path) -> Callable[[str, str, Callable], Path]:
    """broken_root(name, kind, corrupt): a copy of the data_dir dataset with both splits'
    images or labels file replaced by corrupt(good bytes), in a folder named with a space."""

    def make(name: str, kind: str, corrupt: Callable[[bytes], bytes]) -> Path:
        root = tmp_path / "data with space"
        shutil.copytree(data_dir, root)
        raw = root.joinpath(*RAW)
        for prefix in ("train", "t10k"):
            path = raw / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            good = path.read_bytes()
            if prefix == "t10k" and name in ("fewer labels", "label 10", "label 255"):
                good = labels_of(np.zeros(100))  # size the replacement to the test split
            path.write_bytes(corrupt(good))
        return root

    return make


def check(result, root: Path, fragment: str, before: dict[str, str], folders: list[Path]):
    line = assert_one_line_failure(result, fragment, "--data-dir " + shlex.quote(str(root)))
    assert str(root.joinpath(*RAW)) in line  # names the file
    for folder in folders:
        assert_no_new_files(before[str(folder)], folder)


@pytest.mark.parametrize(("name", "kind", "corrupt", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_broken_file_is_one_line_for_every_reader(
    broken_root, model_file, cli, tmp_path, monkeypatch, name, kind, corrupt, fragment
):
    root = broken_root(name, kind, corrupt)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {str(f): snapshot(f) for f in (root, work)}
    d = ["--data-dir", str(root)]
    check(cli("data", "info", *d), root, fragment, before, [root, work])
    check(cli("evaluate", str(model_file), *d), root, fragment, before, [root, work])
    check(cli("train", "--epochs", "1", "--quiet", *d), root, fragment, before, [root, work])


def test_the_huge_header_reports_the_true_size(broken_root, cli):
    root = broken_root("huge", "images", lambda good: header(2051, *[2**32 - 1] * 3))
    line = assert_one_line_failure(cli("data", "info", "--data-dir", str(root)), "truncated")
    assert f"needs {16 + (2**32 - 1) ** 3}" in line


def test_damaged_gzip_names_the_file_and_the_data_dir(tmp_path, data_dir, cli):
    raw = data_dir.joinpath(*RAW)
    path = raw / "train-labels-idx1-ubyte"
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(path.read_bytes())[:-20])
    path.unlink()
    line = assert_one_line_failure(cli("data", "info", "--data-dir", str(data_dir)), "cannot read")
    assert "train-labels-idx1-ubyte.gz" in line and f"--data-dir {data_dir}" in line


def test_the_hint_names_the_dataset_too(tmp_path, data_dir, cli):
    fashion = tmp_path / "fashion"
    shutil.copytree(data_dir / "MNIST", fashion / "FashionMNIST")
    (fashion / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(labels_of([12] * 100))
    result = cli("data", "info", "--dataset", "fashion-mnist", "--data-dir", str(fashion))
    assert_one_line_failure(result, "--dataset fashion-mnist", f"--data-dir {fashion}")


def test_the_default_root_gets_the_plain_hint(tmp_path, data_dir, cli, monkeypatch):
    monkeypatch.setenv("MNISTLAB_DATA", str(data_dir))
    (data_dir.joinpath(*RAW) / "t10k-labels-idx1-ubyte").write_bytes(labels_of([12] * 100))
    line = assert_one_line_failure(cli("data", "info"), "run `mnistlab data fetch`")
    assert "--data-dir" not in line


@pytest.mark.parametrize(
    ("name", "corrupt", "fragment"),
    [
        ("labels 0-12", lambda good: labels_of(np.arange(20) % 13), "outside 0-9"),
        ("images 14x14", lambda good: images_of(20, 14, 14), "14x14"),
        ("huge header", lambda good: header(2051, *[2**32 - 1] * 3), "truncated"),
    ],
)
def test_fetch_refuses_unusable_custom_data(
    tmp_path, tiny_mnist, cli, monkeypatch, name, corrupt, fragment
):
    from mnistlab.data import fetch

    monkeypatch.setattr(fetch, "NPM_PACKAGES", {})  # the folder is the only source
    monkeypatch.setattr(fetch, "SYSTEM_FOLDERS", {})
    monkeypatch.setenv(fetch.MIRRORS_ENV, "")
    kind = "labels" if "labels" in name else "images"
    path = tiny_mnist / f"train-{kind}-idx{1 if kind == 'labels' else 3}-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    result = cli("data", "fetch", "--from", str(tiny_mnist), "--no-verify", "--data-dir", str(root))
    assert_one_line_failure(result, fragment, path.name)
    # the good files may land (fetch keeps what it verified); the bad one never does
    assert not (root / "MNIST" / "raw" / path.name).exists()
    new = set(snapshot(root)) - set(before)
    assert not [n for n in new if Path(n).name.startswith(".")]


def test_content_problem_accepts_good_arrays():
    assert data.content_problem(np.zeros((3, 28, 28), np.uint8), labels=False) is None
    assert data.content_problem(np.arange(10, dtype=np.uint8), labels=True) is None
