"""The trainer: one short loop, checkpoints every epoch, exact resume.

Speed comes from keeping the data on the device as tensors (no DataLoader, no per-sample
Python), counting train accuracy from the same forward pass the loss uses (the seed notebook
ran the model twice per batch), channels_last memory format, and optionally torch.compile
(`--compile`). `mnistlab bench` measures each against the notebook's loop.
"""

import argparse
import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnistlab.augment import make_augment
from mnistlab.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_write_bytes,
    atomic_write_text,
    load_torch,
    read_json,
    read_metrics,
    save_model,
    save_torch,
)
from mnistlab.config import Config, dumps_toml, from_dict, load_config, override, to_dict
from mnistlab.data import Loader, get_spec, load_split, split_validation
from mnistlab.errors import MnistlabError
from mnistlab.evaluate import predict, summarize_predictions, test_line
from mnistlab.models import create_model
from mnistlab.summary import format_table, model_stats, summarize


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MnistlabError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    if opt.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)


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
        ), True
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps, s.min_lr), True
    return None, False


def nll_loss(log_probs: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    loss = F.nll_loss(log_probs, target)
    if smoothing:
        loss = (1 - smoothing) * loss - smoothing * log_probs.mean(dim=1).mean()
    return loss


class Run:
    """Everything one training run needs, built from a config (the run directory is its record)."""

    def __init__(
        self, cfg: Config, run_dir: Path, device: torch.device, data_dir=None, compile=False
    ) -> None:
        self.cfg, self.run_dir, self.device = cfg, Path(run_dir), device
        if device.type == "cuda":
            # Same seed, same numbers: cuDNN's autotuner and non-deterministic kernels would
            # make two runs of one seed differ in the last bits, and then in the metrics.
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        spec = get_spec(cfg.dataset)
        self.spec = spec
        train_images, train_labels = load_split(spec.name, train=True, root=data_dir)
        test_images, test_labels = load_split(spec.name, train=False, root=data_dir)
        if cfg.limit_train:
            train_images, train_labels = (
                train_images[: cfg.limit_train],
                train_labels[: cfg.limit_train],
            )
        if cfg.limit_test:
            test_images, test_labels = test_images[: cfg.limit_test], test_labels[: cfg.limit_test]
        self.val_loader = None
        norm = dict(mean=spec.mean, std=spec.std, device=device, channels_last=cfg.channels_last)
        if cfg.val_size:
            (train_images, train_labels), (val_images, val_labels) = split_validation(
                train_images, train_labels, cfg.val_size
            )
            self.val_loader = Loader(val_images, val_labels, cfg.test_batch_size, **norm)
        self.train_loader = Loader(
            train_images,
            train_labels,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            augment=make_augment(cfg.augment),
            **norm,
        )
        self.test_loader = Loader(test_images, test_labels, cfg.test_batch_size, **norm)

        torch.manual_seed(cfg.seed)  # the model's initial weights depend on the seed only
        self.model = create_model(cfg.model).to(device)
        if cfg.channels_last:
            # NHWC lets oneDNN/cuDNN pick faster convolution kernels (see `mnistlab bench`).
            self.model = self.model.to(memory_format=torch.channels_last)
        # Training steps go through the compiled module; it shares the model's parameters, so
        # checkpoints and evaluation use the plain model. Inductor fuses each ReLU + BatchNorm
        # pair, forward and backward, into one pass over the activations (see `mnistlab bench`).
        self.compiled = compile
        # dynamic=False: every step's kernels are specialised to the batch size (the smaller
        # last batch of an epoch runs eagerly, see train_epoch).
        self.train_model = torch.compile(self.model, dynamic=False) if compile else self.model
        self.optimizer = make_optimizer(cfg, self.model)
        self.scheduler, self.per_batch = make_scheduler(cfg, self.optimizer, len(self.train_loader))
        self.start_epoch = 1

    # --------------------------------------------------------------- checkpoints

    def save_checkpoint(self, epoch: int) -> None:
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "version": 1,
                "epoch": epoch,
                "model_name": self.cfg.model,
                "config": to_dict(self.cfg),
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict() if self.scheduler else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "dataset": self.spec.name,
                "mean": self.spec.mean,
                "std": self.spec.std,
            },
            self.run_dir / "checkpoint.pt",
        )

    def load_checkpoint(self) -> None:
        path = self.run_dir / "checkpoint.pt"
        state = load_torch(path, CHECKPOINT_FORMAT)
        if state["model_name"] != self.cfg.model:
            raise MnistlabError(
                f"{path}: holds model {state['model_name']!r}, config says {self.cfg.model!r}"
            )
        try:
            self.model.load_state_dict(state["model_state"])
            self.optimizer.load_state_dict(state["optimizer_state"])
            if self.scheduler:
                self.scheduler.load_state_dict(state["scheduler_state"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise MnistlabError(
                f"{path}: does not match this run's model or optimizer ({e})"
            ) from None
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.start_epoch = state["epoch"] + 1

    # --------------------------------------------------------------- the loop

    def train_epoch(
        self, epoch: int, progress: bool, max_batches: int | None = None
    ) -> tuple[float, float]:
        """One pass over the training set (or its first `max_batches`): (mean loss, accuracy %)."""
        model, optimizer, loader = self.train_model, self.optimizer, self.train_loader
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        processed = 0
        pbar = tqdm(loader.batches(epoch), total=len(loader), disable=not progress, leave=True)
        for batch_idx, (data, target) in enumerate(pbar):
            if batch_idx == max_batches:
                break
            optimizer.zero_grad(set_to_none=True)
            # Compiled, the epoch's smaller last batch would need a graph of its own (25 s of
            # compiling with an empty cache, for gap_deep at 2 threads); it runs eagerly instead.
            output = (model if len(target) == loader.batch_size else self.model)(data)
            loss = nll_loss(output, target, self.cfg.label_smoothing)
            loss.backward()
            optimizer.step()
            if self.per_batch:
                self.scheduler.step()
            # Count from the forward pass we already have; no second forward, no sync here.
            loss_sum += loss.detach() * len(target)
            correct += (output.detach().argmax(dim=1) == target).sum()
            processed += len(target)
            if batch_idx % 50 == 0 or batch_idx == len(loader) - 1:
                if not math.isfinite(loss.item()):
                    raise MnistlabError(
                        f"loss became {loss.item()} at epoch {epoch}, batch {batch_idx}; "
                        f"stopped, the last good checkpoint is kept in {self.run_dir} "
                        "(lower the learning rate and try again)"
                    )
                pbar.set_description(
                    f"Epoch={epoch} Loss={loss.item():.4f} batch_id={batch_idx} "
                    f"Accuracy={100 * correct.item() / processed:0.2f}%",
                    refresh=False,
                )
        if self.scheduler and not self.per_batch:
            self.scheduler.step()
        return loss_sum.item() / processed, 100.0 * correct.item() / processed

    def run(self, progress: bool = True) -> dict:
        cfg, run_dir = self.cfg, self.run_dir
        records = [r for r in _read_records(run_dir) if r["epoch"] < self.start_epoch]
        test_log_probs = None
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            lr = self.optimizer.param_groups[0]["lr"]
            started = time.perf_counter()
            train_loss, train_acc = self.train_epoch(epoch, progress)
            seconds = time.perf_counter() - started
            record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            if self.val_loader is not None:
                val = summarize_predictions(
                    predict(self.model, self.val_loader), self.val_loader.labels
                )
                record.update(val_loss=val["loss"], val_acc=val["accuracy"])
                print(test_line(val["loss"], val["correct"], val["total"], "Validation"))
            test_log_probs = predict(self.model, self.test_loader)
            test = summarize_predictions(test_log_probs, self.test_loader.labels)
            print(test_line(test["loss"], test["correct"], test["total"]))
            record.update(
                test_loss=test["loss"],
                test_acc=test["accuracy"],
                lr=lr,
                seconds=round(seconds, 3),
                images_per_s=round(self.train_loader.num_samples / seconds, 1),
            )
            records.append(record)
            atomic_write_text(
                run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records)
            )
            self.save_checkpoint(epoch)
        if test_log_probs is None:  # resumed after the last epoch, before the run finished
            test_log_probs = predict(self.model, self.test_loader)
        self.finish(records, test_log_probs)
        return records[-1]

    def finish(self, records: list[dict], test_log_probs: torch.Tensor) -> None:
        """Final weights, test-set predictions and the finished flag."""
        confidence, pred = test_log_probs.exp().max(dim=1)
        save_model(
            self.run_dir / "model.pt",
            self.cfg.model,
            self.model.state_dict(),
            config=to_dict(self.cfg),
            test_acc=records[-1]["test_acc"],
            dataset=self.spec.name,
            mean=self.spec.mean,
            std=self.spec.std,
        )
        buffer = _npz_bytes(
            label=self.test_loader.labels.cpu().numpy().astype(np.uint8),
            pred=pred.numpy().astype(np.uint8),
            confidence=confidence.numpy().astype(np.float32),
        )
        atomic_write_bytes(self.run_dir / "predictions.npz", buffer)
        _update_run_info(self.run_dir, finished=True)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _read_records(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []


def _read_run_info(run_dir: Path) -> dict:
    """run.json as a dict ({} before the run has written one); damaged is a one-line error."""
    path = run_dir / "run.json"
    return read_json(path) if path.is_file() else {}


def _update_run_info(run_dir: Path, **changes) -> None:
    info = _read_run_info(run_dir)
    info.update(changes)
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2) + "\n")


