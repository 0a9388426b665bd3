"""The Python API, for notebooks and scripts: `import mnistlab as ml`.

    model = ml.load("final")                 # the shipped model, ready for inference
    print(ml.summary(model))                 # shapes, params, RF, jump, start, MACs
    view = ml.inspect("final", digit=0)      # per layer: receptive field on a digit, maps
    result = ml.train(Net(), epochs=2)       # your own nn.Module, or a registered name
    ml.evaluate(result)["accuracy"]
    ml.plot_run(result)                      # a matplotlib Figure, shown inline in Jupyter

Every function is a thin layer over the modules the `mnistlab` command uses, so a run trained
here is a run directory like any other (`mnistlab compare`, `report`, `evaluate` read it).
Bad input raises MnistlabError with a one-line message.

A model is given as an nn.Module, a registered name ("seed", see `mnistlab models`), or a spec
"package.module:Class" / "path/to/file.py:Class"; a trained one as a run directory, a weights
file, a TrainResult, or "final" (the shipped model).
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mnistlab.config import Config, flatten, from_dict, load_config, name_for_model, resolve
from mnistlab.data.datasets import Loader, get_spec, load_split, normalization, recorded_dataset
from mnistlab.device import pick_device, use_threads
from mnistlab.errors import MnistlabError, arg, given
from mnistlab.inference import inputs
from mnistlab.inference.classify import (
    Predictions,
    checkpoint_path,
    file_kind_problem,
    predict_items,
    predict_onnx,
)
from mnistlab.inference.exporters import export_info, export_model
from mnistlab.inference.inspection import Inspection, inspect
from mnistlab.inference.onnxfile import is_onnx_file
from mnistlab.models import FINAL, LOG_PROBS, build, check_fits, list_models, recorded_outputs
from mnistlab.models.spec import MAIN, spec_of
from mnistlab.models.summary import Summary, format_table, summarize, summarize_checked
from mnistlab.runs.rundir import (
    Run,
    check_new,
    is_run_dir,
    load_model,
    read_info,
    read_run,
)
from mnistlab.training.metrics import evaluate_model, evaluate_onnx
from mnistlab.training.trainer import Parts, check_compiler, default_out, resume_run, train_run

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Data",
    "Inspection",
    "TrainResult",
    "evaluate",
    "experiment",
    "export",
    "inspect",
    "load",
    "list_models",
    "load_data",
    "plot_run",
    "predict",
    "summary",
    "train",
    "run_search",
    "confirm",
]


# ----------------------------------------------------------------------------- inspecting


def summary(
    model: nn.Module | type | str | Path, input_size: tuple[int, ...] = (1, 28, 28)
) -> Summary:
    """Per-layer output shape, parameters, receptive field, jump, start and MACs of a model.

    `model`: an nn.Module, an nn.Module class (built with no arguments), or anything `load`
    or `models.build` takes: a registered name, "package.module:Class",
    "path/to/file.py:Class", "final" (the shipped model), a run directory, a model.pt or
    checkpoint.pt file, a TrainResult, or an experiment .toml file (the network it trains).
    The result prints as the table, renders as HTML in Jupyter and holds the numbers
    (`.rows`, `.total_params`, `.macs`, `.rf`, `.to_dict()`).
    """
    name, user = None, True  # a module's own forward() failing is the caller's input
    if isinstance(model, str | Path) and str(model).endswith(".toml"):
        cfg = load_config(model)  # an experiment: the network it trains
        name, user, model = str(model), ":" in cfg.model, build(cfg.model, cfg.net)
    elif isinstance(model, TrainResult) or (
        isinstance(model, str | Path) and (Path(model).is_dir() or str(model).endswith(".pt"))
    ):
        model, _ = _resolve(model)  # a run directory or weights file: the trained network
    elif isinstance(model, str):
        name, user, model = model, ":" in model, build(model)
    elif isinstance(model, type) and issubclass(model, nn.Module):
        model = model()
    if not isinstance(model, nn.Module):
        raise MnistlabError(
            f"summary: got a {type(model).__name__}; pass an nn.Module, a registered model "
            "name, 'package.module:Class', a run directory, a weights file or 'final'"
        )
    shape = tuple(input_size)
    return summarize_checked(model, shape, name or type(model).__name__, user, arg("input_size"))


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """A dataset split in memory: the images as stored and a loader of normalised batches."""

    images: torch.Tensor  # uint8 [N, 28, 28], white ink on black
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]  # class names, by label
    mean: float  # the dataset's normalisation, as the trainer uses it
    std: float
    loader: Loader  # batches (float32 [B, 1, 28, 28] normalised, int64 [B]); iterate it

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Data({len(self)} images {list(self.images.shape[1:])}, "
            f"{len(self.classes)} classes, batches of {self.loader.batch_size})"
        )


def load_data(
    dataset: str = "mnist",
    split: str = "train",
    *,
    limit: int | None = None,
    batch_size: int = 64,
    shuffle: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    data_dir: str | Path | None = None,
) -> Data:
    """One split ("train" or "test") of "mnist" or "fashion-mnist" as tensors and a loader.

    `limit` keeps the first images; `shuffle` (default: for the training split) reorders each
    epoch's batches with a generator seeded by (seed, epoch). Files come from `data_dir`,
    else $MNISTLAB_DATA, else ~/.cache/mnistlab (`mnistlab data fetch` puts them there).
    """
    if split not in ("train", "test"):
        raise MnistlabError(f"load_data: split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise MnistlabError(f"load_data: limit must be >= 1, got {limit!r}")
    if batch_size < 1:
        raise MnistlabError(f"load_data: batch_size must be >= 1, got {batch_size!r}")
    spec = get_spec(dataset)
    images, labels = load_split(spec.name, split == "train", data_dir, limit)
    loader = Loader(
        images,
        labels,
        batch_size,
        mean=spec.mean,
        std=spec.std,
        shuffle=split == "train" if shuffle is None else shuffle,
        seed=seed,
        device=pick_device(device),
    )
    return Data(images, labels, spec.classes, spec.mean, spec.std, loader)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """A finished training: its run directory, per-epoch metrics and the trained model."""

    run_dir: Path  # absolute
    metrics: list[dict[str, Any]]  # one record per epoch, as in metrics.jsonl
    # The evaluated weights: your own nn.Module instance, trained in place and given back in
    # the train/eval mode and memory format you passed it in; otherwise (a model built from
    # a name or class, or the averaged weights with ema) a network in eval mode.
    model: nn.Module
    config: Config

    @property
    def test_acc(self) -> float | None:
        """Test accuracy (%) after the last epoch; None if the run did not read the test set."""
        return self.metrics[-1].get("test_acc")

    def __repr__(self) -> str:
        last = self.metrics[-1]
        acc = ", ".join(
            f"{split} accuracy {last[f'{split}_acc']:.2f}%"
            for split in ("train", "val", "test")
            if f"{split}_acc" in last
        )
        epochs = f"{len(self.metrics)} epochs"
        try:  # shown as the caller would type it; run_dir itself stays absolute
            shown = self.run_dir.relative_to(Path.cwd())
        except ValueError:
            shown = self.run_dir
        return f"TrainResult({str(shown)!r}, {self.config.model}, {epochs}: {acc})"


class _KeepParts:
    """A sink that keeps the trainer's parts, for the trained model."""

    parts: Parts | None = None

    def epoch(self, records: list[dict], parts: Parts) -> None:
        self.parts = parts

    def close(self) -> None:
        pass


