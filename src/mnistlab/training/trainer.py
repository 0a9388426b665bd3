"""The trainer: set-up from a config, `train_epoch`, `evaluate`, and `fit` with sinks.

Speed comes from keeping the data on the device as tensors (no DataLoader, no per-sample
Python), counting train accuracy from the same forward pass the loss uses (the seed notebook
ran the model twice per batch), channels_last memory format, and optionally torch.compile
(`--compile`). `mnistlab bench` measures each against the notebook's loop.

`fit` knows nothing of files: after every epoch it hands the record to its sinks (the
console, the run directory, TensorBoard). Where runs live on disk is rundir.py's business;
train_run and resume_run wire the two together (api.train calls them).
"""

import math
import operator
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

with warnings.catch_warnings():
    # A widget in Jupyter, text elsewhere; without ipywidgets tqdm warns and falls back to text.
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

from mnistlab.config import Config
from mnistlab.data.augment import make_augment
from mnistlab.data.datasets import DatasetSpec, Loader, get_spec, load_split, split_validation
from mnistlab.device import MAX_THREADS, cpu_info, resolve_precision
from mnistlab.errors import MnistlabError, arg, given
from mnistlab.models import LOG_PROBS, build, check_fits
from mnistlab.models.spec import describe_raised
from mnistlab.runs import rundir
from mnistlab.runs.checkpoint import checkpoint_state, restore_checkpoint
from mnistlab.training.metrics import as_log_probs, predict, summarize_predictions, test_line

# What the trainer accepts besides cfg.model: an instance (trained in place) or a class or
# factory called with no arguments after seeding (its initial weights depend on the seed only).
ModelArg = nn.Module | Callable[[], nn.Module]

# ----------------------------------------------------------------------------- set-up


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    optimizers = {
        "sgd": lambda p: torch.optim.SGD(
            p,
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        ),
        "adam": lambda p: torch.optim.Adam(
            p, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay
        ),
        "adamw": lambda p: torch.optim.AdamW(
            p, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay
        ),
    }
    return optimizers[opt.name](model.parameters())


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The LR schedule and whether it steps per batch (True) or per epoch (False)."""
    s = cfg.scheduler
    total_steps = cfg.epochs * steps_per_epoch
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, s.step_size, s.gamma), False
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=s.max_lr,
            total_steps=total_steps,
            pct_start=s.pct_start,
            div_factor=s.div_factor,
            final_div_factor=s.final_div_factor,
            cycle_momentum=s.cycle_momentum,
        ), True
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps, s.min_lr), True
    return None, False


def nll_loss(log_probs: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    loss = F.nll_loss(log_probs, target)
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_probs.mean(dim=1).mean()
    return loss


@dataclass
class Parts:
    """What set-up builds from a config: the model and what trains it."""

    model: nn.Module  # the weights: checkpoints and evaluation use it
    step_model: nn.Module  # what training steps call: the model, or it compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any  # an LR scheduler or None
    per_batch: bool  # the scheduler steps per batch (else per epoch)
    ema: AveragedModel | None  # the averaged weights, evaluated instead of the model
    bf16: bool  # train steps under bf16 autocast
    smoothing: float
    outputs: str = LOG_PROBS  # what the model returns: models.LOGITS or LOG_PROBS

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def setup(
    cfg: Config,
    device: torch.device,
    steps_per_epoch: int,
    compile: bool = False,
    bf16=False,
    model: ModelArg | None = None,
    outputs: str = LOG_PROBS,
) -> Parts:
    """Model, optimizer, schedule and loss from a config.

    The model is built from cfg.model unless `model` is given (see ModelArg); built here, its
    initial weights depend on the seed only. `outputs`: what it returns (check_model decides).
    """
    if device.type == "cuda":
        # Same seed, same numbers: cuDNN's autotuner and non-deterministic kernels would
        # make two runs of one seed differ in the last bits, and then in the metrics.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg, model).to(device)
    if cfg.channels_last:
        # NHWC lets oneDNN/cuDNN pick faster convolution kernels (see `mnistlab bench`).
        model = model.to(memory_format=torch.channels_last)
    # Training steps go through the compiled module; it shares the model's parameters, so
    # checkpoints and evaluation use the plain model. Inductor fuses each ReLU + BatchNorm
    # pair, forward and backward, into one pass over the activations (see `mnistlab bench`).
    # dynamic=False: kernels specialised to the batch size (the smaller last batch of an
    # epoch runs eagerly, see train_epoch).
    step_model = torch.compile(model, dynamic=False) if compile else model
    optimizer = make_optimizer(cfg, model)
    scheduler, per_batch = make_scheduler(cfg, optimizer, steps_per_epoch)
    ema = None
    if cfg.ema:
        # BatchNorm's running statistics are averaged too (use_buffers), so the averaged
        # model is evaluated as a whole.
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    return Parts(
        model, step_model, optimizer, scheduler, per_batch, ema, bf16, cfg.label_smoothing, outputs
    )


def instantiate(cfg: Config, model: ModelArg | None = None) -> nn.Module:
    """The network to train: cfg's model built, `model` itself, or `model` called."""
    if model is None:
        return build(cfg.model, cfg.net)
    if isinstance(model, nn.Module):
        return model
    try:
        built = model()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the caller's constructor (SystemExit too): their input
        raise MnistlabError(
            f"model {cfg.model!r}: calling it raised {describe_raised(e)}; "
            "it must build the network with no arguments"
        ) from e
    if not isinstance(built, nn.Module):
        raise MnistlabError(
            f"model {cfg.model!r}: calling it returned a {type(built).__name__}, not an nn.Module"
        )
    return built