def check_compiler() -> None:
    """torch.compile builds its kernels with a C++ compiler; say so before a long traceback."""
    import shutil

    from torch._inductor import config as inductor_config

    compiler = inductor_config.cpp.cxx[-1]
    if not shutil.which(compiler):
        raise MnistlabError(
            f"--compile needs the C++ compiler {compiler} on the PATH; install it or drop --compile"
        )


def start_run(
    cfg: Config, run_dir: Path, device: torch.device, data_dir=None, compile: bool = False
) -> Run:
    """Create a new run directory (config.toml, run.json) and the Run for it."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.jsonl").exists():
        raise MnistlabError(
            f"{run_dir}: already holds a run; use --resume {run_dir} or another --out"
        )
    run = Run(cfg, run_dir, device, data_dir, compile)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", dumps_toml(to_dict(cfg)))
    stats = model_stats(create_model(cfg.model), (1, 28, 28))
    _update_run_info(
        run_dir,
        name=cfg.name,
        model=cfg.model,
        dataset=cfg.dataset,
        **stats,
        device=str(device),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        compile=compile,
        epochs_planned=cfg.epochs,
        finished=False,
    )
    return run


def resume_run(run_dir: Path, device: torch.device, data_dir=None) -> Run:
    """Rebuild a stopped run from its directory and restore its last checkpoint.

    A run started with --compile goes on compiled: the same kernels, the same numbers.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise MnistlabError(f"{run_dir}: not a run directory (no config.toml)")
    import tomllib

    cfg = from_dict(tomllib.loads(config_path.read_text()), str(config_path))
    run = Run(cfg, run_dir, device, data_dir, _read_run_info(run_dir).get("compile", False))
    if (run_dir / "checkpoint.pt").exists():
        run.load_checkpoint()
    return run


