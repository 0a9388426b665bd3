"""`mnistlab models` and `mnistlab summary`."""

import argparse
import json

from mnistlab.cli.common import Command


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
