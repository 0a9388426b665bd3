import contextlib
import io
import re
import shutil
import tomllib
from pathlib import Path

import matplotlib.style
import numpy as np
import pytest
import torch
from PIL import Image

from mnistlab.cli import main
from mnistlab.data import datasets as data
from mnistlab.errors import MnistlabError
from mnistlab.runs import report as report_module
from mnistlab.runs.compare import format_table, summarize_run
from mnistlab.runs.figures import DPI, plain_number, png_bytes
from mnistlab.runs.report import (
    FIGSIZES,
    confusion_matrix,
    marker_ids,
    matching_test_images,
    misclassified_figure,
    misclassified_size,
    params_figure,
    per_class_accuracy,
    write_report,
)
from mnistlab.runs.rundir import find_runs, read_run

RUNS = Path(__file__).parent / "fixtures" / "runs"
FINAL_PREDICTIONS = RUNS / "03-final" / "predictions.npz"
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def fake_test_split(extra: int = 100):
    """A stand-in for the MNIST test split whose first labels match the final run's predictions."""
    labels = np.load(FINAL_PREDICTIONS)["label"].astype(np.int64)
    labels = np.concatenate([labels, np.arange(extra) % 10])
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)

    def load_split(dataset="mnist", train=False, root=None):
        assert (dataset, train) == ("mnist", False)
        return torch.from_numpy(images), torch.from_numpy(labels)

    return load_split