def check_model(
    cfg: Config, device: torch.device, model: ModelArg | None = None
) -> tuple[nn.Module, str]:
    """The network `cfg` (or `model`, see ModelArg) trains fits the task: one dry forward
    pass on `device` before any data is loaded or file written (models.check_fits). Building
    it draws from a forked random state, so the run's numbers are the same as without it.
    Returns the network checked (untrained, for a summary of it) and what it outputs
    (models.LOGITS or LOG_PROBS), which the run records."""
    with torch.random.fork_rng(devices=[]):  # networks are built on the CPU
        net = instantiate(cfg, model)
    user = model is not None or ":" in cfg.model
    outputs = check_fits(net.to(device), cfg.model, device, user)
    return net, outputs


@dataclass
class Loaders:
    train: Loader
    val: Loader | None
    test: Loader | None  # None when the run never reads the test set
    spec: DatasetSpec
    clean: Loader | None = None  # unaugmented training images for BatchNorm statistics


def make_loaders(cfg: Config, device: torch.device, data_dir=None) -> Loaders:
    """The splits as tensors on the device; the test split is not even read for test='never'."""
    spec = get_spec(cfg.dataset)
    train_images, train_labels = load_split(spec.name, True, data_dir, cfg.limit_train)
    norm = dict(mean=spec.mean, std=spec.std, device=device, channels_last=cfg.channels_last)
    val = test = None
    if cfg.val_size:
        if cfg.val_size >= len(train_images):
            raise MnistlabError(
                f"val_size {cfg.val_size} leaves no training images of {len(train_images)}; "
                "lower val_size"
            )
        (train_images, train_labels), (val_images, val_labels) = split_validation(
            train_images, train_labels, cfg.val_size
        )
        val = Loader(val_images, val_labels, cfg.test_batch_size, **norm)
    if cfg.test != "never":
        test_images, test_labels = load_split(spec.name, False, data_dir, cfg.limit_test)
        test = Loader(test_images, test_labels, cfg.test_batch_size, **norm)
    train = Loader(
        train_images,
        train_labels,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        augment=make_augment(cfg.augment),
        reshuffle=cfg.shuffle == "every-epoch",
        clean_from=cfg.epochs - cfg.clean_epochs + 1 if cfg.clean_epochs else 0,
        **norm,
    )
    clean = None
    if cfg.bn_recalibrate:
        n = cfg.bn_recalibrate
        clean = Loader(train_images[:n], train_labels[:n], cfg.test_batch_size, **norm)
    return Loaders(train, val, test, spec, clean)


# ----------------------------------------------------------------------------- the loop


