"""A Markdown report with PNG figures from run directories, and the curves of a single run.

The report holds, per experiment, its target, result row, analysis and training curves; across
experiments, test accuracy against parameters and the full compare table; for the final model,
its confusion matrix, per-class accuracy and most confident mistakes.

Output is deterministic: the same runs give byte-identical Markdown (no timestamps, fixed float
formats) and figures of a fixed pixel size (fixed figsize and dpi, matplotlib's default style
whatever the user's matplotlibrc says, no software version in the PNG metadata).
Figures are bare matplotlib Figures rendered by Agg: no pyplot, no window, no display needed.
"""

import re
import sys
from pathlib import Path
from typing import Any, Literal

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from mnistlab.config import LAST_N, load_config
from mnistlab.data import datasets as data
from mnistlab.errors import MnistlabError, arg
from mnistlab.fileio import replace_folder, write_files
from mnistlab.runs.compare import format_table, run_dataset, summarize_run
from mnistlab.runs.figures import (
    FigureWriter,
    new_figure,
    place_labels,
    plain_log_axis,
    png_bytes,
    renderer_of,
)
from mnistlab.runs.rundir import Run, find_runs, read_predictions, read_run

# Figure sizes in inches; at DPI dots per inch a (10, 4) figure is a 1000x400 PNG.
FIGSIZES = {
    "curves": (10, 4),
    "params": (10, 6.4),
    "confusion": (6, 5.5),
    "per_class": (8, 4),
}
GRID_COLS, MAX_MISCLASSIFIED = 8, 32  # digits per row; the most confident mistakes shown
# Misclassified grid layout in inches: figure title band, per-digit title band, digit, bottom.
GRID_HEAD, GRID_TITLE, GRID_DIGIT, GRID_FOOT = 0.35, 0.55, 1.15, 0.1
SPLIT_COLORS = {"train": "C0", "val": "C2", "test": "C1"}
SPLIT_LABELS = {"train": "train", "val": "validation", "test": "test"}


# ----------------------------------------------------------------------------- helpers