def pixel_size(inches: tuple[float, float]) -> tuple[int, int]:
    return round(inches[0] * DPI), round(inches[1] * DPI)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of all fixture runs, written twice into the same folder, and its warnings."""
    out = tmp_path_factory.mktemp("report")
    warnings = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(warnings):
        mp.setattr(data, "load_split", fake_test_split())
        first = write_report([RUNS], out).read_bytes()
        first_figures = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
        path = write_report([RUNS], out)
    return path, first, first_figures, warnings.getvalue()


def test_report_names_every_experiment_with_target_and_analysis(report):
    path = report[0]
    text = path.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == [
        "01-seed",
        "02-wide-partial (partial: 3/15 epochs)",
        "03-final",
        "Across experiments",
        "Final model: 03-final",
    ]
    for run_dir in find_runs([RUNS]):
        config = tomllib.loads((run_dir / "config.toml").read_text())
        assert config["target"].strip() in text
        assert config["analysis"].strip() in text


def test_report_holds_each_result_row_and_the_full_table(report):
    path = report[0]
    text = path.read_text()
    rows = [summarize_run(read_run(p)) for p in find_runs([RUNS])]
    for row in rows:
        assert format_table([row], "markdown", legend=False) in text
    assert format_table(rows, "markdown") in text


def test_every_linked_figure_exists_with_its_pixel_size(report):
    path = report[0]
    links = LINK.findall(path.read_text())
    expected = {
        "figures/01-seed-curves.png": FIGSIZES["curves"],
        "figures/02-wide-partial-curves.png": FIGSIZES["curves"],
        "figures/03-final-curves.png": FIGSIZES["curves"],
        "figures/params-accuracy.png": FIGSIZES["params"],
        "figures/final-confusion.png": FIGSIZES["confusion"],
        "figures/final-per-class.png": FIGSIZES["per_class"],
        "figures/final-misclassified.png": misclassified_size(4),  # 4 errors in the fixture
    }
    assert sorted(links) == sorted(expected)
    for link, inches in expected.items():
        png = path.parent / link
        assert png.stat().st_size > 0
        with Image.open(png) as image:
            assert image.format == "PNG"
            assert image.size == pixel_size(inches), link


def test_second_report_is_byte_identical(report):
    path, first, first_figures, _ = report
    assert path.read_bytes() == first
    assert {p.name: p.read_bytes() for p in (path.parent / "figures").iterdir()} == first_figures


def test_per_class_table_matches_the_predictions(report):
    path = report[0]
    text = path.read_text()
    npz = np.load(FINAL_PREDICTIONS)
    labels, preds = npz["label"], npz["pred"]
    for digit in range(10):
        total = int(np.sum(labels == digit))
        correct = int(np.sum((labels == digit) & (preds == digit)))
        assert f"| {digit} | {total} | {correct} | {100 * correct / total:.2f} |" in text
    errors = int(np.sum(labels != preds))
    assert f"{len(labels)} test images, {errors} misclassified" in text


def test_report_warns_about_partial_runs_only(report):
    warnings = report[3].splitlines()
    assert len(warnings) == 2  # one per report written
    assert all("02-wide-partial is a partial run (3/15 epochs)" in line for line in warnings)


def test_missing_test_images_give_a_note_instead_of_the_grid(tmp_path, monkeypatch):
    def missing(dataset="mnist", train=True, root=None):
        raise MnistlabError("t10k-images-idx3-ubyte: missing; run `mnistlab data fetch`")

    monkeypatch.setattr(data, "load_split", missing)
    text = write_report([RUNS / "03-final"], tmp_path).read_text()
    assert "_Not shown: the test images are not in the data folder" in text
    assert "figures/final-misclassified.png" not in text
    assert "figures/final-confusion.png" in text


def test_test_images_must_carry_the_predictions_labels(monkeypatch):
    load = fake_test_split(extra=10)
    labels = np.load(FINAL_PREDICTIONS)["label"]
    monkeypatch.setattr(data, "load_split", load)
    images = matching_test_images(labels, None, "mnist")
    assert np.array_equal(images, load()[0][: len(labels)].numpy())
    # Labels off by one image: the data folder holds other images than the run predicted.
    monkeypatch.setattr(data, "load_split", lambda *a, **k: (load()[0], load()[1].roll(1)))
    assert matching_test_images(labels, None, "mnist") is None
    # Fewer test images than predictions.
    monkeypatch.setattr(data, "load_split", lambda *a, **k: (load()[0][:10], load()[1][:10]))
    assert matching_test_images(labels, None, "mnist") is None


def test_runs_with_the_same_name_get_separate_figures(tmp_path):
    for parent in ("a", "b"):
        shutil.copytree(RUNS / "01-seed", tmp_path / parent / "seed")
    runs = [tmp_path / "a" / "seed", tmp_path / "b" / "seed"]
    text = write_report(runs, tmp_path / "out").read_text()
    links = LINK.findall(text)
    assert "figures/seed-curves.png" in links and "figures/seed-curves-2.png" in links
    # The final run (the last one) has no predictions: a note replaces its figures.
    assert "## Final model: seed" in text
    assert "seed has no predictions.npz" in text
    assert not any("final-" in link for link in links)


def test_report_on_a_folder_without_runs_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no run.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    labels = np.array([0, 0, 1, 2, 2, 2], dtype=np.uint8)
    preds = np.array([0, 1, 1, 2, 2, 0], dtype=np.uint8)
    confusion = confusion_matrix(labels, preds, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(confusion).tolist() == pytest.approx([50.0, 100.0, 200 / 3, 0.0])


def test_misclassified_grid_shows_the_most_confident_mistakes_first(monkeypatch):
    shown = 3  # a small grid keeps the test fast; the logic is the same for 32
    monkeypatch.setattr(report_module, "MAX_MISCLASSIFIED", shown)
    n = shown + 2
    labels = np.zeros(n + 10, dtype=np.uint8)
    preds = np.concatenate([np.ones(n, dtype=np.uint8), np.zeros(10, dtype=np.uint8)])
    confidence = np.linspace(0.3, 0.9, n + 10).astype(np.float32)
    images = np.zeros((n + 10, 28, 28), dtype=np.uint8)
    predictions = {"label": labels, "pred": preds, "confidence": confidence}
    fig = misclassified_figure(images, predictions, tuple(str(d) for d in range(10)))
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == shown
    # Errors are the first n images, confidence rising with the index: the last error leads.
    assert titled[0] == f"true: 0\npred: 1\nconf: {confidence[n - 1]:.2f}"
    assert titled[-1] == f"true: 0\npred: 1\nconf: {confidence[n - shown]:.2f}"
    assert fig.get_suptitle() == f"The {shown} most confident of {n} misclassified test images"
    with Image.open(io.BytesIO(png_bytes(fig))) as image:
        assert image.size == pixel_size(misclassified_size(shown))


def test_plot_of_an_unfinished_run_writes_a_png_and_warns(tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(RUNS / "02-wide-partial"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {out}"
    assert "warning" in captured.err and "partial run (3/15 epochs)" in captured.err
    with Image.open(out) as image:
        assert image.size == pixel_size(FIGSIZES["curves"])


def test_plot_writes_only_where_asked(tmp_path, capsys):
    run_dir = Path(shutil.copytree(RUNS / "03-final", tmp_path / "03-final"))
    before = sorted(run_dir.iterdir())
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "c.png").stat().st_size > 0
    assert captured.out.strip() == f"wrote {tmp_path / 'c.png'}"
    assert captured.err == "" and sorted(run_dir.iterdir()) == before


def test_plot_of_a_run_without_metrics_is_an_error(tmp_path, capsys):
    run_dir = Path(shutil.copytree(RUNS / "01-seed", tmp_path / "01-seed"))
    (run_dir / "metrics.jsonl").write_text("")
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.png")]) == 1
    assert "no epochs yet" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


@pytest.mark.realdata
def test_final_run_predictions_line_up_with_the_real_test_set():
    labels = np.load(FINAL_PREDICTIONS)["label"]
    images = matching_test_images(labels, None, "mnist")
    assert images is not None and images.shape == (len(labels), 28, 28)


def test_analysis_written_after_the_run_comes_from_the_experiment_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load_split", fake_test_split())
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "01-seed.toml").write_text(
        'model = "seed"\nanalysis = "Written after the run: it over-fits."\n'
    )
    text = write_report([RUNS / "01-seed"], tmp_path / "out", experiments=experiments).read_text()
    assert "Written after the run: it over-fits." in text
    without = write_report([RUNS / "01-seed"], tmp_path / "out2", experiments=None).read_text()
    assert "Written after the run" not in without


# ----------------------------------------------------------------------------- readable figures

ROOT = Path(__file__).resolve().parents[1]


def drawn_texts(fig) -> list:
    """Every text the Agg renderer draws for the figure (tick labels outside the view, empty
    strings and hidden artists are never drawn), with its box in pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    drawn = []
    original = RendererAgg.draw_text

    def record(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip():
            drawn.append(mtext)
        return original(self, gc, x, y, s, prop, angle, ismath, mtext)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RendererAgg, "draw_text", record)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    return [(text.get_text(), text.get_window_extent(renderer)) for text in drawn]


