"""Model registry: models are registered by name and built by name (as in timm)."""

from collections.abc import Callable

from torch import nn

from mnistlab.errors import MnistlabError

_MODELS: dict[str, Callable[[], nn.Module]] = {}
# Former names of renamed models -> their names now. Committed run.json files, checkpoints and
# the shipped weights carry the names they were written with, so those still build; only the
# names now are listed.
ALIASES = {"gap_final": "gap_wide_tail"}


def register_model(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Decorator: register a zero-argument model constructor under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(aliases: bool = False) -> list[str]:
    """Names of all registered models, in registration order (and their former names)."""
    return list(_MODELS) + (list(ALIASES) if aliases else [])


def model_doc(name: str) -> str:
    """The first line of a registered model's docstring."""
    return (_MODELS[name].__doc__ or "").strip().split("\n")[0]


def create_model(name: str) -> nn.Module:
    """Build a registered model by name (or by a former name)."""
    name = ALIASES.get(name, name)
    if name not in _MODELS:
        known = ", ".join(_MODELS)
        raise MnistlabError(f"unknown model {name!r}; registered models: {known}")
    return _MODELS[name]()


NET = "net"  # the model name of an experiment whose [net] table declares its network


def build(model: str, net: dict | None = None) -> nn.Module:
    """The one way a run's network is built: from its [net] table if it has one, else the
    registered model by name. Training, checkpoints, summary and export all come here."""
    if net:
        from mnistlab.models.netspec import build_net

        return build_net(net)
    if model == NET:
        raise MnistlabError('model "net" needs a [net] table describing the network')
    return create_model(model)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Importing the families registers their models.
from mnistlab.models import compact, fast, peer, seed  # noqa: E402, F401