def train_epoch(
    parts: Parts, loader: Loader, epoch: int, progress: bool = False, max_batches: int | None = None
) -> tuple[float, float]:
    """One pass over the training set (or its first `max_batches`): (mean loss, accuracy %)."""
    model, optimizer = parts.step_model, parts.optimizer
    model.train()
    device = next(parts.model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    processed = 0
    pbar = tqdm(loader.batches(epoch), total=len(loader), disable=not progress, leave=True)
    for batch_idx, (data, target) in enumerate(pbar):
        if batch_idx == max_batches:
            break
        optimizer.zero_grad(set_to_none=True)
        # Compiled, the epoch's smaller last batch would need a graph of its own (25 s of
        # compiling with an empty cache, for gap_deep at 2 threads); it runs eagerly instead.
        step = model if len(target) == loader.batch_size else parts.model
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=parts.bf16):
            output = step(data)
        loss = nll_loss(as_log_probs(output, parts.outputs), target, parts.smoothing)
        loss.backward()
        optimizer.step()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        if parts.per_batch:
            parts.scheduler.step()
        # Count from the forward pass we already have; no second forward, no sync here.
        loss_sum += loss.detach() * len(target)
        correct += (output.detach().argmax(dim=1) == target).sum()
        processed += len(target)
        if batch_idx % 50 == 0 or batch_idx == len(loader) - 1:
            if not math.isfinite(loss.item()):
                raise MnistlabError(
                    f"loss became {loss.item()} at epoch {epoch}, batch {batch_idx}; stopped, "
                    "the last good checkpoint is kept (lower the learning rate and try again)"
                )
            pbar.set_description(
                f"Epoch={epoch} Loss={loss.item():.4f} batch_id={batch_idx} "
                f"Accuracy={100 * correct.item() / processed:0.2f}%",
                refresh=False,
            )
    if parts.scheduler and not parts.per_batch:
        parts.scheduler.step()
    return loss_sum.item() / processed, 100.0 * correct.item() / processed


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Loader) -> None:
    """Recompute every BatchNorm's running mean and variance as plain averages of the
    per-batch statistics over `loader`.

    Training leaves statistics of augmented batches, blended over the last ~10 batches;
    evaluation sees clean digits.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    was_training = model.training
    model.train()
    for data, _ in loader.batches():
        model(data)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def evaluate(
    model: nn.Module, loader: Loader, outputs: str = LOG_PROBS
) -> tuple[dict, torch.Tensor]:
    """Loss, accuracy and confusion of `model` on a split, and its log-probabilities;
    `outputs`: what the model returns (models.LOGITS or LOG_PROBS)."""
    log_probs = predict(model, loader, outputs)
    return summarize_predictions(log_probs, loader.labels), log_probs


class Sink(Protocol):
    """Told after every epoch (all records so far) and once when training ends."""

    def epoch(self, records: list[dict], parts: Parts) -> None: ...

    def close(self) -> None: ...


def fit(
    cfg: Config,
    parts: Parts,
    loaders: Loaders,
    sinks: list[Sink],
    start_epoch: int = 1,
    records: list[dict] | None = None,
    progress: bool = False,
) -> tuple[list[dict], torch.Tensor | None]:
    """Train from `start_epoch` to cfg.epochs; returns the records and the last test
    log-probabilities (None if the test set was not read in this call)."""
    records = list(records or [])
    test_log_probs = None
    for epoch in range(start_epoch, cfg.epochs + 1):
        lr = parts.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        train_loss, train_acc = train_epoch(parts, loaders.train, epoch, progress)
        seconds = time.perf_counter() - started
        if loaders.clean is not None:
            recalibrate_bn(parts.eval_model, loaders.clean)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
        if loaders.val is not None:
            val, _ = evaluate(parts.eval_model, loaders.val, parts.outputs)
            record.update(val_loss=val["loss"], val_acc=val["accuracy"])
        if loaders.test is not None and (cfg.test == "every-epoch" or epoch == cfg.epochs):
            test, test_log_probs = evaluate(parts.eval_model, loaders.test, parts.outputs)
            record.update(test_loss=test["loss"], test_acc=test["accuracy"])
        record.update(
            lr=lr,
            seconds=round(seconds, 3),
            images_per_s=round(loaders.train.num_samples / seconds, 1),
        )
        records.append(record)
        for sink in sinks:
            sink.epoch(records, parts)
    for sink in sinks:
        sink.close()
    return records, test_log_probs


# ----------------------------------------------------------------------------- sinks


class ConsoleSink:
    """The seed notebook's result lines after every epoch."""

    def __init__(self, loaders: Loaders) -> None:
        self.sizes = {
            "val": len(loaders.val.labels) if loaders.val else 0,
            "test": len(loaders.test.labels) if loaders.test else 0,
        }

    def epoch(self, records: list[dict], parts: Parts) -> None:
        record = records[-1]
        for split, name in (("val", "Validation"), ("test", "Test")):
            if f"{split}_acc" in record:
                total = self.sizes[split]
                correct = round(record[f"{split}_acc"] * total / 100)
                print(test_line(record[f"{split}_loss"], correct, total, name))

    def close(self) -> None:
        pass


