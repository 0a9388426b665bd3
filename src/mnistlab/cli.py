"""The `mnistlab` command: a thin argparse layer over the library modules.

Each subcommand's handler imports what it needs, so `mnistlab --help` stays fast.
A MnistlabError becomes one line on stderr and exit status 1; anything else is a bug.
"""

import argparse
import sys

from mnistlab.errors import MnistlabError


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="data root holding MNIST/raw/ (default: $MNISTLAB_DATA or ~/.cache/mnistlab)",
    )


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )


# ----------------------------------------------------------------------------- data


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mnistlab import fetch

    fetch.fetch(args.dataset, root=args.data_dir, source_dir=args.source, verify=not args.no_verify)
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from mnistlab import fetch

    fetch.verify(args.dataset, root=args.data_dir)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from mnistlab import fetch

    fetch.info(args.dataset, root=args.data_dir)
    return 0


# ----------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from mnistlab.summary import print_models

    print_models()
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from mnistlab.summary import parse_shape, print_summary

    print_summary(args.model, parse_shape(args.input), args.format)
    return 0


# ----------------------------------------------------------------------------- training


def cmd_train(args: argparse.Namespace) -> int:
    from mnistlab.train import train_from_cli

    train_from_cli(args)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnistlab.evaluate import evaluate_from_cli

    evaluate_from_cli(args)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mnistlab.bench import bench_from_cli

    bench_from_cli(args)
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from mnistlab.confirm import confirm_from_cli

    if args.seeds < 1:
        raise MnistlabError(f"--seeds {args.seeds}: must be >= 1")
    confirm_from_cli(args)
    return 0


def cmd_search_run(args: argparse.Namespace) -> int:
    from mnistlab.search import run_from_cli

    run_from_cli(args)
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    from mnistlab.searchreport import report_from_cli

    report_from_cli(args)
    return 0


# ----------------------------------------------------------------------------- results