def train_from_cli(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.compile:
        check_compiler()
    if args.resume:
        changed = [
            k
            for k in (
                "experiment",
                "model",
                "epochs",
                "batch_size",
                "lr",
                "seed",
                "val_size",
                "limit_train",
                "limit_test",
                "out",
                "compile",
            )
            if getattr(args, k)
        ]
        if changed:
            raise MnistlabError(
                f"--resume continues a run as configured; drop --{changed[0].replace('_', '-')}"
            )
        run = resume_run(Path(args.resume), device, args.data_dir)
        print(f"Resuming {args.resume} at epoch {run.start_epoch} of {run.cfg.epochs}")
    else:
        cfg = load_config(args.experiment) if args.experiment else Config(name=args.model or "seed")
        cfg = override(
            cfg,
            "command line",
            model=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            val_size=args.val_size,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            **{"optimizer.lr": args.lr},
        )
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-{stamp}"
        run = start_run(cfg, run_dir, device, args.data_dir, args.compile)
        print(format_table(summarize(create_model(cfg.model))))
        print(
            f"Training {cfg.name} ({cfg.model}) on {device}, {torch.get_num_threads()} threads"
            f"{', compiled' if args.compile else ''} -> {run_dir}"
        )
    last = run.run(progress=not args.quiet)
    print(f"Done: test accuracy {last['test_acc']:.2f}%, run directory {run.run_dir}")