def misclassified_size(shown: int) -> tuple[float, float]:
    """Figure size in inches of a grid of `shown` digits in rows of GRID_COLS."""
    rows = max(1, -(-shown // GRID_COLS))
    return (10, GRID_HEAD + rows * (GRID_TITLE + GRID_DIGIT) + GRID_FOOT)


def partial_note(run: Run) -> str:
    """'' for a finished run, else '(partial: 3/15 epochs)'."""
    return "" if run.finished else f"(partial: {run.progress})"


def warn_if_partial(run: Run) -> None:
    if not run.finished:
        print(
            f"mnistlab: warning: {run.path} is a partial run ({run.progress}); "
            "plotting the epochs that exist",
            file=sys.stderr,
        )


def slug(name: str) -> str:
    """A file-name-safe version of a run name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


def class_names(run: Run) -> tuple[str, ...]:
    return run_dataset(run).classes


def shown_items(spec: data.DatasetSpec) -> str:
    """What the report calls the dataset's images: MNIST's are digits."""
    return "digits" if spec.digits else "images"


def load_predictions(run: Run) -> dict[str, np.ndarray] | None:
    """predictions.npz as {"label", "pred", "confidence"}; None when the run has none yet."""
    return read_predictions(run.path)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true label, columns = predicted label."""
    flat = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Percent correct per true class (0 for a class with no images)."""
    totals = confusion.sum(axis=1)
    return 100.0 * np.diag(confusion) / np.maximum(totals, 1)


def matching_test_images(
    labels: np.ndarray, data_dir: str | Path | None, dataset: str
) -> np.ndarray | None:
    """The test images behind predictions.npz, or None when the data is missing or differs.

    A run with limit_test predicts the first N test images, so the first N must carry the same
    labels; anything else means the data folder holds another dataset than the run used.
    """
    try:
        images, test_labels = data.load_split(dataset, train=False, root=data_dir)
    except MnistlabError:
        return None
    n = len(labels)
    if n > len(test_labels) or not np.array_equal(test_labels[:n].numpy(), labels):
        return None
    return images[:n].numpy()


# ----------------------------------------------------------------------------- figures


# The accuracy axes start this many points below the dataset's target (MNIST: 97 and 98.5):
# the differences between good runs are tenths of a point near it.
CURVES_BELOW_TARGET, PARAMS_BELOW_TARGET = 2.4, 0.9


def below_target(spec: data.DatasetSpec, points: float) -> float:
    return round(spec.target - points, 2)  # 97.0, not 97.00000000000001


def target_line(ax: Axes, target: float, label: str = "") -> None:
    """The dashed line of a dataset's target accuracy, labelled "99.4%" by default."""
    label = label or f"{target:g}%"
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=label)


def curves_figure(run: Run, acc_floor: float | Literal["dataset"] | None = "dataset") -> Figure:
    """Accuracy and loss per epoch, train against test (and validation when there is one).

    The accuracy axis starts at `acc_floor` at the lowest ("dataset": 2.4 points below the
    run's dataset's target; None: wherever the points are). The dashed line is the target.
    """
    spec = run_dataset(run)
    if acc_floor == "dataset":
        acc_floor = below_target(spec, CURVES_BELOW_TARGET)
    fig = new_figure(FIGSIZES["curves"])
    acc_ax, loss_ax = fig.subplots(1, 2)
    for split in ("train", "val", "test"):
        # A split measured only in some epochs (the test set at the end) gets those points.
        measured = [r for r in run.metrics if f"{split}_acc" in r]
        if not measured:
            continue
        style = {"color": SPLIT_COLORS[split], "marker": "o", "label": SPLIT_LABELS[split]}
        at = [r["epoch"] for r in measured]
        acc_ax.plot(at, [r[f"{split}_acc"] for r in measured], **style)
        loss_ax.plot(at, [r[f"{split}_loss"] for r in measured], **style)
    target_line(acc_ax, spec.target)
    # The interesting differences are tenths of a point near the target: a first epoch at 67%
    # would flatten them, so the axis starts at the floor and lower points sit below it.
    lowest = min(r[key] for r in run.metrics for key in r if key.endswith("_acc"))
    floor = lowest - 0.2 if acc_floor is None else acc_floor
    acc_ax.set_ylim(bottom=max(lowest - 0.2, floor), top=100.05)
    floor_note = f" (axis from {floor:g}%)" if lowest - 0.2 < floor else ""
    acc_ax.set(title=f"Accuracy{floor_note}", xlabel="epoch", ylabel="accuracy (%)")
    loss_ax.set_yscale("log")  # late epochs differ by a factor, not by an amount
    plain_log_axis(loss_ax.yaxis)
    loss_ax.set(title="Loss (log scale)", xlabel="epoch", ylabel="loss")
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    model = run.info.get("model", run.config.get("model", "?"))
    on = "" if spec.name == data.MNIST.name else f" on {spec.name}"  # MNIST: the default
    fig.suptitle(
        f"{run.name}: {model}, {run.info['params']:,} params{on} {partial_note(run)}".strip()
    )
    return fig


# The drill-down's parameter budget: every compact network stays under it. The zoomed panel
# shows the runs between half of it and it, from ZOOM_BELOW_TARGET points below the target up.
PARAMS_BUDGET = 8_000
ZOOM_BELOW_TARGET = 0.1
ZOOM_MIN_EXPERIMENTS = 2  # fewer in the dense region: no zoomed panel, one plot
ZOOM_GAP = 1.2  # columns of empty space between parameter counts in the zoomed panel
KEY_COLUMNS = 4
LABEL_SIZE = 9  # points: the labels and the key, readable at the README's width
FINAL_STYLE = {"marker": "*", "s": 190, "color": "C3", "edgecolors": "white", "zorder": 5}


def marker_ids(names: list[str]) -> dict[str, str]:
    """The short label each experiment's points carry: its number ("19" for 19-thin-stem),
    else its name; the key below the plot says which is which."""
    numbers = {name: re.match(r"\d+(?=[-_ ])", name) for name in names}
    ids = {name: m.group() if m else name for name, m in numbers.items()}
    shared = {i for i in ids.values() if list(ids.values()).count(i) > 1}
    return {name: name if i in shared else i for name, i in ids.items()}


def key_entry(name: str, marker: str, group: list[dict[str, Any]], floor: float) -> str:
    """ "19 thin-stem (4 runs)", "seed (2 runs, partial, lowest 98.69%)" """
    rest = name.removeprefix(marker).lstrip("-_ ") if marker != name else name
    notes = [f"{len(group)} runs"] if len(group) > 1 else []
    if any(not row["finished"] for row in group):
        notes.append("partial")
    lowest = min(row["last3_test_acc"] for row in group)
    if lowest < floor:
        notes.append(f"lowest {lowest:.2f}%")
    entry = rest + (f" ({', '.join(notes)})" if notes else "")
    return entry if marker == name else f"{marker}  {entry}"


def params_figure(rows: list[dict[str, Any]], final: str | None = None) -> Figure:
    """Last-epochs test accuracy against parameter count: a point per run, its experiment's
    number beside it, a key to the numbers below the plot.

    Left, every run on a log axis; runs below the axis floor (a partial seed run after one
    epoch, say) sit on the floor as a down-pointing triangle, their value in the key. Each
    dataset's target is a dashed line, the parameter budget a dotted one, and the run named
    `final` (the shipped model) a red star. Right, zoomed: the dense region under the budget
    near the target, each experiment a column of its runs, grouped by parameter count.
    Labels are placed where they overlap no other label or point.
    """
    fig = new_figure(FIGSIZES["params"])
    specs = {row["dataset"]: data.get_spec(row["dataset"]) for row in rows}
    floor = min((below_target(s, PARAMS_BELOW_TARGET) for s in specs.values()), default=0.0)
    experiments: dict[str, list[dict[str, Any]]] = {}
    for row in (r for r in rows if r["last3_test_acc"] is not None):
        experiments.setdefault(row["experiment"], []).append(row)
    ids = marker_ids(list(experiments))
    zoom = zoom_region(experiments, specs)
    key_rows = max(1, -(-len(experiments) // KEY_COLUMNS))
    grid = fig.add_gridspec(2, 2 if zoom else 1, height_ratios=(8.5, 0.25 + 0.42 * key_rows))
    ax = fig.add_subplot(grid[0, 0])  # first: axes[0] is the overview
    zoom_ax = fig.add_subplot(grid[0, 1]) if zoom else None
    key_ax = fig.add_subplot(grid[1, :])

    final_row = next((r for g in experiments.values() for r in g if r["name"] == final), None)
    for group in experiments.values():
        for row in group:
            x, y = row["params"], row["last3_test_acc"]
            face = "C0" if row["finished"] else "white"
            marker = "v" if y < floor else "o"
            ax.scatter([x], [max(y, floor)], color=face, edgecolors="C0", marker=marker, zorder=3)
    if final_row is not None:
        label = f"shipped final ({final_row['experiment']})"
        y = max(final_row["last3_test_acc"], floor)
        ax.scatter([final_row["params"]], [y], label=label, **FINAL_STYLE)
    for spec in specs.values():
        # One dataset: "99.4%" as ever; several: each line names its dataset.
        target_line(ax, spec.target, f"{spec.name} {spec.target:g}%" if len(specs) > 1 else "")
    ax.axvline(
        PARAMS_BUDGET, color="C2", linestyle=":", linewidth=1.5,
        label=f"{PARAMS_BUDGET:,}-parameter budget",
    )  # fmt: skip
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis, between=False)  # "200,000" and "300,000" would collide
    ax.margins(x=0.15, y=0.12)
    ax.set(
        title="All runs" if zoom else "",
        xlabel="parameters (log scale)",
        ylabel="test accuracy (%)",
    )
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="best", fontsize=8)  # where it covers the fewest points
    tops: list[tuple[str, float, float]] = []
    if zoom:
        low, high, zoom_floor, names = zoom
        top = max(r["last3_test_acc"] for n in names for r in experiments[n]) + 0.04
        region = Rectangle(
            (low, zoom_floor), high - low, top - zoom_floor,
            fill=False, edgecolor="0.4", linestyle="--", linewidth=0.8, zorder=1,
        )  # fmt: skip
        region.set_gid("zoom-region")
        ax.add_patch(region)
        tops = zoom_panel(zoom_ax, {n: experiments[n] for n in names}, ids, zoom, top, final_row)
    fig.suptitle(f"Test accuracy (mean of the last {LAST_N} epochs) against parameters")
    key_panel(key_ax, experiments, ids, floor)

    # Labels last, once the layout is frozen: they are placed by pixels.
    renderer = renderer_of(fig)
    taken = [legend.get_window_extent(renderer)]
    zoomed = set(zoom[3]) if zoom else set()
    outside = [
        (ids[name], group[0]["params"], max(max(r["last3_test_acc"] for r in group), floor))
        for name, group in experiments.items()
        if name not in zoomed
    ]
    place_labels(ax, outside, renderer, taken, LABEL_SIZE)
    if zoom_ax is not None:
        place_labels(zoom_ax, tops, renderer, [], LABEL_SIZE)
    return fig


def zoom_region(
    experiments: dict[str, list[dict[str, Any]]], specs: dict[str, data.DatasetSpec]
) -> tuple[int, int, float, list[str]] | None:
    """(lowest params, highest params, accuracy floor, experiments) of the zoomed panel: the
    runs of the most common dataset between half the budget and the budget, from just below
    its target up; None when too few experiments fall there to need a zoom."""
    counts = [row["dataset"] for group in experiments.values() for row in group]
    if not counts:
        return None
    spec = specs[max(set(counts), key=counts.count)]
    low, high = PARAMS_BUDGET // 2, PARAMS_BUDGET
    floor = below_target(spec, ZOOM_BELOW_TARGET)
    names = [
        name
        for name, group in experiments.items()
        if any(
            r["dataset"] == spec.name
            and low <= r["params"] <= high
            and r["last3_test_acc"] >= floor
            for r in group
        )
    ]
    return (low, high, floor, names) if len(names) >= ZOOM_MIN_EXPERIMENTS else None


def zoom_panel(
    ax: Axes,
    experiments: dict[str, list[dict[str, Any]]],
    ids: dict[str, str],
    zoom: tuple[int, int, float, list[str]],
    top: float,
    final_row: dict[str, Any] | None,
) -> list[tuple[str, float, float]]:
    """The dense region: a column per experiment, its runs side by side within it, columns
    grouped by parameter count (the tick under each group). Runs under the panel's floor sit
    on it as down-pointing triangles. Returns each column's label and top point."""
    low, high, floor, _ = zoom
    order = sorted(
        experiments, key=lambda n: (experiments[n][0]["params"], list(experiments).index(n))
    )
    x, ticks, tops, last = 0.0, {}, [], None
    for name in order:
        group = experiments[name]
        params = group[0]["params"]
        if last is not None:
            x += 1 + (ZOOM_GAP if params != last else 0)
        last = params
        ticks.setdefault(params, []).append(x)
        values = [row["last3_test_acc"] for row in group]
        # A line from the column's lowest run to its highest ties its points together.
        ax.plot([x, x], [max(min(values), floor), max(values)], color="C0", lw=0.8, alpha=0.5)
        # Runs of one experiment spread a little across their column: equal values stay seen.
        spread = np.linspace(-0.15, 0.15, len(group)) if len(group) > 1 else np.zeros(1)
        for dx, row in zip(spread, group, strict=True):
            y = row["last3_test_acc"]
            face = "C0" if row["finished"] else "white"
            ax.scatter(
                [x + dx], [max(y, floor)], s=20, color=face, edgecolors="C0",
                marker="v" if y < floor else "o", zorder=3, clip_on=False,
            )  # fmt: skip
            if row is final_row:
                ax.scatter([x + dx], [y], **FINAL_STYLE)
        tops.append((ids[name], x, max(max(values), floor)))
    # Every other parameter count on a grey band, so that each column's count is plain.
    for k, xs in enumerate(ticks.values()):
        if k % 2:
            ax.axvspan(min(xs) - 0.5 - ZOOM_GAP / 2, max(xs) + 0.5 + ZOOM_GAP / 2, color="0.93")
    target = next(s.target for s in (data.get_spec(g[0]["dataset"]) for g in experiments.values()))
    target_line(ax, target)
    ax.set_xticks([sum(xs) / len(xs) for xs in ticks.values()], [f"{p:,}" for p in ticks])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlim(-0.5 - ZOOM_GAP / 2, x + 0.5 + ZOOM_GAP / 2)
    ax.set_ylim(floor, top)
    ax.set(
        title=f"Zoom: {low:,}-{high:,} parameters, {floor:g}% and up",
        xlabel="parameters (each experiment a column)",
    )
    ax.grid(alpha=0.3, axis="y")
    return tops


def key_panel(
    ax: Axes, experiments: dict[str, list[dict[str, Any]]], ids: dict[str, str], floor: float
) -> None:
    """The key to the labels: one entry per experiment, in columns, in run order."""
    ax.axis("off")
    names = list(experiments)
    rows = max(1, -(-len(names) // KEY_COLUMNS))
    for k, name in enumerate(names):
        column, row = divmod(k, rows)
        ax.text(
            column / KEY_COLUMNS, 1 - (row + 0.5) / rows,
            key_entry(name, ids[name], experiments[name], floor),
            transform=ax.transAxes, va="center", ha="left", fontsize=LABEL_SIZE,
        )  # fmt: skip


def confusion_figure(confusion: np.ndarray, classes: tuple[str, ...]) -> Figure:
    fig = new_figure(FIGSIZES["confusion"])
    ax = fig.subplots()
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="test images")
    threshold = confusion.max() / 2
    for (true, pred), count in np.ndenumerate(confusion):
        if count:
            color = "white" if count > threshold else "black"
            ax.text(pred, true, str(count), ha="center", va="center", fontsize=8, color=color)
    ticks = range(len(classes))
    class_ticks(ax, classes)
    ax.set_yticks(ticks, classes)
    errors = int(confusion.sum() - np.trace(confusion))
    ax.set(
        title=f"Confusion matrix ({int(confusion.sum()):,} test images, {errors:,} errors)",
        xlabel="predicted label",
        ylabel="true label",
    )
    return fig


def class_ticks(ax: Axes, classes: tuple[str, ...]) -> None:
    """Class names under the x axis, slanted when longer than a digit so that "T-shirt/top"
    and "Pullover" do not run into each other."""
    slant = max(len(c) for c in classes) > 2
    ax.set_xticks(
        range(len(classes)), classes, rotation=45 if slant else 0, ha="right" if slant else "center"
    )


def per_class_figure(accuracy: np.ndarray, classes: tuple[str, ...]) -> Figure:
    fig = new_figure(FIGSIZES["per_class"])
    ax = fig.subplots()
    bars = ax.bar(range(len(classes)), accuracy, color="C0")
    ax.bar_label(bars, [f"{a:.2f}" for a in accuracy], fontsize=8, padding=2)
    # Accuracies sit close to 100%: start the axis just below the worst class so they differ.
    ax.set_ylim(max(0.0, float(np.floor(accuracy.min())) - 1), 100.5)
    class_ticks(ax, classes)
    ax.set(title="Test accuracy per class", xlabel="true label", ylabel="accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def misclassified_figure(
    images: np.ndarray,
    predictions: dict[str, np.ndarray],
    classes: tuple[str, ...],
) -> Figure:
    """The most confident mistakes, each titled with its true and predicted class."""
    labels, preds, confidence = predictions["label"], predictions["pred"], predictions["confidence"]
    wrong = np.flatnonzero(labels != preds)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:MAX_MISCLASSIFIED]
    width, height = misclassified_size(len(order))
    # Fixed margins in inches instead of a constrained layout, which is slow for many axes.
    fig = new_figure((width, height), layout=None)
    grid = {
        "left": 0.01,
        "right": 0.99,
        "bottom": GRID_FOOT / height,
        "top": 1 - (GRID_HEAD + GRID_TITLE) / height,
        "hspace": GRID_TITLE / GRID_DIGIT,  # a fraction of the digit's height
        "wspace": 0.15,
    }
    axes = fig.subplots(-(-len(order) // GRID_COLS), GRID_COLS, squeeze=False, gridspec_kw=grid)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        title = f"true: {classes[labels[i]]}\npred: {classes[preds[i]]}\nconf: {confidence[i]:.2f}"
        ax.set_title(title, fontsize=8)
    if len(order) < len(wrong):
        title = f"The {len(order)} most confident of {len(wrong)} misclassified test images"
    else:
        title = f"All {len(wrong)} misclassified test images, most confident first"
    fig.suptitle(title, y=1 - 0.08 / height)
    return fig


# ----------------------------------------------------------------------------- report


def text_or_none(text: str) -> str:
    return text.strip() or "_(none given in config.toml)_"


def analysis_text(run: Run, experiments: Path | None) -> str:
    """The Analysis is written after a run, into its experiment file; read it from there.

    The run's own config.toml records the experiment as it was when the run started (its
    Target was decided before the run), so its analysis is the fallback.
    """
    if experiments is not None:
        path = experiments / f"{run.experiment}.toml"
        if path.is_file():
            analysis = load_config(path).analysis
            if analysis.strip():
                return analysis
    return run.config.get("analysis", "")


def experiment_section(
    run: Run, row: dict[str, Any], figures: FigureWriter, experiments: Path | None = None
) -> list[str]:
    heading = f"## {run.name} {partial_note(run)}".strip()
    link = figures.write(curves_figure(run), f"{slug(run.name)}-curves", f"{run.name}: curves")
    return [
        heading,
        "",
        "### Target",
        "",
        text_or_none(run.config.get("target", "")),
        "",
        "### Result",
        "",
        format_table([row], "markdown", legend=False),
        "",
        "### Analysis",
        "",
        text_or_none(analysis_text(run, experiments)),
        "",
        link,
        "",
    ]


def final_section(run: Run, figures: FigureWriter, data_dir: str | Path | None) -> list[str]:
    lines = [f"## Final model: {run.name}", ""]
    spec = run_dataset(run)
    items = shown_items(spec)
    predictions = load_predictions(run)
    if predictions is None:
        return lines + [
            f"_{run.name} has no predictions.npz (written when a run finishes), so there is "
            f"no confusion matrix, per-class accuracy or misclassified {items}._",
            "",
        ]
    classes = spec.classes
    labels, preds = predictions["label"], predictions["pred"]
    confusion = confusion_matrix(labels, preds, len(classes))
    accuracy = per_class_accuracy(confusion)
    errors = int(np.sum(labels != preds))
    lines += [
        f"{len(labels):,} test images, {errors:,} misclassified: "
        f"{100.0 * (len(labels) - errors) / len(labels):.2f}% accuracy.",
        "",
        figures.write(confusion_figure(confusion, classes), "final-confusion", "Confusion matrix"),
        "",
        "### Per-class accuracy",
        "",
        figures.write(per_class_figure(accuracy, classes), "final-per-class", "Per-class accuracy"),
        "",
        "| class | test images | correct | accuracy (%) | most often mistaken for |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for k, name in enumerate(classes):
        mistakes = confusion[k].copy()
        mistakes[k] = 0
        worst = f"{classes[mistakes.argmax()]} ({mistakes.max()})" if mistakes.any() else "—"
        total = int(confusion[k].sum())
        lines.append(f"| {name} | {total:,} | {confusion[k, k]:,} | {accuracy[k]:.2f} | {worst} |")
    lines += ["", f"### Misclassified {items}", ""]
    if errors == 0:
        return lines + ["_No test image is misclassified._", ""]
    images = matching_test_images(labels, data_dir, spec.name)
    if images is None:
        print(
            "mnistlab: warning: no matching test images in the data folder; "
            f"the report leaves out the misclassified {items}",
            file=sys.stderr,
        )
        lines.append(
            "_Not shown: the test images are not in the data folder or do not match this run's "
            f"predictions; run `{data.fetch_command(spec)}` (or pass --data-dir) and report "
            "again._"
        )
    else:
        fig = misclassified_figure(images, predictions, classes)
        lines.append(figures.write(fig, "final-misclassified", f"Misclassified test {items}"))
    return lines + [""]


def write_report(
    run_paths: list[str | Path],
    out: str | Path = "reports",
    final: str | Path | None = None,
    data_dir: str | Path | None = None,
    experiments: str | Path | None = "experiments",
) -> Path:
    """Write out/README.md and out/figures/*.png for the runs; returns the Markdown path.

    The folder is replaced as a whole, all or nothing (a folder holding other files than a
    report is refused); an interrupted earlier report's staging folder is removed.

    `final` is the run whose predictions are analysed (default: the last run); `experiments`
    is the folder whose TOML files hold each experiment's Analysis.
    """
    out = Path(out)
    check_report_folder(out)  # before any figure is drawn
    runs = [read_run(path) for path in find_runs(run_paths)]
    final_run = read_run(final) if final else runs[-1]
    rows = [summarize_run(run) for run in runs]
    figures = FigureWriter(out / "figures")
    with matplotlib.style.context("default"):
        lines = [
            "# Experiments",
            "",
            f"{len(runs)} run{'s' if len(runs) != 1 else ''}, in order. Accuracies are test-set "
            "percentages unless named otherwise; each run's table row is explained under the "
            "full table at the end.",
            "",
        ]
        for run, row in zip(runs, rows, strict=True):
            warn_if_partial(run)
            lines += experiment_section(
                run, row, figures, Path(experiments) if experiments else None
            )
        lines += [
            "## Across experiments",
            "",
            figures.write(
                params_figure(rows, final_run.name),
                "params-accuracy",
                "Test accuracy against parameters",
            ),
            "",
            format_table(rows, "markdown"),
            "",
        ]
        lines += final_section(final_run, figures, data_dir)
    path = out / README
    text = "\n".join(lines).rstrip("\n") + "\n"
    # All or nothing: the whole folder is staged beside `out` and swapped in at the end, so a
    # failure or a kill at any moment leaves the old report complete, or the new one.
    replace_folder(out, {**figures.files, path: text.encode()}, check=check_report_folder)
    return path


README, FIGURES = "README.md", "figures"
# What a killed writer of an older version left inside a report: `.README.md.<hex>.tmp`.
LEFTOVER = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def check_report_folder(out: Path) -> None:
    """A report replaces its whole folder: refuse one that holds anything but a report
    (README.md, figures/*.png), so that no file of the user's is lost with the old report."""
    try:
        if not out.is_dir():
            return
        for entry in out.iterdir():
            if entry.name == README and entry.is_file() or LEFTOVER.fullmatch(entry.name):
                continue
            if entry.name == FIGURES and entry.is_dir() and not entry.is_symlink():
                stray = [
                    f
                    for f in entry.iterdir()
                    if not (f.suffix == ".png" or LEFTOVER.fullmatch(f.name)) or not f.is_file()
                ]
                if not stray:
                    continue
                entry = stray[0]
            raise MnistlabError(
                f"{out}: holds {entry.relative_to(out)}, which is not part of a report "
                f"(README.md and figures/*.png); a report replaces its whole folder: give "
                f"{arg('out')} a new folder or one holding only a report"
            )
    except OSError as e:
        raise MnistlabError(
            f"{out}: cannot read the report folder ({e.strerror or e}); give {arg('out')} a "
            "readable folder"
        ) from None


def plot_run(run_path: str | Path, out: str | Path) -> Path:
    """Write the accuracy and loss curves of one run as a PNG at `out`."""
    run = read_run(run_path)
    warn_if_partial(run)
    with matplotlib.style.context("default"):
        write_files({Path(out): png_bytes(curves_figure(run))})
    return Path(out)
