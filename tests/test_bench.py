"""`mnistlab bench` runs both loops on the same model and reports consistent ratios."""

import json
import types
from pathlib import Path

import pytest
import torch

from mnistlab.bench import seed as bench_module
from mnistlab.bench.seed import NotebookMNIST, bench, format_bench
from mnistlab.cli import main
from mnistlab.data.datasets import MNIST, load_split
from mnistlab.models import registry

TRAIN_IMAGES = 320  # in the data_dir fixture


def test_notebook_dataset_gives_what_totensor_and_normalize_give(data_dir: Path) -> None:
    images, labels = load_split("mnist", train=True, root=data_dir)
    dataset = NotebookMNIST(images, labels, MNIST.mean, MNIST.std)
    x, y = dataset[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(labels[3])
    expected = (images[3].float() / 255 - MNIST.mean) / MNIST.std
    assert torch.allclose(x[0], expected)


def fake_clock(monkeypatch: pytest.MonkeyPatch, seconds: list[float]) -> None:
    """bench's timer reads 0, then each timed loop takes the next of `seconds`, in call order.

    A timed loop reads the clock twice (start, end); running out of readings fails the test.
    """
    readings = [0.0]
    for s in seconds:
        readings += [readings[-1], readings[-1] + s]
    monkeypatch.setattr(
        bench_module, "time", types.SimpleNamespace(perf_counter=iter(readings[1:]).__next__)
    )


def test_bench_times_every_loop_and_relates_them_to_the_notebook(
    data_dir: Path, device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two rounds of notebook, trainer, trainer without channels_last: 1 + 3 = 4 s, 0.5 + 1.5 =
    # 2 s and 3 + 1 = 4 s in all, for 2 rounds * 2 batches * 16 = 64 images each:
    # 16, 32 and 16 images/s; an epoch of 320 images takes 20, 10 and 20 s; ratios 1, 0.5, 1.
    fake_clock(monkeypatch, [1, 0.5, 3, 3, 1.5, 1])
    result = bench(
        "gap_tiny", batches=2, rounds=2, batch_size=16, device=str(device), data_dir=data_dir
    )
    assert result["results"] == {
        "notebook loop": {"images_per_s": 16.0, "seconds_per_epoch": 20.0, "epoch_ratio": 1.0},
        "trainer": {"images_per_s": 32.0, "seconds_per_epoch": 10.0, "epoch_ratio": 0.5},
        "trainer, no channels_last": {
            "images_per_s": 16.0,
            "seconds_per_epoch": 20.0,
            "epoch_ratio": 1.0,
        },
    }
    lines = format_bench(result).splitlines()
    assert lines[2].split() == ["notebook", "loop", "16.0", "20.0", "1.000x"]
    assert lines[3].split() == ["trainer", "32.0", "10.0", "0.500x"]


def test_bench_trains_every_loop_from_the_same_initial_weights(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []  # (model, its weights when built)

    def recording_gap_tiny() -> torch.nn.Module:
        model = original()
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    original = registry.MODELS["gap_tiny"]
    monkeypatch.setitem(registry.MODELS, "gap_tiny", recording_gap_tiny)
    bench("gap_tiny", batches=2, rounds=1, batch_size=16, device="cpu", data_dir=data_dir)

    assert len(built) == 3  # the notebook's model and one per trainer variant
    initial = built[0][1]
    for _, weights in built[1:]:
        assert all(torch.equal(weights[k], initial[k]) for k in initial)
    finals = [{k: v.detach().contiguous() for k, v in m.state_dict().items()} for m, _ in built]
    for final in finals:
        assert all(torch.isfinite(v.float()).all() for v in final.values())
        assert not torch.equal(final["layers.0.0.weight"], initial["layers.0.0.weight"])
    # Same start, different loops (data order, the notebook's per-sample PIL path): the
    # notebook's weights end elsewhere than the trainer's.
    assert not torch.equal(finals[0]["layers.0.0.weight"], finals[1]["layers.0.0.weight"])


def test_bench_times_other_models_in_the_same_rounds(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One round of 2 batches of 16 = 32 images per loop; the loops take 2, 1, 4, 8 and 0.5 s:
    # 16, 32, 8, 4 and 64 images/s, epochs of 320 images of 20, 10, 40, 80 and 5 s.
    fake_clock(monkeypatch, [2, 1, 4, 8, 0.5])
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
    assert [row["seconds_per_epoch"] for row in rows.values()] == [20.0, 10.0, 40.0, 80.0, 5.0]
    assert [row["epoch_ratio"] for row in rows.values()] == [1.0, 0.5, 2.0, 4.0, 0.25]
    text = format_bench(result)
    assert "trainer: gap_thin_stem" in text
    assert len({len(line) for line in text.splitlines()[1:]}) == 1  # the columns line up


def test_bench_command_prints_the_table_and_writes_the_same_numbers_as_json(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    fake_clock(monkeypatch, [2, 1, 4])  # 32 images each: 16, 32, 8 images/s
    out = tmp_path / "bench.json"
    argv = ["bench", "gap_tiny", "--batches", "2", "--rounds", "1", "--batch-size", "16"]
    argv += ["--device", "cpu", "--data-dir", str(data_dir), "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert capsys.readouterr().out == f"{format_bench(doc)}\nwrote {out}\n"
    assert {
        k: doc[k] for k in ("model", "device", "batch_size", "batches_per_round", "rounds")
    } == {
        "model": "gap_tiny",
        "device": "cpu",
        "batch_size": 16,
        "batches_per_round": 2,
        "rounds": 1,
    }
    assert doc["threads"] == torch.get_num_threads() and doc["torch"] == torch.__version__
    assert [row["images_per_s"] for row in doc["results"].values()] == [16.0, 32.0, 8.0]
    assert [row["epoch_ratio"] for row in doc["results"].values()] == [1.0, 0.5, 2.0]
    assert doc["results"]["notebook loop"]["seconds_per_epoch"] == TRAIN_IMAGES / 16.0


def test_bench_times_the_trainer_under_bf16_autocast_in_the_same_rounds(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []  # each trainer variant's Parts

    def recording_setup(*args, **kwargs):
        parts = original(*args, **kwargs)
        built.append(parts)
        return parts

    original = bench_module.setup
    monkeypatch.setattr(bench_module, "setup", recording_setup)
    # 32 images per loop; notebook, trainer, no channels_last, bf16: 2, 1, 4 and 0.5 s.
    fake_clock(monkeypatch, [2, 1, 4, 0.5])
    result = bench(
        "gap_tiny", batches=2, rounds=1, batch_size=16, device="cpu", data_dir=data_dir, bf16=True
    )
    rows = result["results"]
    assert list(rows)[-1] == "trainer, bf16" and rows["trainer, bf16"]["epoch_ratio"] == 0.25
    assert [parts.bf16 for parts in built] == [False, False, True]
