"""What every command shares: the parser's failure shape, argument types and common flags."""

import argparse
import math
from collections.abc import Callable, Iterator, Sequence

from mnistlab.errors import MnistlabError

INT_MAX = 2**31 - 1  # torch takes 32-bit sizes and thread counts
MAX_THREADS = 1024  # the same bound as mnistlab.device's (kept here: --help must not load torch)
EXPERIMENT_DEFAULT = "(default: the experiment's)"


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


Command = Callable[..., argparse.ArgumentParser]


def command(parent, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand; subparsers do not inherit the formatter, so every one shows its defaults."""
    return parent.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter, **kwargs
    )


# API arguments whose flag is not their name.
NAMED = {"input_size": "--input", "path": "--out", "train": "--no-train"}


def flag(key: str) -> str:
    """How the command line spells an API argument or config key in error messages
    (errors.spelling): 'optimizer.lr' -> '--lr', 'data_dir' -> '--data-dir'."""
    if key == "model_or_experiment":
        return "an experiment file"
    if key in NAMED:
        return NAMED[key]
    return "--" + key.rpartition(".")[2].replace("_", "-")


class DatasetNames(Sequence):
    """The dataset registry's names, read only when argparse needs them (from data.specs,
    which loads no torch: `--help` stays fast and an ONNX runtime needs none)."""

    def _names(self) -> list[str]:
        from mnistlab.data.specs import DATASETS

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
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """An argparse type: '1,2' -> [1, 2], each a whole number >= 1."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give whole numbers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return values


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


def add_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="mnist", choices=DatasetNames(), help="dataset name")


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", default=None, help="run dir or weights (default: the shipped model)"
    )
