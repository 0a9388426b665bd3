"""Reports, figures and compare tables measure each run against its own dataset: its target
line, its class names, its first epoch at the target."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.lines import Line2D

from mnistlab.data import datasets as data
from mnistlab.errors import MnistlabError
from mnistlab.runs import report as report_module
from mnistlab.runs.compare import (
    HEADERS,
    TARGET_COLUMN,
    format_table,
    parse_columns,
    summarize_run,
)
from mnistlab.runs.report import curves_figure, params_figure, write_report
from mnistlab.runs.rundir import read_run

RUNS = Path(__file__).parent / "fixtures" / "runs"
FASHION = data.FASHION_MNIST
FASHION_ACCS = [85.0, 90.0, 89.9, 91.2]  # reaches Fashion-MNIST's 90 at epoch 2, never 99.4


def write_run(folder: Path, dataset: str, test_accs: list[float]) -> Path:
    """A finished run directory: config.toml, run.json and metrics.jsonl, as training writes."""
    folder.mkdir(parents=True)
    config = f'name = "{folder.name}"\nmodel = "seed"\ndataset = "{dataset}"\n'
    (folder / "config.toml").write_text(config + f"epochs = {len(test_accs)}\n")
    info = {"name": folder.name, "model": "seed", "dataset": dataset, "params": 1000}
    info |= {"macs": 2_000_000, "rf": 20, "epochs_planned": len(test_accs), "finished": True}
    (folder / "run.json").write_text(json.dumps(info))
    records = [
        {
            "epoch": epoch,
            "train_loss": 0.3,
            "train_acc": acc + 1,
            "test_loss": 0.3,
            "test_acc": acc,
            "seconds": 1.0,
        }
        for epoch, acc in enumerate(test_accs, 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def fashion_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "fashion", FASHION.name, FASHION_ACCS)


def target_lines(ax) -> list[Line2D]:
    """The dashed horizontal lines of an axes (the targets)."""
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


# ----------------------------------------------------------------------------- compare


def test_first_target_epoch_is_counted_against_the_runs_own_dataset(fashion_run):
    row = summarize_run(read_run(fashion_run))
    assert (row["dataset"], row["target"]) == ("fashion-mnist", 90.0)
    assert row["first_epoch_target"] == 2  # 90.0 at epoch 2; MNIST's 99.4 is never reached
    mnist = summarize_run(read_run(RUNS / "03-final"))
    assert (mnist["dataset"], mnist["target"], mnist["first_epoch_target"]) == ("mnist", 99.4, 3)


def test_a_one_dataset_table_names_its_target_in_the_heading_and_legend(fashion_run):
    rows = [summarize_run(read_run(fashion_run))]
    lines = format_table(rows, "markdown").splitlines()
    cells = dict(
        zip(lines[0].strip("| ").split(" | "), lines[2].strip("| ").split(" | "), strict=True)
    )
    assert cells["first ≥90"] == "2"
    assert "first ≥90 = first epoch with test accuracy ≥ 90%." in lines
    assert not any("99.4" in line for line in lines)


def test_a_table_mixing_datasets_says_target_and_lists_each_datasets(fashion_run):
    rows = [summarize_run(read_run(p)) for p in (RUNS / "03-final", fashion_run)]
    lines = format_table(rows, "markdown").splitlines()
    heads = lines[0].strip("| ").split(" | ")
    assert heads[HEADERS.index(TARGET_COLUMN)] == "first ≥ target"
    # 03-final (MNIST) first reaches 99.4 at epoch 3; the Fashion-MNIST run reaches 90 at 2,
    # where 99.4 would have left it at "—".
    firsts = {
        cells[0]: cells[heads.index(TARGET_COLUMN)]
        for cells in (line.strip("| ").split(" | ") for line in lines[2:4])
    }
    assert firsts == {"03-final": "3", "fashion": "2"}
    legend = lines[lines.index("") + 1 :]
    (target_note,) = [line for line in legend if line.startswith(TARGET_COLUMN)]
    assert "mnist 99.4%" in target_note and "fashion-mnist 90%" in target_note
    assert not any(line.startswith("first ≥99.4") for line in legend)


def test_the_target_column_can_be_asked_for_by_a_datasets_heading():
    assert parse_columns("params,first ≥99.4") == ["run", "params", TARGET_COLUMN]
    assert parse_columns("first ≥90") == ["run", TARGET_COLUMN]
    assert parse_columns(TARGET_COLUMN) == ["run", TARGET_COLUMN]
    with pytest.raises(MnistlabError, match="unknown column"):
        parse_columns("first ≥98")


# ----------------------------------------------------------------------------- figures


def test_curves_draw_the_runs_own_target_and_start_below_it(fashion_run):
    fig = curves_figure(read_run(fashion_run))
    acc_ax = fig.axes[0]
    (line,) = target_lines(acc_ax)
    assert list(line.get_ydata()) == [90.0, 90.0] and line.get_label() == "90%"
    assert acc_ax.get_ylim()[0] == pytest.approx(87.6)  # 2.4 below the target, as 97 for MNIST
    assert "on fashion-mnist" in fig.get_suptitle()
    # None (the API's default): the axis holds every point.
    assert curves_figure(read_run(fashion_run), None).axes[0].get_ylim()[0] == pytest.approx(84.8)


def test_mnist_curves_keep_the_994_line_and_the_97_floor():
    fig = curves_figure(read_run(RUNS / "03-final"))
    (line,) = target_lines(fig.axes[0])
    assert list(line.get_ydata()) == [99.4, 99.4] and line.get_label() == "99.4%"
    assert fig.axes[0].get_ylim()[0] == 97.0
    assert "mnist" not in fig.get_suptitle()


def test_params_figure_draws_a_target_per_dataset(fashion_run):
    mnist_row = summarize_run(read_run(RUNS / "03-final"))
    fashion_row = summarize_run(read_run(fashion_run))
    ax = params_figure([mnist_row, fashion_row]).axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in target_lines(ax)}
    assert lines == {"mnist 99.4%": [99.4, 99.4], "fashion-mnist 90%": [90.0, 90.0]}
    # One dataset alone: its line, labelled as a one-dataset figure always was.
    (line,) = target_lines(params_figure([fashion_row]).axes[0])
    assert list(line.get_ydata()) == [90.0, 90.0] and line.get_label() == "90%"


# ----------------------------------------------------------------------------- report


@pytest.fixture
def fashion_final(fashion_run: Path) -> Path:
    """The Fashion-MNIST run with predictions: two shirts taken for T-shirts, one bag right."""
    labels = np.array([6, 6, 8, 0], dtype=np.uint8)  # Shirt, Shirt, Bag, T-shirt/top
    preds = np.array([0, 0, 8, 0], dtype=np.uint8)
    confidence = np.array([0.9, 0.8, 0.99, 0.7], dtype=np.float32)
    np.savez(fashion_run / "predictions.npz", label=labels, pred=preds, confidence=confidence)
    return fashion_run


def test_report_of_a_fashion_run_names_its_classes(fashion_final, tmp_path, monkeypatch):
    figures = {}

    def keep(name):
        draw = getattr(report_module, name)

        def wrapper(*args):
            figures[name] = draw(*args)
            return figures[name]

        monkeypatch.setattr(report_module, name, wrapper)

    for name in ("confusion_figure", "per_class_figure", "misclassified_figure"):
        keep(name)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    labels = np.array([6, 6, 8, 0])

    def load_split(dataset="mnist", train=True, root=None):
        assert (dataset, train) == ("fashion-mnist", False)
        return torch.from_numpy(images), torch.from_numpy(labels)

    monkeypatch.setattr(data, "load_split", load_split)
    text = write_report([fashion_final], tmp_path / "out", experiments=None).read_text()

    confusion_ax = figures["confusion_figure"].axes[0]
    names = list(FASHION.classes)
    assert [t.get_text() for t in confusion_ax.get_xticklabels()] == names
    assert [t.get_text() for t in confusion_ax.get_yticklabels()] == names
    assert all(t.get_rotation() == 45 for t in confusion_ax.get_xticklabels())  # long names
    per_class_ax = figures["per_class_figure"].axes[0]
    assert [t.get_text() for t in per_class_ax.get_xticklabels()] == names
    titles = [ax.get_title() for ax in figures["misclassified_figure"].axes if ax.get_title()]
    assert titles == [
        "true: Shirt\npred: T-shirt/top\nconf: 0.90",
        "true: Shirt\npred: T-shirt/top\nconf: 0.80",
    ]
    assert "| Shirt | 2 | 0 | 0.00 | T-shirt/top (2) |" in text
    assert "### Misclassified images" in text and "misclassified digits" not in text.lower()
    assert "Misclassified test images" in text


def test_a_fashion_report_without_test_images_says_how_to_fetch_them(
    fashion_final, tmp_path, monkeypatch
):
    def missing(dataset="mnist", train=True, root=None):
        raise MnistlabError("t10k-images-idx3-ubyte: missing")

    monkeypatch.setattr(data, "load_split", missing)
    text = write_report([fashion_final], tmp_path / "out", experiments=None).read_text()
    assert "`mnistlab data fetch --dataset fashion-mnist`" in text
