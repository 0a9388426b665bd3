"""The model registry: zero-argument constructors by name (as in timm), and former names.

The model families (compact.py, fast.py, peer.py, seed.py) register theirs on import;
`mnistlab.models.build` is how anything is built from a name. A leaf: it imports nothing of
the package, so every family can import it.
"""

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[[], nn.Module]] = {}  # name -> zero-argument constructor
# Former names of renamed models -> their names now. Committed run.json files, checkpoints and
# the shipped weights carry the names they were written with, so those still build; only the
# names now are listed.
ALIASES = {"gap_final": "gap_wide_tail"}


def register_model(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Decorator: register a zero-argument model constructor under its function name."""
    if fn.__name__ in MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    MODELS[fn.__name__] = fn
    return fn


def list_models(aliases: bool = False) -> list[str]:
    """Names of all registered models, in registration order (and their former names)."""
    return list(MODELS) + (list(ALIASES) if aliases else [])


def model_doc(name: str) -> str:
    """The first line of a registered model's docstring."""
    return (MODELS[name].__doc__ or "").strip().split("\n")[0]
