"""`mnistlab search run|report`: architecture search on Optuna."""

import argparse
from pathlib import Path

from mnistlab.cli.common import (
    INT_MAX,
    MAX_THREADS,
    Command,
    add_data_dir,
    add_device,
    finite_float,
    int_in,
    positive,
)
from mnistlab.errors import MnistlabError


def add_commands(sub, command: Command) -> None:
    search = command(sub, "search", "architecture search on Optuna under a budget")
    search_sub = search.add_subparsers(dest="search_command", required=True, metavar="ACTION")
    p = command(
        search_sub, "run", "run (or continue) a study: trials of a search space, by W local workers"
    )
    p.add_argument("space", metavar="SPACE", help="search space TOML file (see searches/)")
    p.add_argument(
        "--trials",
        type=positive,
        required=True,
        help="trials of the study to reach, across all workers: complete, pruned, infeasible "
        "or failed by their own error (a trial lost with its worker is replaced)",
    )
    p.add_argument("--workers", type=positive, default=1, help="worker processes on this machine")
    p.add_argument("--study", default=None, help="study name (default: the space file's stem)")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL shared by all workers (default: sqlite:///RUNS/STUDY/study.db)",
    )
    p.add_argument("--runs", default="results/search", help="trials go to RUNS/STUDY/trial-N")
    p.add_argument(
        "--timeout",
        type=finite_float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: no limit)",
    )
    p.add_argument(
        "--threads",
        type=int_in(1, MAX_THREADS),
        default=None,
        help="threads per worker (default: cores / workers)",
    )
    p.add_argument(
        "--heartbeat",
        type=positive,
        default=30,
        metavar="S",
        help="running trials beat every S seconds; one silent for 3 of its own beats is "
        "failed and replaced",
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=run)

    p = command(search_sub, "report", "Markdown report of a study with figures")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, metavar="URL", help="as for search run")
    p.add_argument("--runs", default="results/search", help="as for search run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--export-best",
        type=int_in(0, INT_MAX),
        default=0,
        metavar="K",
        help="also write the K best trials as experiment files (60,000 training images, test "
        "every epoch) for `mnistlab confirm`",
    )
    p.set_defaults(handler=report)


def run(args: argparse.Namespace) -> int:
    options = dict(
        workers=args.workers,
        study=args.study,
        storage=args.storage,
        runs=args.runs,
        timeout=args.timeout,
        threads=args.threads,
        heartbeat=args.heartbeat,
        device=args.device,
        data_dir=args.data_dir,
    )
    if args.worker_index:  # a worker started by `search run --workers N`
        from mnistlab.search.run import run_search

        run_search(args.space, args.trials, worker_index=args.worker_index, **options)
    else:
        import mnistlab.api as api

        api.run_search(args.space, args.trials, **options)
    return 0


def report(args: argparse.Namespace) -> int:
    from mnistlab.search.report import write_search_report
    from mnistlab.search.run import default_storage, study_path

    storage = args.storage or default_storage(Path(args.runs), args.study)
    db = study_path(args.runs, args.study)
    if not args.storage and not db.is_file():
        raise MnistlabError(f"{db}: no such study file; pass --storage or --runs")
    path = write_search_report(storage, args.study, args.out, args.export_best)
    print(f"wrote {path}")
    return 0
