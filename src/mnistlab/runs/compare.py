"""One row per run: size, receptive field, accuracy, over-fitting gap, speed, finished or not.

A run is a directory with config.toml, run.json and metrics.jsonl (see checkpoint.py).
Arguments may name run directories or folders of them (`results/` means every subfolder
holding a metrics.jsonl, sorted by name).
"""

import json
from typing import Any

from mnistlab.config import LAST_N
from mnistlab.data.datasets import DATASETS, DatasetSpec, recorded_dataset
from mnistlab.errors import MnistlabError
from mnistlab.runs.rundir import Run

# Each run is measured against its own dataset's target. A table whose runs share one shows
# it in the heading ("first ≥99.4"); a table mixing datasets says "first ≥ target".
TARGET_COLUMN = "first ≥ target"

HEADERS = [
    "run",
    "params",
    "MACs",
    "RF",
    "epochs",
    "best test",
    "at epoch",
    "last test",
    f"last-{LAST_N} test",
    f"last-{LAST_N} val",
    "best train",
    "gap",
    TARGET_COLUMN,
    "s/epoch",
    "train s",
    "trained on",
    "finished",
]
# The legend, one line per column it explains (None: the whole table).
LEGEND_LINES = [
    (None, "Accuracies in %."),
    ("gap", "gap = best train accuracy − best test accuracy (points; negative: test above train)."),
    (
        f"last-{LAST_N} test",
        f"last-{LAST_N} test = mean test accuracy of the last {LAST_N} epochs (all, if fewer).",
    ),
    (
        f"last-{LAST_N} val",
        f"last-{LAST_N} val = the same on the validation images held out of training "
        "(— when the run held none out).",
    ),
    (
        TARGET_COLUMN,
        f"{TARGET_COLUMN} = first epoch with test accuracy ≥ its dataset's target ("
        + ", ".join(f"{spec.name} {spec.target:g}%" for spec in DATASETS.values())
        + ").",
    ),
    ("train s", "train s = seconds of training in all epochs (evaluation not included)."),
    (
        "trained on",
        "trained on = device, and CPU threads (s/epoch depends on both; so do the last digits).",
    ),
    (None, "— = not measured (a run that read the test set only at its end, or never)."),
]
FORMATS = ("text", "markdown", "json")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def run_dataset(run: Run) -> DatasetSpec:
    """The dataset a run trained on, from its config.toml (MNIST when it records none)."""
    return recorded_dataset(run.config)


def summarize_run(run: Run) -> dict[str, Any]:
    """The run's compare row (accuracies in %, as in metrics.jsonl)."""
    metrics = run.metrics
    spec = run_dataset(run)
    tested = [r for r in metrics if "test_acc" in r]
    # The earliest epoch on ties; runs that never read the test set have no best.
    best = max(tested, key=lambda r: r["test_acc"]) if tested else None
    last = metrics[-LAST_N:]
    best_train = max(r["train_acc"] for r in metrics)
    reached = [r["epoch"] for r in tested if r["test_acc"] >= spec.target]
    last_test = [r["test_acc"] for r in last if "test_acc" in r]
    last_val = [r["val_acc"] for r in last if "val_acc" in r]
    return {
        "name": run.name,
        "experiment": run.experiment,
        "model": run.info.get("model", run.config.get("model")),
        "dataset": spec.name,
        "target": spec.target,
        "params": run.info["params"],
        "macs": run.info["macs"],
        "rf": run.info["rf"],
        "epochs": len(metrics),
        "epochs_planned": run.info["epochs_planned"],
        "best_test_acc": best["test_acc"] if best else None,
        "best_test_epoch": best["epoch"] if best else None,
        "last_test_acc": metrics[-1].get("test_acc"),
        "last3_test_acc": _mean(last_test) if len(last_test) == len(last) else None,
        "last3_val_acc": _mean(last_val) if len(last_val) == len(last) else None,
        "best_train_acc": best_train,
        # best train − best test
        "train_test_gap": round(best_train - best["test_acc"], 4) if best else None,
        "first_epoch_target": reached[0] if reached else None,
        "seconds_per_epoch": round(sum(r["seconds"] for r in metrics) / len(metrics), 4),
        "train_seconds": round(sum(r["seconds"] for r in metrics), 3),
        "trained_on": trained_on(run.info),
        "finished": run.finished,
    }


