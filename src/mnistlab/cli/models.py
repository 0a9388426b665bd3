"""`mnistlab models`, `mnistlab summary` and `mnistlab inspect`."""

import argparse
import json

from mnistlab.cli.common import Command, add_data_dir, add_device, add_threads


def add_commands(sub, command: Command) -> None:
    p = command(sub, "models", "list registered models with parameter counts")
    p.set_defaults(handler=models)
    p = command(sub, "summary", "per-layer shapes, params, receptive field, jump, MACs")
    p.add_argument(
        "model",
        help="registered name, package.module:callable or path/to/file.py:callable (an "
        "nn.Module class or a factory taking no arguments), an experiment .toml or final",
    )
    p.add_argument("--input", default="1,28,28", help="input shape C,H,W")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")
    p.set_defaults(handler=summary)

    p = command(
        sub,
        "inspect",
        "what each layer sees of one digit: receptive fields checked against gradients, "
        "feature maps, first-layer kernels (index.html and a PNG per layer)",
    )
    p.add_argument(
        "model_or_run",
        metavar="MODEL_OR_RUN",
        help="registered name, package.module:callable or path/to/file.py:callable, an "
        "experiment .toml, a run directory, a weights file or final",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--digit", type=int, default=None, help="index of a test image (default: 0)")
    which.add_argument(
        "--image",
        default=None,
        help="an image file, made MNIST-style as predict does (default: a test image)",
    )
    p.add_argument(
        "--unit",
        default=None,
        metavar="LAYER,Y,X",
        help="also draw this unit's receptive field: a layer's name or number from `mnistlab "
        "summary`, then the unit's row and column, e.g. Conv2d-5,3,4 (default: each layer's "
        "centre unit only)",
    )
    p.add_argument(
        "--out", required=True, help="folder for index.html and the PNGs (replaced as a whole)"
    )
    add_device(p)
    add_threads(p)
    add_data_dir(p)
    p.set_defaults(handler=inspect)


def models(args: argparse.Namespace) -> int:
    """One aligned line per registered model: name, params, MACs, final RF, description."""
    from mnistlab.models import build, list_models, model_doc
    from mnistlab.models.summary import model_stats

    header = ["Model", "Params", "MACs", "RF", "Description"]
    rows = []
    for name in list_models():
        stats = model_stats(build(name))
        numbers = [f"{stats['params']:,}", f"{stats['macs']:,}", str(stats["rf"])]
        rows.append([name, *numbers, model_doc(name)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        name, *numbers, doc = row
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(numbers, widths[1:], strict=True)]
        print("  ".join([*cells, doc]))
    return 0


def summary(args: argparse.Namespace) -> int:
    import mnistlab.api as api
    from mnistlab.models.summary import parse_shape

    result = api.summary(args.model, parse_shape(args.input))
    if args.format == "json":
        print(json.dumps({"model": args.model, **result.to_dict()}, indent=2))
    else:
        print(result)
    return 0


def inspect(args: argparse.Namespace) -> int:
    import mnistlab.api as api

    result = api.inspect(
        args.model_or_run,
        digit=args.digit,
        image=args.image,
        unit=args.unit,
        out=args.out,
        device=args.device,
        threads=args.threads,
        data_dir=args.data_dir,
    )
    print(result)
    return 0