def cmd_compare(args: argparse.Namespace) -> int:
    from mnistlab.compare import compare_from_cli

    compare_from_cli(args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mnistlab.report import report_from_cli

    report_from_cli(args)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from mnistlab.report import plot_from_cli

    plot_from_cli(args)
    return 0


# ----------------------------------------------------------------------------- use


def cmd_predict(args: argparse.Namespace) -> int:
    from mnistlab.predict import predict_from_cli

    return predict_from_cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    from mnistlab.export import export_from_cli

    export_from_cli(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistlab",
        description="Design, train, inspect and ship compact CNNs on MNIST-style digits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # data
    data = sub.add_parser("data", help="fetch, verify and describe datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("fetch", help="fetch the dataset's four IDX files if missing")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument(
        "--from", dest="source", default=None, metavar="DIR", help="copy from a folder first"
    )
    p.add_argument("--no-verify", action="store_true", help="skip SHA-256 checks (custom data)")
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_fetch)
    p = data_sub.add_parser("verify", help="check the files' SHA-256 digests")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_verify)
    p = data_sub.add_parser("info", help="sizes, class counts, pixel mean/std")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_info)

    # models
    p = sub.add_parser("models", help="list registered models with parameter counts")
    p.set_defaults(handler=cmd_models)
    p = sub.add_parser("summary", help="per-layer shapes, params, receptive field, jump, MACs")
    p.add_argument(
        "model",
        help="registered name, package.module:callable or path/to/file.py:callable (an "
        "nn.Module class or a factory taking no arguments)",
    )
    p.add_argument("--input", default="1,28,28", help="input shape C,H,W (default 1,28,28)")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.set_defaults(handler=cmd_summary)

    # train
    p = sub.add_parser("train", help="train an experiment (TOML) or a model by name")
    p.add_argument("experiment", nargs="?", default=None, help="experiment TOML file")
    p.add_argument("--model", default=None, help="registered model name (overrides the file)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--val-size", type=int, default=None, help="hold out N training images")
    p.add_argument(
        "--limit-train", type=int, default=None, help="use only the first N train images"
    )
    p.add_argument("--limit-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--out", default=None, help="run directory (default runs/<name>-<timestamp>)")
    p.add_argument("--resume", default=None, metavar="RUNDIR", help="continue a stopped run")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also write TensorBoard event files here (needs mnistlab[tensorboard])",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="train through torch.compile (faster epochs after a one-time compile; needs a C++ "
        "compiler on the CPU)",
    )
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser(
        "evaluate", help="metrics of a run directory or checkpoint (test images, or --split train)"
    )
    p.add_argument("target", metavar="RUNDIR_OR_CHECKPOINT")
    p.add_argument("--format", default="text", choices=["text", "json"])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "train"],
        help="images to evaluate on (train: how well the weights fit what they learned from)",
    )
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("bench", help="this trainer against the notebook's loop, interleaved")
    p.add_argument("model", nargs="?", default="seed")
    p.add_argument("--batches", type=int, default=50, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each loop")
    p.add_argument("--compile", action="store_true", help="also time the trainer compiled")
    p.add_argument(
        "--vs",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="also time these models in the same trainer and rounds (compiled with --compile)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser(
        "confirm",
        help="train experiments with every seed and thread setting; one table of last-3 test "
        "accuracies (the robustness protocol)",
    )
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="experiment TOML files")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N (default 3)")
    p.add_argument(
        "--threads", default="1,2", help="CPU thread settings, comma-separated (default 1,2)"
    )
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument("--results", default="results", help="where runs go (default results/)")
    p.add_argument("--out", default=None, help="also write the table (Markdown) here")
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_confirm)

    add_search(sub)

    # results
    p = sub.add_parser("compare", help="one row per run: params, RF, accuracy, gap, speed")
    p.add_argument("runs", nargs="+", metavar="RUNDIR")
    p.add_argument("--format", default="text", choices=["text", "markdown", "json"])
    p.add_argument("--out", default=None, help="write the table to this file")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("report", help="Markdown report with figures from run directories")
    p.add_argument("runs", nargs="+", metavar="RUNDIR")
    p.add_argument("--out", default="reports", help="output folder (default reports/)")
    p.add_argument(
        "--final", default=None, metavar="RUNDIR", help="final model (default: last run)"
    )
    p.add_argument(
        "--experiments",
        default="experiments",
        help="folder of experiment files whose Analysis the report shows (default experiments/)",
    )
    add_data_dir(p)
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("plot", help="accuracy and loss curves of one run (PNG)")
    p.add_argument("run", metavar="RUNDIR")
    p.add_argument("--out", required=True, help="PNG file to write, e.g. curves.png")
    p.set_defaults(handler=cmd_plot)

    # use
    p = sub.add_parser("predict", help="predict digits in image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", default=None, help="run dir or weights (default: shipped model)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--show-preprocessed", default=None, metavar="DIR")
    p.add_argument("--no-preprocess", action="store_true", help="feed 28x28 images as they are")
    add_device(p)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("export", help="export a model to ONNX or TorchScript")
    p.add_argument("--checkpoint", default=None, help="run dir or weights (default: shipped model)")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_export)
    return parser


def add_search(sub) -> None:
    search = sub.add_parser("search", help="architecture search on Optuna under a budget")
    search_sub = search.add_subparsers(dest="search_command", required=True, metavar="ACTION")
    p = search_sub.add_parser(
        "run", help="run (or continue) a study: trials of a search space, by W local workers"
    )
    p.add_argument("space", metavar="SPACE", help="search space TOML file (see searches/)")
    p.add_argument("--trials", type=int, required=True, help="total trials of the study, any state")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--study", default=None, help="study name (default: the space file's stem)")
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL shared by all workers (default: sqlite:///RUNS/STUDY/study.db)",
    )
    p.add_argument(
        "--runs",
        default="results/search",
        help="trials go to RUNS/STUDY/trial-N (default results/search)",
    )
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per worker (default: cores / workers)"
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="S",
        help="running trials beat every S seconds; one silent for 3 beats is failed (default 30)",
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_search_run)

    p = search_sub.add_parser("report", help="Markdown report of a study with figures")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, metavar="URL", help="as for search run")
    p.add_argument("--runs", default="results/search", help="as for search run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--export-best",
        type=int,
        default=0,
        metavar="K",
        help="also write the K best trials as experiment files (60,000 training images, test "
        "every epoch) for `mnistlab confirm`",
    )
    p.set_defaults(handler=cmd_search_report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MnistlabError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `mnistlab summary seed | head`
        sys.stderr.close()
        return 1
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
