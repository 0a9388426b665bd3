"""`mnistlab train` and `mnistlab evaluate`: parse, call the API, print."""

import argparse
import json

from mnistlab.cli.common import (
    EXPERIMENT_DEFAULT,
    Command,
    DatasetNames,
    add_data_dir,
    add_device,
    add_threads,
    count,
    finite_float,
    int_in,
    positive,
)

# `train` flags that change the experiment -> the config key each one sets (an API override).
OVERRIDES = {
    "model": "model",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "optimizer.lr",
    "max_lr": "scheduler.max_lr",
    "seed": "seed",
    "val_size": "val_size",
    "limit_train": "limit_train",
    "limit_test": "limit_test",
    "dataset": "dataset",
}


def add_commands(sub, command: Command) -> None:
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
    p.add_argument(
        "--dataset",
        default=None,
        choices=DatasetNames(),
        help=f"dataset to train and test on (as for `data fetch`) {EXPERIMENT_DEFAULT}",
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
    p.set_defaults(handler=train)

    p = command(
        sub, "evaluate", "metrics of a run directory or checkpoint (test images, or --split train)"
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        metavar="RUNDIR_OR_CHECKPOINT",
        help="run directory, model.pt, checkpoint.pt or an exported .onnx file (default: the "
        "shipped model)",
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
    p.set_defaults(handler=evaluate)


def train_options(args: argparse.Namespace) -> tuple[str | None, dict, dict]:
    """The flags as `api.train`'s arguments: what to train, how to run, and config overrides
    (as the API takes them: optimizer={"lr": ...})."""
    overrides: dict = {}
    for dest, key in OVERRIDES.items():
        value = getattr(args, dest)
        if value is not None:
            table, _, leaf = key.rpartition(".")
            if table:
                overrides.setdefault(table, {})[leaf] = value
            else:
                overrides[key] = value
    target = args.experiment
    if target is None and not args.resume:
        target = overrides.pop("model", "seed")  # a model by name, with the default recipe
    run = dict(
        resume=args.resume,
        out=args.out,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
        tensorboard=args.tensorboard,
        progress=not args.quiet,
        data_dir=args.data_dir,
    )
    return target, run, overrides


def train(args: argparse.Namespace) -> int:
    import mnistlab.api as api

    target, run, overrides = train_options(args)
    result = api.train(target, **run, **overrides)
    last = result.metrics[-1]
    shown = (
        f"test accuracy {last['test_acc']:.2f}%"
        if "test_acc" in last
        else f"validation accuracy {last['val_acc']:.2f}%"
    )
    print(f"Done: {shown}, run directory {args.resume or args.out or result.run_dir}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    import mnistlab.api as api
    from mnistlab.training.metrics import format_report

    result = api.evaluate(
        args.target or api.FINAL,
        args.split,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        data_dir=args.data_dir,
    )
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(format_report(result, tuple(result["classes"]), args.split))
    return 0
