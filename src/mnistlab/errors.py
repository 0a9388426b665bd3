"""The one exception type users see: a one-line message naming the thing and the fix.

Messages name arguments as the caller wrote them: a keyword (`device=`, `optimizer={'lr': ...}`)
for a Python caller, a flag (`--device`, `--lr`) under the command line, which sets the
spelling for the call it makes (`spelling`).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class MnistlabError(Exception):
    """A problem with the user's input or environment, reported as one line, exit status 1.

    The message names the file, key or value at fault and says what to do about it.
    Anything else that escapes is a bug and keeps its traceback.
    """


def keyword(key: str) -> str:
    """A Python caller's spelling: 'device' -> 'device=', 'optimizer.lr' ->
    "optimizer={'lr': ...}"."""
    table, _, leaf = key.rpartition(".")
    return f"{table}={{{leaf!r}: ...}}" if table else f"{key}="


_SPELLING: ContextVar[Callable[[str], str]] = ContextVar("spelling", default=keyword)


def arg(key: str) -> str:
    """How the current caller spells the argument (or config key) `key`."""
    return _SPELLING.get()(key)


def given(key: str, value: object) -> str:
    """An argument with its value as the caller wrote it: "device='mps'",
    "optimizer={'lr': -1.0}", or '--device mps' (a switch: just its flag) under the CLI."""
    if _SPELLING.get() is keyword:
        table, _, leaf = key.rpartition(".")
        return f"{table}={{{leaf!r}: {value!r}}}" if table else f"{key}={value!r}"
    name = arg(key)
    return name if isinstance(value, bool) else f"{name} {value}"


@contextmanager
def spelling(spell: Callable[[str], str]) -> Iterator[None]:
    """Within the block, errors name arguments as `spell` writes them."""
    token = _SPELLING.set(spell)
    try:
        yield
    finally:
        _SPELLING.reset(token)
