"""mnistlab: design, train, inspect and ship compact CNNs on MNIST-style digits.

    import mnistlab as ml
    print(ml.summary(ml.load("final")))
    result = ml.train(Net(), epochs=2, limit_train=2000)

The API (mnistlab/api.py) is imported on first use, so `import mnistlab` and `mnistlab --help`
stay light. Five of its functions share their names with modules: mnistlab.summary, .train,
.evaluate, .predict and .export stay the modules (`from mnistlab import train` gives the
module, as before), and calling one of them calls the API function of that name.
"""

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Data",
    "MnistlabError",
    "TrainResult",
    "evaluate",
    "export",
    "list_models",
    "load",
    "load_data",
    "plot_run",
    "predict",
    "summary",
    "train",
]

if TYPE_CHECKING:  # what editors and type checkers see: the functions
    from mnistlab.api import (
        Data,
        TrainResult,
        evaluate,
        export,
        load,
        load_data,
        plot_run,
        predict,
        summary,
        train,
    )
    from mnistlab.config import Config
    from mnistlab.errors import MnistlabError
    from mnistlab.models import list_models

CALLABLE_MODULES = ("summary", "train", "evaluate", "predict", "export")
_ELSEWHERE = {
    "Config": "mnistlab.config",
    "MnistlabError": "mnistlab.errors",
    "list_models": "mnistlab.models",
}


def _api_function(module: types.ModuleType) -> Any:
    from mnistlab import api

    return getattr(api, module.__name__.rpartition(".")[2])


class CallableModule(types.ModuleType):
    """A module that, called, calls the API function of its name (see the docstring above)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _api_function(self)(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature and Jupyter's `ml.train?` read it
        import inspect

        return inspect.signature(_api_function(self))


class _Package(types.ModuleType):
    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        # However the module was first imported, it becomes callable before anyone calls it.
        if name in CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = CallableModule
        return value


def __getattr__(name: str) -> Any:
    import importlib

    if name in CALLABLE_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


sys.modules[__name__].__class__ = _Package
