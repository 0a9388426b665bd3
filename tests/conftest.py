"""Shared fixtures: small IDX datasets written by the tests themselves."""

import dataclasses
import functools
import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import faults
import numpy as np
import pytest
import torch

from mnistlab.data import datasets as data


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: images if 3-dimensional, else labels."""
    magic = data.IMAGES_MAGIC if array.ndim == 3 else data.LABELS_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """write_idx(path, array): write an IDX file, gzipped when the path ends in .gz."""

    def write(path: Path, array: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = idx_bytes(np.asarray(array))
        path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
        return path

    return write


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with four small raw IDX files (20 train, 10 test images of 28x28).

    Their SHA-256 digests replace the real ones in the "mnist" spec for the test, so fetching
    and verifying them passes.
    """
    rng = np.random.default_rng(0)
    folder = tmp_path / "tiny"
    folder.mkdir()
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(20) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(10),
    }
    digests = {}
    for name, array in files.items():
        raw = idx_bytes(array)
        (folder / name).write_bytes(raw)
        digests[name] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.MNIST, sha256=digests))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path, write_idx) -> Path:
    """A small learnable dataset: each class is a bright square at its own place, plus noise."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 7 + 5 * col] = 255
        return images, labels

    raw = tmp_path / "data" / "MNIST" / "raw"
    for prefix, n in (("train", 320), ("t10k", 100)):
        images, labels = make(n)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path / "data"


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device the test can run on here: the CPU, and CUDA where there is one."""
    return torch.device(request.param)


# ----------------------------------------------------------------------------- fault injection
# Helpers in tests/faults.py; these fixtures bind them to the test's capsys and monkeypatch.


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., faults.CliResult]:
    """cli(*args) -> (returncode, stdout, stderr) of `mnistlab ARGS`, run in-process."""
    return functools.partial(faults.call_cli, capsys)


@pytest.fixture
def write_fault(monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """write_fault(code="ENOSPC", after=0, match="*"): atomic writes fail part-way."""
    return functools.partial(faults.fail_writes, monkeypatch)


@pytest.fixture
def real_disk() -> Callable[..., faults.DiskResult]:
    """run_cli_on_disk, after skipping (failing under CI=true) where no tmpfs can be mounted."""
    faults.need_real_disk()
    return faults.run_cli_on_disk


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model.pt of the seed network with untrained weights (seeded)."""
    from mnistlab.models import build
    from mnistlab.runs.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, "seed", build("seed").state_dict(), config={}, test_acc=10.0)
    return path
