"""A user's model spec, `package.module:callable` or `file.py:callable`, and an experiment file,
for `mnistlab.models.build` (the one way a model is built).

The callable is an nn.Module class or a factory function that needs no arguments. Anything
that goes wrong while finding or calling it is the user's input, so it becomes a MnistlabError
naming the spec and the expected form.

`spec_of` goes the other way: the spec that rebuilds a user's model (what a run records). A
class defined in a notebook cell or a script lives in `__main__`, which no other process can
import; its spec `__main__:Net` names it, and building it asks for the model instead.
"""

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mnistlab.errors import MnistlabError

FORMS = (
    "a registered model name, an experiment.toml, package.module:callable or "
    "path/to/file.py:callable"
)
MAIN = "__main__"
_USER_PREFIX = "_mnistlab_user_"  # modules loaded from a user's file (see _load_file)


def _fail(spec: str, problem: str) -> MnistlabError:
    return MnistlabError(f"model {spec!r}: {problem}; expected {FORMS} (see `mnistlab models`)")


def describe_raised(e: BaseException) -> str:
    """What the user's code raised, in a few words: 'ValueError: bad', 'SystemExit(0)'."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r}), which would end the program"
    first = str(e).splitlines()[0] if str(e).strip() else "no message"
    return f"{type(e).__name__}: {first}"


# What a user's code may raise that is their input, not a bug here: any exception, and
# SystemExit (`sys.exit()` at import, `builtins:exit`), which would end the command with no
# word and exit status 0. KeyboardInterrupt (Ctrl-C) and GeneratorExit pass through.
USER_ERRORS = (Exception, SystemExit)


def _load_file(spec: str, path: Path) -> object:
    if not path.is_file():
        raise _fail(spec, f"no file {str(path)!r}")
    # A private name, so that loading a user's file never replaces an importable module.
    name = f"{_USER_PREFIX}{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise _fail(spec, f"{str(path)!r} cannot be loaded as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # as `python file.py` would: it may import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except USER_ERRORS as e:
        del sys.modules[name]
        raise _fail(spec, f"running {str(path)!r} raised {describe_raised(e)}") from e
    except BaseException:
        sys.modules.pop(name, None)
        raise
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
    except USER_ERRORS as e:
        raise _fail(spec, f"importing {dotted!r} raised {describe_raised(e)}") from e


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


def needs_instance(spec: str) -> str:
    """How to pass a model that cannot be rebuilt from `spec` (e.g. `model=Net()`)."""
    return f"model={spec.rpartition(':')[2].split('.')[-1]}()"


def _from_callable(spec: str) -> nn.Module:
    """The nn.Module a user's class or factory returns, called with no arguments."""
    if spec.startswith(f"{MAIN}:"):
        raise MnistlabError(
            f"model {spec!r} was defined in a notebook or script, which cannot be imported "
            f"here; pass the model: ml.load(run, {needs_instance(spec)})"
        )
    factory = _find_callable(spec)
    try:
        model = factory()
    except USER_ERRORS as e:
        raise _fail(spec, f"calling it raised {describe_raised(e)}") from e
    if not isinstance(model, nn.Module):
        raise _fail(spec, f"calling it returned a {type(model).__name__}, not an nn.Module")
    return model


def spec_of(model: nn.Module | type) -> str:
    """The spec that rebuilds `model` (an instance or its class): `module:qualname`,
    `path/to/file.py:qualname` for a class loaded from a file, or `__main__:qualname` for a
    class defined in a notebook or script.

    Rebuilding calls the class with no arguments; an instance built with arguments gets the
    spec of its class all the same, and loading its weights then asks for the model.
    """
    cls = model if isinstance(model, type) else type(model)
    module = cls.__module__
    if module.startswith(_USER_PREFIX):
        file = getattr(sys.modules.get(module), "__file__", None)
        if file:
            return f"{file}:{cls.__qualname__}"
    return f"{module}:{cls.__qualname__}"
