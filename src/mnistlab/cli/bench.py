"""`mnistlab bench`: the trainer against the notebook's loop, or time to an accuracy."""

import argparse
import json
from pathlib import Path

from mnistlab.cli.common import Command, add_data_dir, add_device, add_threads, positive
from mnistlab.errors import MnistlabError


def add_commands(sub, command: Command) -> None:
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
    p.add_argument(
        "--inference",
        nargs="?",
        const="final",
        default=None,
        metavar="RUNDIR_OR_CHECKPOINT",
        help="instead: inference speed of a trained model (default: the shipped one) as torch "
        "eager, TorchScript, ONNX fp32 and int8, batch 1 and 256, 1 and 2 threads, in "
        "--rounds interleaved rounds; and file sizes",
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
    p.set_defaults(handler=bench)


def bench(args: argparse.Namespace) -> int:
    if args.time_to is not None:
        return time_to(args)
    if args.inference is not None:
        return inference(args)
    from mnistlab.bench.seed import bench, format_bench
    from mnistlab.device import pick_device, use_threads
    from mnistlab.fileio import atomic_write_text
    from mnistlab.training.trainer import check_compiler

    use_threads(args.threads)
    if args.compile:
        check_compiler()
    result = bench(
        args.model,
        args.batches,
        args.rounds,
        args.batch_size,
        pick_device(args.device),
        args.data_dir,
        args.compile,
        tuple(args.vs),
        args.bf16,
    )
    text = format_bench(result)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def time_to(args: argparse.Namespace) -> int:
    for flag, given in (("--compile", args.compile), ("--vs", args.vs), ("--bf16", args.bf16)):
        if given:
            raise MnistlabError(
                f"{flag} times the trainer's loop, not --time-to; a --time-to recipe says it in "
                "its experiment file (or --compiled EXPERIMENT)"
            )
    acc_text, *paths = args.time_to
    try:
        acc = float(acc_text)
    except ValueError:
        raise MnistlabError(f"--time-to {acc_text}: ACC must be a test accuracy in %") from None
    if not 0 < acc <= 100:
        raise MnistlabError(f"--time-to {acc_text}: ACC must be in (0, 100]")
    if not paths:
        raise MnistlabError("--time-to needs at least one experiment file after ACC")
    if args.out and Path(args.out).suffix != ".json":
        raise MnistlabError(f"--out {args.out}: name a .json file (the table goes beside it)")
    import torch

    from mnistlab.bench.timeto import format_time_to, time_to
    from mnistlab.config import load_config
    from mnistlab.device import pick_device, use_threads
    from mnistlab.training.trainer import check_compiler

    if args.compiled or any(load_config(p).compile for p in paths):
        check_compiler()
    use_threads(args.threads)
    result = time_to(
        acc,
        paths,
        args.seeds,
        torch.get_num_threads(),
        str(pick_device(args.device)),
        args.data_dir,
        Path(args.runs) if args.runs else None,
        progress=lambda line: print(line, flush=True),
        compiled=tuple(args.compiled),
    )
    text = format_time_to(result)
    print(text)
    if args.out:
        write_result(Path(args.out), result, text)
    return 0


def inference(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix != ".json":
        raise MnistlabError(f"--out {args.out}: name a .json file (the table goes beside it)")
    from mnistlab.bench.inference import bench_inference, format_inference

    result = bench_inference(args.inference, args.rounds, args.data_dir)
    text = format_inference(result)
    print(text)
    if args.out:
        write_result(Path(args.out), result, text)
    return 0


def write_result(out: Path, result: dict, text: str) -> None:
    """The result as JSON at `out` and its table beside it (.txt), written together."""
    from mnistlab.fileio import write_files

    write_files(
        {
            out: (json.dumps(result, indent=2) + "\n").encode(),
            out.with_suffix(".txt"): (text + "\n").encode(),
        }
    )
    print(f"wrote {out} and {out.with_suffix('.txt')}")