def _experiment(target: Any) -> tuple[Config, Any]:
    """The config to train and the model to train instead of building cfg.model (or None)."""
    if isinstance(target, Config):
        return target, None
    if isinstance(target, nn.Module):
        return Config(name=type(target).__name__, model=spec_of(target)), target
    if isinstance(target, type) and issubclass(target, nn.Module):
        return Config(name=target.__name__, model=spec_of(target)), target
    if isinstance(target, functools.partial) and callable(target.func):
        # A class or factory with arguments: called after seeding, like a class. Its spec
        # cannot rebuild it with those arguments, so loading its run asks for the model.
        name = getattr(target.func, "__qualname__", type(target.func).__name__)
        return Config(name=name.rpartition(".")[2], model=f"{MAIN}:{name}"), target
    if isinstance(target, Path) or (isinstance(target, str) and target.endswith(".toml")):
        return load_config(target), None
    if isinstance(target, str):  # a model by name, with the default recipe
        return from_dict(
            {"name": name_for_model(target), "model": target}, given("model", target)
        ), None
    raise MnistlabError(
        f"train: got a {type(target).__name__}; pass an nn.Module, an nn.Module class (or a "
        "functools.partial of one), a registered model name, 'package.module:Class', an "
        "experiment .toml file or a Config"
    )


