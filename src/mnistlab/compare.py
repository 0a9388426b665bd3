"""One row per run: size, receptive field, accuracy, over-fitting gap, speed, finished or not.

A run is a directory with config.toml, run.json and metrics.jsonl (see checkpoint.py).
Arguments may name run directories or folders of them (`results/` means every subfolder
holding a metrics.jsonl, sorted by name).
"""

import argparse
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.checkpoint import atomic_write_text, read_json, read_metrics
from mnistlab.errors import MnistlabError

TARGET_ACC = 99.4  # test accuracy (%) the experiments aim for
LAST_N = 3  # epochs averaged for a steadier "final" accuracy than the last epoch alone

RUN_INFO_KEYS = ("params", "macs", "rf", "epochs_planned")
EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")

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
    f"first ≥{TARGET_ACC}",
    "s/epoch",
    "train s",
    "trained on",
    "finished",
]
LEGEND = "\n".join(
    [
        "Accuracies in %.",
        "gap = best train accuracy − best test accuracy (points; negative: test above train).",
        f"last-{LAST_N} test = mean test accuracy of the last {LAST_N} epochs (all, if fewer).",
        f"last-{LAST_N} val = the same on the validation images held out of training "
        "(— when the run held none out).",
        f"first ≥{TARGET_ACC} = first epoch with test accuracy ≥ {TARGET_ACC}%.",
        "train s = seconds of training in all epochs (evaluation not included).",
        "trained on = device, and CPU threads (s/epoch depends on both; so do the last digits).",
    ]
)
FORMATS = ("text", "markdown", "json")


@dataclass
class Run:
    name: str
    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        """All planned epochs are in metrics.jsonl and the trainer marked the run finished."""
        return (
            len(self.metrics) >= self.info["epochs_planned"] and self.info.get("finished") is True
        )

    @property
    def progress(self) -> str:
        return f"{len(self.metrics)}/{self.info['epochs_planned']} epochs"


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories named by `paths`: each is a run directory or a folder of them."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.jsonl").is_file():
            candidates = [path]
        elif path.is_dir():
            candidates = sorted(p for p in path.iterdir() if (p / "metrics.jsonl").is_file())
            if not candidates:
                raise MnistlabError(
                    f"{path}: not a run directory (no metrics.jsonl) and holds none; "
                    "pass run directories written by `mnistlab train` or a folder of them"
                )
        else:
            raise MnistlabError(f"{path}: no such directory")
        # The same run named twice (directly and through its folder) is listed once.
        found += [p for p in candidates if p.resolve() not in {f.resolve() for f in found}]
    return found


def load_run(path: str | Path) -> Run:
    """Read a run directory's config.toml, run.json and metrics.jsonl, checking what we use."""
    path = Path(path)
    config_path = path / "config.toml"
    if not config_path.is_file():
        raise MnistlabError(f"{path}: no config.toml; is this a run directory?")
    try:
        config = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise MnistlabError(f"{config_path}: cannot read ({e})") from e
    if not (path / "run.json").is_file():
        raise MnistlabError(f"{path}: no run.json; is this a run directory?")
    info = read_json(path / "run.json")
    missing = [k for k in RUN_INFO_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise MnistlabError(
            f"{path / 'run.json'}: missing {', '.join(missing)}; the file is damaged"
        )
    metrics = read_metrics(path)
    if not metrics:
        raise MnistlabError(
            f"{path}: metrics.jsonl has no epochs yet; wait for the first epoch to finish"
        )
    for record in metrics:
        missing = [k for k in EPOCH_KEYS if k not in record]
        if missing:
            raise MnistlabError(
                f"{path / 'metrics.jsonl'}: epoch {record.get('epoch', '?')} lacks "
                f"{', '.join(missing)}; the file is damaged"
            )
    return Run(name=path.resolve().name, path=path, config=config, info=info, metrics=metrics)


def summarize_run(run: Run) -> dict[str, Any]:
    """The run's compare row (accuracies in %, as in metrics.jsonl)."""
    metrics = run.metrics
    best = max(metrics, key=lambda r: r["test_acc"])  # the earliest epoch on ties
    last = metrics[-LAST_N:]
    best_train = max(r["train_acc"] for r in metrics)
    reached = [r["epoch"] for r in metrics if r["test_acc"] >= TARGET_ACC]
    return {
        "name": run.name,
        "experiment": run.config.get("name", run.name),
        "model": run.info.get("model", run.config.get("model")),
        "params": run.info["params"],
        "macs": run.info["macs"],
        "rf": run.info["rf"],
        "epochs": len(metrics),
        "epochs_planned": run.info["epochs_planned"],
        "best_test_acc": best["test_acc"],
        "best_test_epoch": best["epoch"],
        "last_test_acc": metrics[-1]["test_acc"],
        "last3_test_acc": round(sum(r["test_acc"] for r in last) / len(last), 4),
        "last3_val_acc": (
            round(sum(r["val_acc"] for r in last) / len(last), 4)
            if all("val_acc" in r for r in last)
            else None
        ),
        "best_train_acc": best_train,
        "train_test_gap": round(best_train - best["test_acc"], 4),  # best train − best test
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
    return [
        row["name"],
        f"{row['params']:,}",
        f"{row['macs'] / 1e6:.2f}M",
        str(row["rf"]),
        f"{row['epochs']}/{row['epochs_planned']}",
        f"{row['best_test_acc']:.2f}",
        str(row["best_test_epoch"]),
        f"{row['last_test_acc']:.2f}",
        f"{row['last3_test_acc']:.2f}",
        "—" if row["last3_val_acc"] is None else f"{row['last3_val_acc']:.2f}",
        f"{row['best_train_acc']:.2f}",
        f"{row['train_test_gap']:+.2f}",
        "—" if first is None else str(first),
        f"{row['seconds_per_epoch']:.1f}",
        f"{row['train_seconds']:.0f}",
        row["trained_on"],
        "yes" if row["finished"] else "no",
    ]


def format_table(rows: list[dict[str, Any]], fmt: str = "text", legend: bool = True) -> str:
    """Rows as aligned text columns, a GitHub Markdown table or a JSON list (no final newline)."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt not in FORMATS:
        raise MnistlabError(f"unknown table format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    table = [HEADERS] + [_cells(row) for row in rows]
    if fmt == "markdown":
        # The run name is left-aligned, every number right-aligned.
        rule = ["---"] + ["---:"] * (len(HEADERS) - 1)
        table.insert(1, rule)
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in table]
    else:
        widths = [max(len(cells[i]) for cells in table) for i in range(len(HEADERS))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            for cells in table
        ]
    if legend:
        lines += ["", LEGEND]
    return "\n".join(lines)


def compare_from_cli(args: argparse.Namespace) -> None:
    rows = [summarize_run(load_run(path)) for path in find_runs(args.runs)]
    table = format_table(rows, args.format)
    if args.out:
        atomic_write_text(Path(args.out), table + "\n")
        print(f"wrote {args.out} ({len(rows)} runs)")
    else:
        print(table)
