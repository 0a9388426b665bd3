"""Build a model from a spec: a registered name, `package.module:callable` or `file.py:callable`.

The callable is an nn.Module class or a factory function that needs no arguments. Anything
that goes wrong while finding or calling it is the user's input, so it becomes a MnistlabError
naming the spec and the expected form.
"""

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mnistlab import models
from mnistlab.errors import MnistlabError

FORMS = (
    "a registered model name, an experiment.toml, package.module:callable or "
    "path/to/file.py:callable"
)


def _fail(spec: str, problem: str) -> MnistlabError:
    return MnistlabError(f"model {spec!r}: {problem}; expected {FORMS} (see `mnistlab models`)")


def _load_file(spec: str, path: Path) -> object:
    if not path.is_file():
        raise _fail(spec, f"no file {str(path)!r}")
    # A private name, so that loading a user's file never replaces an importable module.
    name = f"_mnistlab_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise _fail(spec, f"{str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # as `python file.py` would: it may import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise _fail(spec, f"running {str(path)!r} raised {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    return module


def _load_module(spec: str, dotted: str) -> object:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as e:
        if e.name and dotted.startswith(e.name):  # the module itself, not one it imports
            raise _fail(spec, f"no module {dotted!r}") from e
        raise _fail(spec, f"importing {dotted!r} raised ModuleNotFoundError: {e}") from e
    except Exception as e:
        raise _fail(spec, f"importing {dotted!r} raised {type(e).__name__}: {e}") from e


def _find_callable(spec: str) -> Callable[[], object]:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise _fail(spec, "no callable named after ':'")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    module = _load_file(spec, Path(where)) if is_file else _load_module(spec, where)
    target = module
    for part in attr.split("."):  # Outer.inner works as in entry points
        if not hasattr(target, part):
            raise _fail(spec, f"{where!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _fail(spec, f"{attr!r} is a {type(target).__name__}, not a class or function")
    return target


def build_model(spec: str) -> nn.Module:
    """The nn.Module that `spec` names: a registered model, or a user's class or factory."""
    if spec.endswith(".toml"):  # an experiment file: its [net] table or its model name
        from mnistlab.config import load_config

        cfg = load_config(spec)
        return models.build(cfg.model, cfg.net)
    if ":" not in spec:
        return models.create_model(spec)
    factory = _find_callable(spec)
    try:
        model = factory()
    except Exception as e:
        raise _fail(spec, f"calling it raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise _fail(spec, f"calling it returned a {type(model).__name__}, not an nn.Module")
    return model