def overlapping(texts: list) -> list[tuple[str, str]]:
    return [
        (a, b)
        for i, (a, box_a) in enumerate(texts)
        for b, box_b in texts[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def readme_rows() -> list[dict]:
    """The rows `make report` draws the README's figure from: the committed seed runs, then
    every drill-down run."""
    runs = sorted((ROOT / "results").glob("seed/*/seed*"))
    runs += sorted((ROOT / "results").glob("[0-9]*/*/seed*"))
    if not runs:
        pytest.skip("no committed runs in results/")
    return [summarize_run(read_run(p)) for p in find_runs(runs)]


def shipped_run_name() -> str:
    import json

    record = json.loads((ROOT / "src" / "mnistlab" / "weights" / "final.json").read_text())
    return str(Path(record["run"]).relative_to("results"))


def test_params_figure_of_the_readme_has_no_overlapping_labels():
    rows = readme_rows()
    with matplotlib.style.context("default"):
        fig = params_figure(rows, shipped_run_name())
        texts = drawn_texts(fig)
    assert overlapping(texts) == []
    overview, zoom, _key = fig.axes
    names = {t for t, _ in texts}
    # Every experiment with a plotted run has its marker label and its key entry.
    experiments = {r["experiment"] for r in rows if r["last3_test_acc"] is not None}
    ids = marker_ids(sorted(experiments))
    assert all(ids[e] in names for e in experiments)
    assert {"19", "25", "seed"} <= names and "19  thin-stem (4 runs)" in names
    assert zoom.get_title().startswith("Zoom: 4,000-8,000 parameters, 99.3% and up")
    # The 8,000-parameter budget and the shipped final, marked.
    (budget,) = [line for line in overview.get_lines() if line.get_linestyle() == ":"]
    assert list(budget.get_xdata()) == [8000, 8000]
    stars = [c for c in overview.collections if c.get_label().startswith("shipped final")]
    assert len(stars) == 1 and stars[0].get_label() == "shipped final (19-thin-stem)"
    assert any(t == "10,000" for t in names) and not any("10^" in t or "e+" in t for t in names)


def test_params_figure_keeps_a_crowded_region_readable():
    """Thirty experiments in the dense region, a few runs each: labels still never touch."""
    rng = np.random.default_rng(1)
    counts = [4736, 4816, 4892, 7568, 7594, 7704, 7756, 7768]
    rows = []
    for k in range(30):
        params = counts[k % len(counts)]
        for seed in range(int(rng.integers(1, 5))):
            acc = float(rng.uniform(99.25, 99.6))
            rows.append(
                {"name": f"{k:02d}-x/s{seed}", "experiment": f"{k:02d}-step-{k}", "params": params,
                 "last3_test_acc": acc, "finished": True, "dataset": "mnist"}
            )  # fmt: skip
    with matplotlib.style.context("default"):
        fig = params_figure(rows, rows[0]["name"])
        texts = drawn_texts(fig)
    assert overlapping(texts) == []
    assert len(fig.axes) == 3  # the overview, the zoom and the key


def test_log_axes_carry_plain_numbers():
    run = read_run(RUNS / "01-seed")
    for i, record in enumerate(run.metrics):  # a loss that barely moves: 2.3085 to 2.3025
        for key in [k for k in record if k.endswith("_loss")]:
            record[key] = 2.3085 - 0.002 * i
    with matplotlib.style.context("default"):
        fig = report_module.curves_figure(run)
        labels = [t for t, _ in drawn_texts(fig)]
    loss_ticks = [t for t in labels if t.startswith("2.30")]
    assert "2.308" in loss_ticks and len(loss_ticks) >= 3
    assert not any("\\times" in t or "10^" in t or "e+" in t or "e-" in t for t in labels)
    assert plain_number(10000.0) == "10,000" and plain_number(0.015) == "0.015"
