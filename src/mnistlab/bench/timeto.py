"""`mnistlab bench --time-to ACC EXP ...`: training time to a test accuracy, recipe against recipe.

Every recipe (an experiment file) is trained to its end with seeds 1..N, each run in a process
of its own (threads are per process, a fresh process is what a user's run is, and its peak
resident memory is its own). The runs are interleaved, seed 1 of every recipe, then seed 2, ...,
so that drift in the machine's load hits every recipe alike; all get the same threads and
device.

What is timed is what the runs record as training seconds: the sum of their epochs'
`seconds`, which leave out evaluation (the recipes test once, at the end) and set-up.

Compile cost: every recipe gets an empty compile cache of its own (TORCHINDUCTOR_CACHE_DIR,
TRITON_CACHE_DIR) for its first run and keeps it for its later seeds, as a user's machine
would. A compiled run's first epoch carries the compiling; its excess over the mean of the
run's later epochs is that run's compile overhead. The first (empty-cache) run's excess is the
recipe's compile cost, shown once and added to its total; each run's training seconds count
its first epoch at the mean of its later epochs. An eager recipe's first epoch is counted as
it is (its one-time costs, such as picking kernels, are small and paid by every run).

A recipe reaches ACC when the mean of its seeds' final test accuracies is at least ACC. The
ratio is each recipe's total over the first recipe's.
"""

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mnistlab.config import Config, load_config, override
from mnistlab.device import cpu_info
from mnistlab.errors import MnistlabError
from mnistlab.models import build
from mnistlab.models.summary import count_parameters
from mnistlab.runs import rundir


@dataclasses.dataclass
class Recipe:
    path: Path
    cfg: Config
    params: int

    @property
    def name(self) -> str:
        return self.cfg.name


@dataclasses.dataclass
class Run:
    """What one training process left: its epochs' seconds, final accuracy, peak memory."""

    recipe: str
    seed: int
    epoch_seconds: list[float]
    test_acc: float
    peak_rss_mib: float
    cache: str  # "empty" for a recipe's first run, "warm" after


# (recipe, seed, run directory, threads, device, data dir, compile cache dir) -> Run
Runner = Callable[[Recipe, int, Path, int, str, str | None, Path], Run]


def load_recipes(paths: list[str], compiled: tuple[str, ...] = ()) -> list[Recipe]:
    """The recipes, every file checked before anything trains; those in `compiled` train
    compiled whatever their file says (as `mnistlab train --compile` does)."""
    unknown = [p for p in compiled if p not in paths]
    if unknown:
        raise MnistlabError(f"--compiled {unknown[0]}: not one of the --time-to experiments")
    recipes = []
    for path in paths:
        cfg = load_config(path)
        if path in compiled:
            cfg = override(cfg, path, compile=True)
        if cfg.test == "never":
            raise MnistlabError(f'{path}: test = "never"; a time-to-accuracy recipe needs test')
        if cfg.compile and cfg.epochs < 2:
            raise MnistlabError(
                f"{path}: a compiled recipe needs epochs >= 2 (its later epochs are what "
                "separates the compile cost from training)"
            )
        if cfg.name in [r.name for r in recipes]:
            raise MnistlabError(f"{path}: a second recipe named {cfg.name!r}")
        with torch.random.fork_rng(devices=[]):
            params = count_parameters(build(cfg.model, cfg.net))
        recipes.append(Recipe(Path(path), cfg, params))
    return recipes


def interleaved(recipes: list[Recipe], seeds: int) -> list[tuple[Recipe, int]]:
    """Seed 1 of every recipe, then seed 2 of every recipe, ..."""
    return [(recipe, seed) for seed in range(1, seeds + 1) for recipe in recipes]


def peak_rss_mib(usage: Any) -> float:
    """ru_maxrss of a reaped child: KiB on Linux, bytes on macOS."""
    scale = 1 if sys.platform == "darwin" else 1024
    return round(usage.ru_maxrss * scale / 2**20, 1)


def run_in_process(
    recipe: Recipe,
    seed: int,
    out: Path,
    threads: int,
    device: str,
    data_dir: str | None,
    cache: Path,
) -> Run:
    """`mnistlab train` in a child process; its peak RSS from wait4 (the largest process of
    its tree, compile workers included)."""
    command = [sys.executable, "-m", "mnistlab", "train", str(recipe.path)]
    command += ["--seed", str(seed), "--out", str(out), "--threads", str(threads)]
    command += ["--device", device, "--quiet"] + (["--data-dir", data_dir] if data_dir else [])
    command += ["--compile"] if recipe.cfg.compile else []
    first = not any(cache.iterdir())
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), TRITON_CACHE_DIR=str(cache / "tr"))
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as f:
        child = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        raise MnistlabError(
            f"{recipe.path}, seed {seed}: training failed (exit {child.returncode}): {lines[-1]}"
        )
    metrics = rundir.read_metrics(out)
    if "test_acc" not in metrics[-1]:
        raise MnistlabError(f"{out}: its last epoch has no test accuracy")
    return Run(
        recipe.name,
        seed,
        [r["seconds"] for r in metrics],
        metrics[-1]["test_acc"],
        peak_rss_mib(usage),
        "empty" if first else "warm",
    )