class RunDirSink:
    """metrics.jsonl and checkpoint.pt after every epoch: what --resume continues from."""

    def __init__(self, path: Path, cfg: Config) -> None:
        self.path, self.cfg = path, cfg

    def epoch(self, records: list[dict], parts: Parts) -> None:
        # The checkpoint first, holding the epoch's record: a process killed between the two
        # writes leaves metrics one epoch behind, and resume takes the record from the
        # checkpoint. (The other order would leave metrics with no checkpoint to go on from.)
        rundir.write_checkpoint(self.path, checkpoint_state(self.cfg, parts, records[-1]))
        rundir.write_metrics(self.path, records)

    def close(self) -> None:
        pass


def check_tensorboard(logdir: str | Path | None) -> None:
    """A TensorBoard log folder that can be written, and the package to write it, checked
    before any work (None or "": no logs)."""
    if not logdir:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise MnistlabError(
            f"{arg('tensorboard')} needs the tensorboard package; "
            "pip install 'mnistlab[tensorboard]'"
        ) from None
    path = Path(logdir)
    blocker = rundir.blocking_file(path, itself=True)
    if blocker is not None:
        raise MnistlabError(
            f"{given('tensorboard', str(logdir))}: cannot write there, {blocker} is a file, "
            "not a folder; give a folder for the logs"
        )


class TensorBoardSink:
    """Every number of every epoch record as a scalar, under its split (train/, val/, test/)."""

    def __init__(self, logdir: str | Path) -> None:
        check_tensorboard(logdir)
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.writer = SummaryWriter(str(logdir))
        except OSError as e:
            raise MnistlabError(
                f"cannot write TensorBoard logs to {logdir} ({e.strerror})"
            ) from None

    def epoch(self, records: list[dict], parts: Parts) -> None:
        record = records[-1]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float):
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "val", "test") else key
                self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# ----------------------------------------------------------------------------- run settings

INT_MAX = 2**31 - 1  # torch takes 32-bit sizes


def spelled(key: str, value: Any) -> str:
    """errors.given, with a blank string still visible: "out=''", "--out ''"."""
    if isinstance(value, str) and not value.strip():
        return f"{arg(key)}{'' if arg(key).endswith('=') else ' '}{value!r}"
    return given(key, value)


