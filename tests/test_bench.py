"""`mnistlab bench` runs both loops on the same model and reports consistent ratios."""

from pathlib import Path

import pytest
import torch

from mnistlab.bench import NotebookMNIST, bench, format_bench
from mnistlab.data import MNIST, load_split


def test_notebook_dataset_gives_what_totensor_and_normalize_give(data_dir: Path) -> None:
    images, labels = load_split("mnist", train=True, root=data_dir)
    dataset = NotebookMNIST(images, labels, MNIST.mean, MNIST.std)
    x, y = dataset[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(labels[3])
    expected = (images[3].float() / 255 - MNIST.mean) / MNIST.std
    assert torch.allclose(x[0], expected)


def test_bench_times_every_loop_and_relates_them_to_the_notebook(
    data_dir: Path, device: torch.device
) -> None:
    result = bench(
        "gap_tiny", batches=2, rounds=1, batch_size=16, device=str(device), data_dir=data_dir
    )
    rows = result["results"]
    assert set(rows) == {"notebook loop", "trainer", "trainer, no channels_last"}
    assert rows["notebook loop"]["epoch_ratio"] == 1.0
    for row in rows.values():
        assert row["images_per_s"] > 0
        expected = row["seconds_per_epoch"] / rows["notebook loop"]["seconds_per_epoch"]
        assert row["epoch_ratio"] == pytest.approx(expected, abs=2e-3)
    assert "epoch vs notebook" in format_bench(result)


def test_bench_times_other_models_in_the_same_rounds(data_dir: Path) -> None:
    result = bench(
        "gap_tiny",
        batches=2,
        rounds=1,
        batch_size=16,
        device="cpu",
        data_dir=data_dir,
        others=("gap_deep", "gap_thin_stem"),
    )
    rows = result["results"]
    assert list(rows)[-2:] == ["trainer: gap_deep", "trainer: gap_thin_stem"]
    assert all(row["images_per_s"] > 0 for row in rows.values())
    text = format_bench(result)
    assert "trainer: gap_thin_stem" in text
    assert len({len(line) for line in text.splitlines()[1:]}) == 1  # the columns line up
