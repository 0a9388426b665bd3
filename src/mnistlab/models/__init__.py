"""Models: the registered networks (registry.py) and `build`, the one way a network is built."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from mnistlab.errors import MnistlabError

# Importing the families registers their models.
from mnistlab.models import compact, fast, netspec, peer, seed  # noqa: F401
from mnistlab.models.netspec import NET
from mnistlab.models.registry import ALIASES, MODELS, list_models, model_doc, register_model

__all__ = ["ALIASES", "FINAL", "NET", "build", "list_models", "model_doc", "register_model"]

FINAL = "final"  # the model shipped inside the package (mnistlab.weights)


def build(spec: str | Mapping[str, Any], net: Mapping[str, Any] | None = None) -> nn.Module:
    """The network `spec` names, untrained. Every network is built here: training,
    checkpoints, summary, search, export and benchmarks. `spec` is one of

    - a registered model name (or a former one, see ALIASES);
    - "net" with its [net] table as `net`, or the [net] table itself;
    - "package.module:callable" or "path/to/file.py:callable": an nn.Module class or a
      factory, called with no arguments;
    - "final": the architecture of the model shipped in the package.

    A run's model spec and [net] table (`build(cfg.model, cfg.net)`) rebuild its network.
    """
    if isinstance(spec, Mapping):
        return netspec._build(dict(spec))
    if net:
        return netspec._build(dict(net))
    if spec == NET:
        raise MnistlabError('model "net" needs a [net] table describing the network')
    if spec == FINAL:
        from mnistlab.weights import shipped_record

        record = shipped_record()
        return build(record["model"], record.get("net"))
    if ":" in spec:
        from mnistlab.models.spec import _from_callable

        return _from_callable(spec)
    make = MODELS.get(ALIASES.get(spec, spec))
    if make is None:
        known = ", ".join(list_models())
        raise MnistlabError(f"unknown model {spec!r}; registered models: {known}")
    return make()