def _plan(target: Any, overrides: dict[str, Any]) -> tuple[Config, nn.Module | None]:
    """The Config to train (overrides resolved, every check made) and the caller's model
    instance to train instead of building cfg.model (or None)."""
    given_model = overrides.get("model")
    if given_model is not None and not isinstance(given_model, str):
        if target is not None:
            raise MnistlabError(
                f"{arg('model')} got a {type(given_model).__name__} beside "
                f"{given('model_or_experiment', target)}; pass the network once, as the first "
                "argument, or a registered name as model="
            )
        target, overrides = given_model, {k: v for k, v in overrides.items() if k != "model"}
    cfg, model = _experiment("seed" if target is None else target)
    if model is not None and "model" in overrides:
        raise MnistlabError(
            f"{arg('model')} names a model to build; the nn.Module passed is trained"
        )
    return resolve(cfg, overrides), model


def experiment(
    model_or_experiment: nn.Module | type | str | Path | Config | None = None, **overrides: Any
) -> Config:
    """The Config that `train` runs for the same arguments, every check made, nothing trained
    (what the run's config.toml will record)."""
    return _plan(model_or_experiment, overrides)[0]


def train(
    model_or_experiment: nn.Module | type | str | Path | Config | None = None,
    *,
    resume: str | Path | None = None,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    compile: bool = False,
    tensorboard: str | Path | None = None,
    progress: bool = True,
    console: bool = True,
    data_dir: str | Path | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a model into a new run directory, or continue a stopped one, and return the result.

    `model_or_experiment`: your nn.Module instance (trained in place; seed torch yourself before
    building it for repeatable initial weights), an nn.Module class (built with no arguments
    after seeding with the config's seed), a registered name, "package.module:Class", an
    experiment .toml file, or a Config (default: the registered "seed" network).

    `overrides` are config keys: epochs=2, batch_size=128, limit_train=2000, seed=3,
    optimizer={"lr": 0.05}, scheduler={"max_lr": 0.1}, ... (a table changes only the keys
    given; an override that the recipe would ignore, such as lr under a onecycle schedule, is
    refused). How to run: `out` (the run directory, default runs/<name>-<timestamp>),
    `device` (default cuda when present, else cpu), `threads` (torch CPU threads; sets
    torch.set_num_threads), `compile` (torch.compile), `tensorboard` (a log folder).
    `progress` shows a tqdm bar per epoch (a widget in Jupyter), `console` the seed notebook's
    test line after each epoch. `resume=DIR` continues a stopped run exactly as it was
    configured (nothing else may be given then but how to run: device, threads, progress,
    console, tensorboard, data_dir, and `model=Net()` for a run of a class defined in a
    notebook, which the run cannot rebuild by itself); the result is bit for bit the run's
    had it never stopped. `data_dir`: where the dataset is (default: the data cache; a
    resumed run, the folder it was given).

    Your model may return logits (PyTorch's convention) or log-probabilities: one dry pass
    decides which (or a class attribute `outputs = "logits"`), the run records it, and the
    loss applies log_softmax to logits only. An nn.Module instance you pass is trained in
    place and given back in the train/eval mode and memory format it came in (on the run's
    device); TrainResult.model is it, unless ema averaged the weights.

    The run records how to rebuild the model: its registered name, or "module:Class" for a
    class that can be imported. A class defined in a notebook cannot be; load its weights
    with `ml.load(run_dir, model=Net())`.
    """
    from mnistlab.runs.rundir import read_config
    from mnistlab.training.trainer import check_model, check_run_settings, check_tensorboard

    # How to run, checked first: a blank out= would quietly mean the default folder.
    check_run_settings(
        resume=resume,
        out=out,
        threads=threads,
        compile=compile,
        tensorboard=tensorboard,
        progress=progress,
        console=console,
    )
    resume_model = None
    if resume is not None:
        resume_model = overrides.pop("model", None)
        if resume_model is not None and not _is_model_arg(resume_model):
            raise MnistlabError(
                f"{arg('model')} got a {type(resume_model).__name__}; with {arg('resume')} pass "
                "the network to continue: an nn.Module instance, class or factory"
            )
        extra = {"model_or_experiment": model_or_experiment, "out": out, **flatten(overrides)}
        extra = {k: v for k, v in extra.items() if v is not None}
        if compile:
            extra["compile"] = compile
        if extra:
            raise MnistlabError(
                f"{arg('resume')} continues a run as configured; drop {arg(next(iter(extra)))}"
            )
    torch_device = pick_device(device)  # a device this build cannot use fails first
    use_threads(threads)
    if compile:
        check_compiler()
    keep = _KeepParts()
    if resume is not None:
        run_dir = Path(resume)
        given_back = _CallersModule(resume_model)
        with given_back:
            records = resume_run(
                run_dir,
                torch_device,
                data_dir,
                progress,
                tensorboard,
                console,
                [keep],
                model=resume_model,
            )
        if records is None:
            if console:
                print(f"{run_dir}: already finished; nothing to resume")
            run = read_run(run_dir)
            instance = resume_model if isinstance(resume_model, nn.Module) else None
            trained, _ = load_model(run_dir, instance)
            trained = given_back.restored(trained)
            return TrainResult(run_dir.resolve(), run.metrics, trained, read_config(run_dir))
        cfg = read_config(run_dir)
    else:
        cfg, model = _plan(model_or_experiment, overrides)
        given_back = _CallersModule(model)
        if cfg.compile and not compile:
            check_compiler()
        run_dir = Path(out) if out is not None else default_out(cfg.name)
        check_new(run_dir)
        check_tensorboard(tensorboard or cfg.log.tensorboard)
        # One dry forward pass on the run's device: a model that does not fit the task is
        # refused here, not by a traceback in the first training step.
        checked, outputs = check_model(cfg, torch_device, model)
        if console:
            if model is None:  # a caller's own instance is not run before training
                print(format_table(summarize(checked.cpu())))
            print(
                f"Training {cfg.name} ({cfg.model}) on "
                f"{torch_device}, {torch.get_num_threads()} threads"
                f"{', compiled' if compile or cfg.compile else ''} -> {run_dir}"
            )
        with given_back:
            records = train_run(
                cfg,
                run_dir,
                torch_device,
                data_dir,
                compile,
                progress,
                tensorboard,
                console,
                model=model,
                sinks=[keep],
                outputs=outputs,
            )
    assert keep.parts is not None  # told after every epoch, and there is at least one
    trained = given_back.restored(keep.parts.eval_model)
    return TrainResult(run_dir.resolve(), records, trained, cfg)


def _is_model_arg(value: Any) -> bool:
    """An nn.Module instance, or a class or factory (partials too) that builds one."""
    return isinstance(value, nn.Module) or callable(value)


class _CallersModule:
    """The caller's own nn.Module instance, given back as it came: training turns it to
    channels_last and ends in eval mode (a `with` block around the training; a failed
    training restores it too). Anything else passes through in eval mode."""

    def __init__(self, model: Any) -> None:
        self.model = model if isinstance(model, nn.Module) else None
        if self.model is not None:
            self.training = self.model.training
            self.channels_last = _channels_last(self.model)

    def __enter__(self) -> "_CallersModule":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.model is None:
            return
        if not self.channels_last and _channels_last(self.model):
            self.model.to(memory_format=torch.contiguous_format)
        self.model.train(self.training)

    def restored(self, trained: nn.Module) -> nn.Module:
        if trained is self.model:
            self.__exit__()
            return trained
        return trained.eval()


def _channels_last(model: nn.Module) -> bool:
    """Whether a module's 4-d weights are laid out channels_last (1x1 kernels are both)."""
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in model.parameters()
    )


# ----------------------------------------------------------------------------- trained models


Trained = nn.Module | TrainResult | str | Path


def _resolve(
    target: Trained, model: nn.Module | None = None, *, outputs: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model and its metadata (dataset, mean, std, model_name, outputs, and the
    data folder a run was given, data_dir). A bare nn.Module records nothing: with
    `outputs`, one dry pass asks it whether it returns logits (for a loss or an export's
    output name; classes and probabilities need no answer)."""
    if isinstance(target, nn.Module):
        meta = {"model_name": spec_of(target)}
        if outputs:
            meta["outputs"] = _outputs_of(target)
        return target, meta
    if isinstance(target, TrainResult):
        info = read_info(target.run_dir)
        return target.model, {
            "model_name": target.config.model,
            "dataset": target.config.dataset,
            "outputs": recorded_outputs(info),
            "data_dir": info.get("data_dir"),
        }
    if not isinstance(target, str | Path):
        raise MnistlabError(
            f"got a {type(target).__name__}; pass a model, a TrainResult, a run directory, "
            f"a weights file or {FINAL!r}"
        )
    trained, meta = load_model(checkpoint_path(None if str(target) == FINAL else target), model)
    if str(target) != FINAL and is_run_dir(target):
        meta["data_dir"] = read_info(target).get("data_dir")
    return trained, meta


def _outputs_of(model: nn.Module) -> str:
    """What a bare module returns (logits or log_probs), from one dry pass where it lives."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return check_fits(model, spec_of(model), device) if param is not None else LOG_PROBS


def load(
    target: str | Path | TrainResult = FINAL,
    *,
    model: nn.Module | None = None,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A trained model in eval mode, ready for inference.

    `target`: "final" (the model shipped with mnistlab), a run directory, a model.pt or
    checkpoint.pt file, or a TrainResult. `model`: an untrained instance to load the weights
    into, needed when the run's model class was defined in a notebook (`model=Net()`).
    """
    torch_device = pick_device(device)
    trained, _ = _resolve(target, model)
    return trained.to(torch_device).eval()


def evaluate(
    model_or_run: Trained = FINAL,
    split: str = "test",
    *,
    model: nn.Module | None = None,
    limit: int | None = None,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    threads: int | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Loss, accuracy (%), correct, total, per-class accuracy, confusion matrix, the
    indices of misclassified images and the class names of a trained model on the "test" or
    "train" split.

    The images are normalised as the model was trained (the run's dataset and mean/std; for
    a bare nn.Module, MNIST's), and read from `data_dir` (default: the folder the run was
    trained from, else the data cache). `limit`: only the first images. The model may
    return logits or log-probabilities (the run records which; a bare nn.Module is asked).
    An exported .onnx file (int8 too) is run by ONNX Runtime, normalised with the mean and
    std in its metadata, on its dataset's images.
    """
    from mnistlab.training.trainer import whole_number

    if not isinstance(split, str) or split not in ("test", "train"):
        raise MnistlabError(f"{given('split', split)}: must be 'test' or 'train'")
    if limit is not None:
        whole_number("limit", limit)
    whole_number("batch_size", batch_size)
    if model is not None and not isinstance(model, nn.Module):
        raise MnistlabError(
            f"{arg('model')} got a {type(model).__name__}; pass an untrained nn.Module to load "
            "the weights into"
        )
    if is_onnx_file(model_or_run):
        return evaluate_onnx(model_or_run, split, data_dir, batch_size, threads, limit)
    torch_device = pick_device(device)
    use_threads(threads)
    trained, meta = _resolve(model_or_run, model, outputs=True)
    if data_dir is None:
        data_dir = meta.get("data_dir")
    result = evaluate_model(trained, meta, split, data_dir, batch_size, torch_device, limit)
    return {**result, "classes": list(recorded_dataset(meta).classes)}


def predict(
    images_or_paths: Any,
    model: Trained | None = None,
    *,
    preprocess: bool | None = None,
    errors: str = "raise",
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> Predictions:
    """Classify images with a trained model (default: the shipped one), as `mnistlab predict`.

    `images_or_paths`: a path or a list of paths (any format Pillow reads), a PIL image, or a
    numpy array or torch tensor shaped [H, W], [N, H, W] or [N, 1, H, W], grayscale or RGB(A)
    ([H, W, 3], [N, H, W, 3], [N, 3, H, W]); pixels uint8 0-255 or floats in [0, 1].
    `model` may also be an exported .onnx file (int8 too), run by ONNX Runtime.
    `preprocess`: turn each image into a 28x28 MNIST-style input (ink cropped, scaled,
    centred; photos of paper cleaned up) first; default: where the model's dataset is
    handwritten digits, not for Fashion-MNIST. `errors="raise"` raises for an image that
    cannot be read or used (a missing file, a blank image); "keep" gives it `.error`.

    Returns a list of Prediction (`.prediction` the class, `.name` its name, `.top3`,
    `.probabilities`, `.line()`), which also stacks them: `.labels` [N],
    `.probabilities` [N, classes], `.names`.
    """
    if errors not in ("raise", "keep"):
        raise MnistlabError(f"{given('errors', errors)}: must be 'raise' or 'keep'")
    if preprocess is not None and not isinstance(preprocess, bool):
        raise MnistlabError(f"{given('preprocess', preprocess)}: must be True, False or None")
    named = inputs.items(images_or_paths)  # bad input fails before any model is loaded
    if errors == "raise":
        for name, item in named:
            problem = file_kind_problem(item) if isinstance(item, Path) else None
            if problem is not None:
                raise MnistlabError(f"{name}: {problem}")
    if is_onnx_file(model):  # through ONNX Runtime, with the file's own records
        results = predict_onnx(named, model, preprocess_image=preprocess, threads=threads)
    else:
        torch_device = pick_device(device)
        use_threads(threads)
        trained, meta = _resolve(FINAL if model is None else model)
        mean, std = normalization(meta)
        dataset = recorded_dataset(meta)
        results = predict_items(
            trained,
            named,
            mean=mean,
            std=std,
            classes=dataset.classes,
            preprocess_image=dataset.digits if preprocess is None else preprocess,
            device=torch_device,
        )
    failed = next((r for r in results if r.error is not None), None)
    if errors == "raise" and failed is not None:
        raise MnistlabError(failed.error)
    return results


def export(
    model_or_run: Trained,
    path: str | Path,
    format: str = "onnx",
    *,
    model: nn.Module | None = None,
    int8: bool = False,
    data_dir: str | Path | None = None,
) -> Path:
    """Write a trained model as an ONNX or TorchScript file; returns its path.

    The file takes float32 [N, 1, 28, 28] normalised with the mean and std it carries in its
    metadata, and returns what the network does, [N, 10]: an output named "log_probs" or
    "logits" (see `mnistlab export`). The path returned is absolute.

    `int8=True` (ONNX only) quantizes it: ONNX Runtime's static quantization, QDQ with
    per-channel weights, calibrated on 2,000 training images of the model's dataset (from
    `data_dir`, default the data cache; never the test set); the file's metadata says so.
    """
    from mnistlab.inference.exporters import check_format, check_int8, check_out

    check_out(path, check_format(format))  # before the model is loaded
    check_int8(int8, format)
    if model is not None and not isinstance(model, nn.Module):
        raise MnistlabError(
            f"{arg('model')} got a {type(model).__name__}; pass an untrained nn.Module to load "
            "the weights into"
        )
    trained, meta = _resolve(model_or_run, model, outputs=True)
    export_model(trained, format, path, export_info(meta), int8, data_dir)
    return Path(path).absolute()


def plot_run(run: TrainResult | Run | str | Path, acc_floor: float | None = None) -> "Figure":
    """Accuracy and loss per epoch of a run, as a matplotlib Figure (shown inline in Jupyter;
    `.savefig("curves.png")` writes it). No pyplot state is involved.

    `acc_floor`: start the accuracy axis there at the lowest (the report uses 97, where the
    differences between good runs show); None: wherever the points are.
    """
    import matplotlib.style

    from mnistlab.runs.report import curves_figure

    if isinstance(run, TrainResult):
        run = run.run_dir
    if not isinstance(run, Run):
        run = read_run(run)
    with matplotlib.style.context("default"):
        return curves_figure(run, acc_floor)


# ----------------------------------------------------------------------------- protocols


def run_search(
    space: str | Path,
    trials: int,
    *,
    workers: int = 1,
    study: str | None = None,
    storage: str | None = None,
    runs: str | Path = "results/search",
    timeout: float | None = None,
    threads: int | None = None,
    heartbeat: int = 30,
    device: str | None = None,
    data_dir: str | Path | None = None,
) -> Path:
    """Run (or continue) an architecture search on Optuna until `trials` of its trials count
    (complete, pruned, infeasible, or failed by their own error; a trial lost with its worker
    is replaced); returns the study's folder, RUNS/STUDY (trial-N run directories, and
    study.db unless `storage` names another database).

    `space`: a search-space TOML file (see searches/); `workers` local worker processes,
    `threads` each (default: cores / workers); `storage`: an SQLAlchemy URL every worker
    shares (default sqlite:///RUNS/STUDY/study.db); `timeout` in seconds. Trials choose on the
    validation split only. Needs mnistlab[search] (mnistlab[postgres] for PostgreSQL).
    """
    from mnistlab.search import run as search_run

    name = study or Path(space).stem
    search_run.run_search(
        space,
        trials,
        workers=workers,
        study=study,
        storage=storage,
        runs=runs,
        timeout=timeout,
        threads=threads,
        heartbeat=heartbeat,
        device=device,
        data_dir=data_dir,
    )
    return (Path(runs) / name).resolve()


def confirm(
    experiments: str | Path | list[str | Path],
    *,
    seeds: int = 3,
    threads: int | list[int] | tuple[int, ...] = (1, 2),
    compile: bool = False,
    results: str | Path = "results",
    train: bool = True,
    out: str | Path | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
) -> str:
    """The robustness protocol: train each experiment with seeds 1..`seeds` under every
    thread setting (each run in a process of its own), into
    RESULTS/<experiment>/<device>-<threads>t[-compiled]/seed<N>; returns the Markdown table
    of every run's last 3 test accuracies and whether each holds the 99.4% line.

    Finished runs are read, stopped ones resumed; `train=False` only reads. `out`: also
    write the table there.
    """
    from mnistlab.runs.confirm import confirm as confirm_runs

    if isinstance(experiments, str | Path):
        experiments = [experiments]
    if isinstance(threads, int):
        threads = [threads]
    _, table = confirm_runs(
        list(experiments),
        seeds=seeds,
        threads=threads,
        compile=compile,
        results=results,
        train=train,
        out=out,
        device=device,
        data_dir=data_dir,
    )
    return table