def trained_on(info: dict[str, Any]) -> str:
    """'cpu, 2 threads', 'cpu, 1 thread, compiled', 'cuda', from a run.json."""
    parts = [info.get("device", "?")]
    if parts[0] == "cpu" and "threads" in info:
        parts.append(f"{info['threads']} thread{'s' if info['threads'] != 1 else ''}")
    if info.get("compile"):
        parts.append("compiled")
    return ", ".join(parts)


def _cells(row: dict[str, Any]) -> list[str]:
    first = row["first_epoch_target"]

    def pct(value: float | None, sign: str = "") -> str:
        return "—" if value is None else f"{value:{sign}.2f}"

    return [
        row["name"],
        f"{row['params']:,}",
        f"{row['macs'] / 1e6:.2f}M",
        str(row["rf"]),
        f"{row['epochs']}/{row['epochs_planned']}",
        pct(row["best_test_acc"]),
        "—" if row["best_test_epoch"] is None else str(row["best_test_epoch"]),
        pct(row["last_test_acc"]),
        pct(row["last3_test_acc"]),
        pct(row["last3_val_acc"]),
        pct(row["best_train_acc"]),
        pct(row["train_test_gap"], "+"),
        "—" if first is None else str(first),
        f"{row['seconds_per_epoch']:.1f}",
        f"{row['train_seconds']:.0f}",
        row["trained_on"],
        "yes" if row["finished"] else "no",
    ]


def target_heading(rows: list[dict[str, Any]]) -> str:
    """The target column's heading: "first ≥99.4" when every row has that target."""
    targets = {row["target"] for row in rows}
    return f"first ≥{targets.pop():g}" if len(targets) == 1 else TARGET_COLUMN


def legend_lines(rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    """The legend of the shown columns (None: all); a target column naming its line says it."""
    heading = target_heading(rows)
    lines = []
    for head, text in LEGEND_LINES:
        if head is not None and columns is not None and head not in columns:
            continue
        if head == TARGET_COLUMN and heading != TARGET_COLUMN:
            text = f"{heading} = first epoch with test accuracy ≥ {rows[0]['target']:g}%."
        lines.append(text)
    return lines


def parse_columns(text: str) -> list[str]:
    """'run,params,last-3 test' -> those headers, checked (the run column always comes first).

    The target column may be named as a one-dataset table heads it ("first ≥99.4")."""
    aliases = {f"first ≥{spec.target:g}": TARGET_COLUMN for spec in DATASETS.values()}
    columns = [aliases.get(c.strip(), c.strip()) for c in text.split(",") if c.strip()]
    unknown = [c for c in columns if c not in HEADERS]
    if unknown or not columns:
        raise MnistlabError(
            f"--columns: unknown column {unknown[0] if unknown else text!r}; "
            f"choose from: {', '.join(HEADERS)}"
        )
    return ["run"] + [c for c in columns if c != "run"]


def format_table(
    rows: list[dict[str, Any]],
    fmt: str = "text",
    legend: bool = True,
    columns: list[str] | None = None,
) -> str:
    """Rows as aligned text columns, a GitHub Markdown table or a JSON list (no final newline).

    `columns` (headers, the run first) narrows a text or Markdown table and its legend."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt not in FORMATS:
        raise MnistlabError(f"unknown table format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    shown = [HEADERS.index(c) for c in columns] if columns else list(range(len(HEADERS)))
    headers = [target_heading(rows) if h == TARGET_COLUMN else h for h in HEADERS]
    table = [[cells[i] for i in shown] for cells in [headers] + [_cells(row) for row in rows]]
    if fmt == "markdown":
        # The run name is left-aligned, every number right-aligned.
        rule = ["---"] + ["---:"] * (len(shown) - 1)
        table.insert(1, rule)
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
    else:
        widths = [max(len(cells[i]) for cells in table) for i in range(len(shown))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            for cells in table
        ]
    if legend:
        lines += ["", *legend_lines(rows, [HEADERS[i] for i in shown])]
    return "\n".join(lines)
