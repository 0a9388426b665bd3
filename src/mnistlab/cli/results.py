"""`mnistlab confirm`, `compare`, `report` and `plot`: runs into tables and figures."""

import argparse
import os
import sys
from pathlib import Path

from mnistlab.cli.common import Command, add_data_dir, add_device, int_list, positive
from mnistlab.errors import MnistlabError

EXPERIMENTS = "experiments"  # report's folder of experiment files, where there is one


def add_commands(sub, command: Command) -> None:
    p = command(
        sub,
        "confirm",
        "train experiments with every seed and thread setting; one table of last-3 test "
        "accuracies (the robustness protocol)",
    )
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="experiment TOML files")
    p.add_argument("--seeds", type=positive, default=3, help="seeds 1..N")
    p.add_argument(
        "--threads", type=int_list, default="1,2", help="CPU thread settings, comma-separated"
    )
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--results", default="results", help="where runs go")
    p.add_argument(
        "--no-train",
        action="store_true",
        help="only read finished runs (a missing one is an error): the table from what is there",
    )
    p.add_argument("--out", default=None, help="also write the table (Markdown) here")
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=confirm)

    p = command(sub, "compare", "one row per run: params, RF, accuracy, gap, speed")
    p.add_argument("runs", nargs="+", metavar="RUNDIR", help="run directories")
    p.add_argument(
        "--format", default="text", choices=["text", "markdown", "json"], help="table format"
    )
    p.add_argument("--out", default=None, help="write the table to this file (default: print it)")
    p.add_argument(
        "--columns",
        default=None,
        metavar="A,B,...",
        help="only these columns, by header (e.g. 'params,last-3 test,train s'; default: all)",
    )
    p.set_defaults(handler=compare)

    p = command(sub, "report", "Markdown report with figures from run directories")
    p.add_argument("runs", nargs="+", metavar="RUNDIR", help="run directories")
    p.add_argument("--out", default="reports", help="output folder")
    p.add_argument(
        "--final", default=None, metavar="RUNDIR", help="final model (default: the last run)"
    )
    p.add_argument(
        "--experiments",
        default=None,
        metavar="DIR",
        help="folder of experiment files whose Analysis the report shows (default: "
        f"{EXPERIMENTS}, where there is one)",
    )
    add_data_dir(p)
    p.set_defaults(handler=report)

    p = command(sub, "plot", "accuracy and loss curves of one run (PNG)")
    p.add_argument("run", metavar="RUNDIR", help="run directory")
    p.add_argument("--out", required=True, help="PNG file to write, e.g. curves.png")
    p.set_defaults(handler=plot)


def confirm(args: argparse.Namespace) -> int:
    import mnistlab.api as api

    table = api.confirm(
        args.experiments,
        seeds=args.seeds,
        threads=args.threads,
        compile=args.compile,
        results=args.results,
        train=not args.no_train,
        out=args.out,
        device=args.device,
        data_dir=args.data_dir,
    )
    print(table)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr if args.no_train else sys.stdout)
    return 0


def compare(args: argparse.Namespace) -> int:
    from mnistlab.fileio import atomic_write_text
    from mnistlab.runs.compare import format_table, parse_columns, summarize_run
    from mnistlab.runs.rundir import find_runs, read_run

    rows = [summarize_run(read_run(path)) for path in find_runs(args.runs)]
    columns = parse_columns(args.columns) if args.columns else None
    table = format_table(rows, args.format, columns=columns)
    if args.out:
        atomic_write_text(Path(args.out), table + "\n")
        print(f"wrote {args.out} ({len(rows)} runs)")
    else:
        print(table)
    return 0


def report(args: argparse.Namespace) -> int:
    from mnistlab.runs.report import write_report

    experiments = EXPERIMENTS
    if args.experiments is not None:  # given: it must be a folder, or it would be ignored
        experiments = args.experiments
        if not experiments.strip() or not Path(experiments).is_dir():
            what = "is not a folder" if os.path.lexists(experiments) else "no such folder"
            raise MnistlabError(
                f"--experiments {experiments!r}: {what if experiments.strip() else 'empty'}; "
                "give the folder of experiment .toml files whose Analysis the report shows"
            )
    path = write_report(args.runs, args.out, args.final, args.data_dir, experiments)
    print(f"wrote {path} and its figures in {path.parent / 'figures'}")
    return 0


def plot(args: argparse.Namespace) -> int:
    from mnistlab.runs.report import plot_run

    print(f"wrote {plot_run(args.run, args.out)}")
    return 0
