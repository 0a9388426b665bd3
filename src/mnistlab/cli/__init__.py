"""The `mnistlab` command: argument parsing only, one module per command group.

Each command parses its flags, calls one function of the Python API (mnistlab.api) or of the
library with the same options as keywords, and prints. Handlers import what they need, so
`mnistlab --help` stays fast. A MnistlabError becomes one line on stderr and exit status 1,
naming flags where the API would name keywords (errors.spelling); anything else is a bug.
"""

import argparse
import sys

from mnistlab.cli import bench, data, models, results, search, train, use
from mnistlab.cli.common import HelpFormatter, Parser, command, flag
from mnistlab.errors import MnistlabError, spelling

GROUPS = (data, models, train, bench, results, search, use)  # in `mnistlab --help` order


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnistlab",
        description="Design, train, inspect and ship compact CNNs on MNIST-style digits.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub, command)
    return parser


def os_error_line(e: OSError) -> str:
    reason = e.strerror or type(e).__name__
    where = f"{e.filename}: " if e.filename is not None else ""
    return f"{where}{reason}; check the path and that it can be read or written"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with spelling(flag):
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
