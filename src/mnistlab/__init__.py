"""mnistlab: design, train, inspect and ship compact CNNs on MNIST-style digits.

    import mnistlab as ml
    print(ml.summary(ml.load("final")))
    result = ml.train(Net(), epochs=2, limit_train=2000)

The public functions live in mnistlab.api; the `mnistlab` command is a thin layer over them
(docs/architecture.md). They are imported on first use, so `import mnistlab` and
`mnistlab --help` stay light: torch is loaded when a function is first called or looked up.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Data",
    "Inspection",
    "MnistlabError",
    "TrainResult",
    "confirm",
    "evaluate",
    "experiment",
    "export",
    "inspect",
    "list_models",
    "load",
    "load_data",
    "plot_run",
    "predict",
    "run_search",
    "summary",
    "train",
]

if TYPE_CHECKING:  # what editors and type checkers see
    from mnistlab.api import (
        Data,
        Inspection,
        TrainResult,
        confirm,
        evaluate,
        experiment,
        export,
        inspect,
        list_models,
        load,
        load_data,
        plot_run,
        predict,
        run_search,
        summary,
        train,
    )
    from mnistlab.config import Config
    from mnistlab.errors import MnistlabError

_HOME = {"Config": "mnistlab.config", "MnistlabError": "mnistlab.errors"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in __all__:
        value = getattr(importlib.import_module(_HOME.get(name, "mnistlab.api")), name)
        globals()[name] = value  # looked up once; help(ml) lists it from then on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