def whole_number(key: str, value: Any, low: int = 1, high: int = INT_MAX) -> int:
    """`value` if it is a whole number from low to high (bool is not), else one line
    naming the argument."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # an int, or a numpy integer
    except TypeError:
        raise MnistlabError(
            f"{spelled(key, value)}: must be a whole number >= {low}, not a {type(value).__name__}"
        ) from None
    if value < low:
        raise MnistlabError(f"{spelled(key, value)}: must be a whole number >= {low}")
    if value > high:
        raise MnistlabError(f"{spelled(key, value)}: must be at most {high}")
    return value


def switch(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise MnistlabError(f"{spelled(key, value)}: must be True or False")
    return value


def path_setting(key: str, value: Any, what: str) -> Path | None:
    """A path argument (None: not given): a str or os.PathLike that is not blank."""
    if value is None:
        return None
    if not isinstance(value, str | Path) and not hasattr(value, "__fspath__"):
        raise MnistlabError(
            f"{arg(key)} got a {type(value).__name__}; give {what} as a str or Path"
        )
    text = str(Path(value)) if not isinstance(value, str) else value
    if not text.strip():
        raise MnistlabError(f"{spelled(key, value)}: empty; give {what}")
    return Path(text)


def check_run_settings(
    *,
    resume: Any = None,
    out: Any = None,
    threads: Any = None,
    compile: Any = False,
    tensorboard: Any = None,
    progress: Any = True,
    console: Any = True,
) -> None:
    """How to run a training (api.train's arguments besides the recipe), checked before
    anything else: blank paths would quietly mean "the default" (`out=""` trains into
    runs/<name>-<time>), a 1 for True or a str for a number would fail later, part-way."""
    # The fixes are spelled only for a path that needs one.
    if resume is not None:
        path_setting("resume", resume, "the run directory to continue")
    if out is not None:
        path_setting(
            "out", out, f"a folder for the run (or drop {arg('out')} for runs/<name>-<time>)"
        )
    if tensorboard is not None:
        path_setting(
            "tensorboard", tensorboard, f"a folder for the logs (or drop {arg('tensorboard')})"
        )
    if threads is not None:
        whole_number("threads", threads, 1, MAX_THREADS)
    switch("compile", compile)
    switch("progress", progress)
    switch("console", console)


# ----------------------------------------------------------------------------- compiling


def check_compiler() -> None:
    """torch.compile builds its kernels with a C++ compiler; say so before a long traceback."""
    import shutil

    from torch._inductor import config as inductor_config

    compiler = inductor_config.cpp.cxx[-1]
    if not shutil.which(compiler):
        raise MnistlabError(
            f"--compile needs the C++ compiler {compiler} on the PATH; install it or drop --compile"
        )


# ----------------------------------------------------------------------------- runs


def run_info(
    cfg: Config,
    device: torch.device,
    compile: bool,
    precision: str,
    model: ModelArg | None = None,
) -> dict[str, Any]:
    """run.json at the start (rundir.run_info) for the network `model` gives, as for setup,
    measured before setup moves it (channels_last can hide a flatten's RF)."""
    with torch.random.fork_rng(devices=[]):  # building a model to measure it draws weights
        return rundir.run_info(cfg, instantiate(cfg, model), device, compile, precision)


def finish(path: Path, cfg: Config, parts: Parts, loaders: Loaders, records, test_log_probs):
    """model.pt (the evaluated weights), test predictions, and the finished flag."""
    labels = None
    if loaders.test is not None:
        labels = loaders.test.labels
        if test_log_probs is None:  # resumed after the last epoch, before the run finished
            _, test_log_probs = evaluate(parts.eval_model, loaders.test, parts.outputs)
    state = rundir.final_model_state(
        cfg,
        parts.eval_model,
        records[-1].get("test_acc"),
        loaders.spec.mean,
        loaders.spec.std,
        parts.outputs,
    )
    rundir.write_final(path, state, labels, test_log_probs)


def train_run(
    cfg: Config,
    out: Path,
    device: torch.device,
    data_dir=None,
    compile: bool = False,
    progress: bool = False,
    tensorboard: str | None = None,
    console: bool = True,
    model: ModelArg | None = None,
    sinks: list[Sink] | None = None,
    outputs: str | None = None,
) -> list[dict]:
    """Train a new run into `out`; returns its per-epoch records.

    `model` replaces building cfg.model (see setup); cfg.model is what the run records to
    rebuild it. `sinks` are told of every epoch besides the console and the run directory.
    `outputs`: what the model returns, when the caller made check_model already (api.train
    does, before it prints); None checks it here.
    """
    rundir.check_new(out)  # before any data is loaded
    check_tensorboard(tensorboard or cfg.log.tensorboard)
    if outputs is None:
        _, outputs = check_model(cfg, device, model)
    compile = compile or cfg.compile
    precision = resolve_precision(cfg.precision, device, cpu_info())
    loaders = make_loaders(cfg, device, data_dir)
    info = run_info(cfg, device, compile, precision, model)
    info.update(outputs=outputs, data_dir=rundir.data_dir_record(data_dir))
    parts = setup(cfg, device, len(loaders.train), compile, precision == "bf16", model, outputs)
    extra = list(sinks or [])
    sinks = make_sinks(cfg, loaders, tensorboard, console)
    with rundir.create(out, cfg, info) as path:
        sinks += [RunDirSink(path, cfg), *extra]
        records, test_log_probs = fit(cfg, parts, loaders, sinks, progress=progress)
        finish(path, cfg, parts, loaders, records, test_log_probs)
    return records


def resume_run(
    path: Path,
    device: torch.device,
    data_dir=None,
    progress: bool = False,
    tensorboard: str | None = None,
    console: bool = True,
    sinks: list[Sink] | None = None,
    model: ModelArg | None = None,
) -> list[dict] | None:
    """Continue a stopped run where its checkpoint left it; None if it had finished.

    A run started with --compile goes on compiled, in the same precision: the same kernels,
    the same numbers. `model`: the network to continue (see ModelArg), for a run whose model
    cannot be rebuilt from its record (a class defined in a notebook); its weights are
    replaced by the checkpoint's. `data_dir`: default the one the run recorded.
    """
    path = Path(path)
    stopped = rundir.resumable(path)  # before any data is loaded or file touched
    if stopped.finished:
        return None
    cfg, metrics = stopped.cfg, stopped.metrics
    check_tensorboard(tensorboard or cfg.log.tensorboard)
    with rundir.locked(path):
        start_epoch, state = 1, None
        if stopped.has_checkpoint:
            state = rundir.read_checkpoint(path)  # again, under the lock
            rundir.check_checkpoint(path, cfg, state)
            metrics = rundir.records_at_checkpoint(metrics, state, path)
        check_resumable_model(path, cfg, device, model)  # before any data is loaded
        if data_dir is None:
            data_dir = stopped.data_dir
        loaders = make_loaders(cfg, device, data_dir)
        parts = setup(
            cfg, device, len(loaders.train), stopped.compile, stopped.bf16, model, stopped.outputs
        )
        if state is not None:
            start_epoch = restore_checkpoint(parts, state, cfg, path / rundir.CHECKPOINT) + 1
        extra = list(sinks or [])
        sinks = make_sinks(cfg, loaders, tensorboard, console)
        sinks += [RunDirSink(path, cfg), *extra]
        if console and start_epoch > cfg.epochs:  # killed after its last epoch's checkpoint
            print(f"Finishing {path}: epoch {cfg.epochs} of {cfg.epochs} was trained")
        elif console:
            print(f"Resuming {path} at epoch {start_epoch} of {cfg.epochs}")
        records, test_log_probs = fit(
            cfg, parts, loaders, sinks, start_epoch, metrics[: start_epoch - 1], progress
        )
        finish(path, cfg, parts, loaders, records, test_log_probs)
    return records


def check_resumable_model(
    path: Path, cfg: Config, device: torch.device, model: ModelArg | None
) -> None:
    """The network a stopped run goes on with builds and fits: the one passed, or the one its
    record names. A user's class the record cannot rebuild (defined in a notebook) is passed
    in from Python; the error says how."""
    try:
        check_model(cfg, device, model)
    except MnistlabError:
        if model is not None or ":" not in cfg.model:
            raise
        from mnistlab.models.spec import needs_instance

        raise MnistlabError(
            f"{path}: its model {cfg.model!r} cannot be rebuilt here; continue it from Python "
            f"with the network passed: ml.train(resume={str(path)!r}, {needs_instance(cfg.model)})"
        ) from None


def make_sinks(cfg: Config, loaders: Loaders, tensorboard: str | None, console: bool) -> list:
    sinks: list[Sink] = [ConsoleSink(loaders)] if console else []
    logdir = tensorboard or cfg.log.tensorboard
    if logdir:
        sinks.append(TensorBoardSink(logdir))
    return sinks


def default_out(name: str, root: str | Path = "runs") -> Path:
    """runs/<name>-<timestamp>, with -2, -3, ... when a run started in the same second."""
    base = Path(root) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out, number = base, 1
    while out.exists():
        number += 1
        out = base.with_name(f"{base.name}-{number}")
    return out