def compile_overhead(epoch_seconds: list[float]) -> float:
    """How much longer the first epoch took than the mean of the later ones (>= 0)."""
    later = epoch_seconds[1:]
    return max(0.0, epoch_seconds[0] - sum(later) / len(later)) if later else 0.0


def summarize(recipe: Recipe, runs: list[Run], acc: float) -> dict[str, Any]:
    """One recipe's row: accuracy over seeds, mean training seconds, compile cost, memory."""
    accs = [r.test_acc for r in runs]
    if recipe.cfg.compile:
        train = [sum(r.epoch_seconds) - compile_overhead(r.epoch_seconds) for r in runs]
        compile_s = compile_overhead(runs[0].epoch_seconds)
    else:
        train, compile_s = [sum(r.epoch_seconds) for r in runs], 0.0
    train_s = sum(train) / len(train)
    mean_acc = sum(accs) / len(accs)
    return {
        "experiment": str(recipe.path),
        "model": recipe.cfg.model,
        "params": recipe.params,
        "epochs": recipe.cfg.epochs,
        "compiled": recipe.cfg.compile,
        "seeds": len(runs),
        "test_acc_mean": round(mean_acc, 3),
        "test_acc_min": min(accs),
        "test_acc_max": max(accs),
        "train_s": round(train_s, 2),
        "compile_s": round(compile_s, 2),
        "total_s": round(train_s + compile_s, 2),
        "peak_rss_mib": max(r.peak_rss_mib for r in runs),
        "reached": mean_acc >= acc,
        "runs": [dataclasses.asdict(r) for r in runs],
    }


def time_to(
    acc: float,
    paths: list[str],
    seeds: int,
    threads: int,
    device: str,
    data_dir: str | None = None,
    runs_dir: Path | None = None,
    runner: Runner = run_in_process,
    progress: Callable[[str], None] = lambda line: None,
    compiled: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train every recipe with seeds 1..seeds, interleaved; one row per recipe."""
    recipes = load_recipes(paths, compiled)
    with tempfile.TemporaryDirectory(prefix="mnistlab-time-to-") as tmp:
        work = Path(tmp)
        base = Path(runs_dir) if runs_dir else work / "runs"
        caches = {}
        for i, recipe in enumerate(recipes):
            caches[recipe.name] = work / "cache" / f"{i}-{recipe.name}"
            caches[recipe.name].mkdir(parents=True)  # empty: the first run compiles from scratch
        runs: dict[str, list[Run]] = {recipe.name: [] for recipe in recipes}
        plan = interleaved(recipes, seeds)
        for recipe, seed in plan:  # every run directory is checked before the first trains
            rundir.check_new(base / recipe.name / f"seed{seed}")
        load = [os.getloadavg()[0]]
        for recipe, seed in plan:
            out = base / recipe.name / f"seed{seed}"
            out.parent.mkdir(parents=True, exist_ok=True)
            run = runner(recipe, seed, out, threads, device, data_dir, caches[recipe.name])
            runs[recipe.name].append(run)
            progress(
                f"{recipe.name} seed {seed}: {run.test_acc:.2f}% after "
                f"{sum(run.epoch_seconds):.1f} s of training"
            )
            load.append(os.getloadavg()[0])
    rows = {recipe.name: summarize(recipe, runs[recipe.name], acc) for recipe in recipes}
    first = rows[recipes[0].name]["total_s"]
    for row in rows.values():
        row["ratio"] = round(row["total_s"] / first, 3) if first else None
    return {
        "time_to": acc,
        "seeds": seeds,
        "device": device,
        "threads": threads,
        "torch": torch.__version__,
        "cpu": cpu_info(),
        # The 1-minute load average before the first run and after each: a busy machine shows.
        "load_average": [round(x, 2) for x in load],
        "recipes": rows,
    }


def format_time_to(result: dict[str, Any]) -> str:
    rows = result["recipes"]
    width = max(14, *(len(name) + 2 for name in rows))
    seeds = f"{result['seeds']} seed{'s' if result['seeds'] != 1 else ''}"
    lines = [
        f"time to {result['time_to']}% test accuracy: {seeds} per recipe, "
        f"interleaved, {result['device']}, {result['threads']} threads, torch {result['torch']}",
        f"{'recipe':<{width}}{'params':>9}{'epochs':>7}{'acc mean':>9}{'min':>7}{'max':>7}"
        f"{'train s':>9}{'compile s':>10}{'total s':>9}{'RSS MiB':>9}{'reached':>8}{'ratio':>8}",
    ]
    for name, row in rows.items():
        compile_s = f"{row['compile_s']:.1f}" if row["compiled"] else "-"
        ratio = f"{row['ratio']:.3f}x" if row["ratio"] is not None else "-"
        lines.append(
            f"{name:<{width}}{row['params']:>9,}{row['epochs']:>7}{row['test_acc_mean']:>9.2f}"
            f"{row['test_acc_min']:>7.2f}{row['test_acc_max']:>7.2f}{row['train_s']:>9.1f}"
            f"{compile_s:>10}{row['total_s']:>9.1f}{row['peak_rss_mib']:>9.0f}"
            f"{'yes' if row['reached'] else 'no':>8}{ratio:>8}"
        )
    lines.append(f"load average (1 min) before and after each run: {result['load_average']}")
    return "\n".join(lines)
