"""`mnistlab confirm`: the robustness protocol, the one place a recipe meets the test set.

Every experiment is trained with every seed under every thread setting, on all 60,000
training images, each run in a process of its own (threads are per process, and a fresh
process is what a user's `make run` is). The table has per run the last 3 test accuracies
and, over all runs, the minimum, the mean of the last-3 means, and how many runs hold the
line in each of their last 3 epochs.

Runs land in results/<experiment>/<device>-<threads>t[-compiled]/seed<N>. A finished run
there is read, not retrained, and a stopped one is resumed: a confirm can be stopped and
started again, and every attempt's runs stay on disk to be committed, passing or not.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnistlab.config import LAST_N, Config, load_config
from mnistlab.config import TARGET_ACC as LINE  # the target, in each of the last 3 epochs
from mnistlab.errors import MnistlabError, arg, given
from mnistlab.fileio import atomic_write_text
from mnistlab.runs.rundir import (
    blocking_file,
    check_new,
    is_run_dir,
    read_info,
    read_run,
    resumable,
    run_folder,
)

MAX_SEEDS = 1000  # each seed is a full training per experiment and thread setting


@dataclasses.dataclass
class Plan:
    experiment: Path
    name: str
    seed: int
    threads: int
    out: Path
    cfg: Config | None = None  # the experiment as loaded


def check_experiment(path: str | Path, cfg: Config) -> None:
    """The table needs a test accuracy in each of a run's last LAST_N epochs: refuse an
    experiment that cannot give them before anything is trained."""
    if cfg.epochs < LAST_N:
        raise MnistlabError(
            f"{path}: epochs = {cfg.epochs}, but confirm's table needs the test accuracy of "
            f"each of the last {LAST_N} epochs; set epochs to {LAST_N} or more"
        )
    if cfg.test != "every-epoch":
        when = "never reads the test set" if cfg.test == "never" else "tests only once, at the end"
        raise MnistlabError(
            f"{path}: test = {cfg.test!r} {when}, but confirm's table needs the test accuracy "
            f'of each of the last {LAST_N} epochs; set test = "every-epoch"'
        )


def plan_runs(
    experiments: list[str],
    seeds: list[int],
    threads: list[int],
    results: Path,
    device: str,
    compiled: bool,
) -> list[Plan]:
    """One run per experiment x thread setting x seed, in that order."""
    plans = []
    for path in experiments:
        cfg = load_config(path)  # a bad experiment file fails here, before any training
        check_experiment(path, cfg)
        for t in threads:
            for seed in seeds:
                out = run_folder(results, cfg.name, device, t, compiled, seed)
                plans.append(Plan(Path(path), cfg.name, seed, t, out, cfg))
    return plans


def train_command(
    plan: Plan, device: str, compiled: bool, data_dir: str | Path | None
) -> list[str]:
    command = [sys.executable, "-m", "mnistlab", "train"]
    if is_run_dir(plan.out):
        command += ["--resume", str(plan.out)]
    else:
        command += [str(plan.experiment), "--seed", str(plan.seed), "--out", str(plan.out)]
        command += ["--compile"] if compiled else []
    command += ["--threads", str(plan.threads), "--device", device, "--quiet"]
    return command + (["--data-dir", str(data_dir)] if data_dir else [])


def _blank(key: str, value: Any) -> str:
    return f"{arg(key)}{'' if arg(key).endswith('=') else ' '}{value!r}"


def check_results(results: Any) -> Path:
    """The folder runs go to: a folder, or one that can be made."""
    if not isinstance(results, str | os.PathLike):
        raise MnistlabError(f"{arg('results')} got a {type(results).__name__}; give a folder")
    if not os.fspath(results).strip():
        raise MnistlabError(f"{_blank('results', results)}: empty; give a folder for the runs")
    path = Path(results)
    blocker = blocking_file(path, itself=True)
    if blocker is not None:
        raise MnistlabError(
            f"{given('results', os.fspath(results))}: cannot write there, {blocker} is a file, "
            "not a folder; give a folder for the runs"
        )
    return path


def check_out(out: Any) -> Path | None:
    """The file the table is also written to (None: none): a file name whose folder can be
    made, checked before anything is trained."""
    if out is None:
        return None
    if not isinstance(out, str | os.PathLike):
        raise MnistlabError(f"{arg('out')} got a {type(out).__name__}; give a file name")
    text = os.fspath(out)
    if not text.strip():
        raise MnistlabError(f"{_blank('out', out)}: empty; give a file name such as 'confirm.md'")
    shown = given("out", text)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise MnistlabError(
            f"{shown}: names a folder; give a file name such as "
            f"{os.path.join(text, 'confirm.md')!r}"
        )
    blocker = blocking_file(text)
    if blocker is not None:
        raise MnistlabError(
            f"{shown}: cannot write there, {blocker} is a file, not a folder; give another path"
        )
    return Path(text)


def check_model_once(plans: list[Plan], device: str) -> None:
    """Each experiment's network through one dry forward pass (models.check_fits) before
    any training process starts: a model that does not fit fails here once, not in every
    run's process after the previous ones trained."""
    import torch

    from mnistlab.training.trainer import check_model

    checked: set[Path] = set()
    for plan in plans:
        if plan.experiment not in checked and plan.cfg is not None:
            checked.add(plan.experiment)
            check_model(plan.cfg, torch.device(device))


def _child_error(stderr: str) -> str | None:
    """The one-line error a `mnistlab train` process ended with, without its prefix."""
    prefix = "mnistlab: error: "
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    return lines[-1].removeprefix(prefix) if lines else None


def row(plan: Plan) -> dict[str, Any]:
    run = read_run(plan.out)
    last = [r.get("test_acc") for r in run.metrics[-LAST_N:]]
    if len(last) < LAST_N or None in last:
        raise MnistlabError(f"{plan.out}: needs test accuracy in each of its last {LAST_N} epochs")
    info = read_info(plan.out)
    cpu = info.get("cpu", {})
    return {
        "run": plan.out.as_posix(),
        "experiment": plan.name,
        "seed": plan.seed,
        "threads": plan.threads,
        "params": info["params"],
        "epochs": len(run.metrics),
        "last3": last,
        "last3_mean": round(sum(last) / LAST_N, 4),
        "holds": all(acc >= LINE for acc in last),
        "cpu": cpu.get("model", "unknown"),
        "cpu_flags": cpu.get("flags", []),
        "finished": run.finished,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    every = [acc for r in rows for acc in r["last3"]]
    means = [r["last3_mean"] for r in rows]
    return {
        "runs": len(rows),
        "min": min(every),
        "mean_of_last3_means": round(sum(means) / len(means), 4),
        "holding": sum(r["holds"] for r in rows),
    }


def format_markdown(rows: list[dict[str, Any]], total: dict[str, Any]) -> str:
    lines = [
        f"| run | params | threads | seed | last {LAST_N} test accuracies (%) | mean | "
        f"holds ≥{LINE} |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        accs = " / ".join(f"{a:.2f}" for a in r["last3"])
        lines.append(
            f"| {r['run']} | {r['params']:,} | {r['threads']} | {r['seed']} | {accs} | "
            f"{r['last3_mean']:.2f} | {'yes' if r['holds'] else '**no**'} |"
        )
    cpus = sorted({f"{r['cpu']} ({', '.join(r['cpu_flags']) or 'no listed flags'})" for r in rows})
    # Short lines: the table goes into the README as it is.
    lines += [
        "",
        f"Over {total['runs']} runs: lowest of the last-{LAST_N} accuracies {total['min']:.2f}%; "
        f"mean of the last-{LAST_N} means {total['mean_of_last3_means']:.2f}%;",
        f"{total['holding']} of {total['runs']} runs at or above {LINE}% in each of their "
        f"last {LAST_N} epochs.",
        *[f"CPU: {cpu}." for cpu in cpus],
    ]
    return "\n".join(lines)


def confirm(
    experiments: list[str | Path],
    *,
    seeds: int = 3,
    threads: list[int] | tuple[int, ...] = (1, 2),
    compile: bool = False,
    results: str | Path = "results",
    train: bool = True,
    out: str | Path | None = None,
    device: str | None = None,
    data_dir: str | Path | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Train (or read, or resume) every experiment x thread setting x seed 1..`seeds`; the
    rows and the Markdown table. `train=False` only reads finished runs. `out`: also write
    the table there."""
    from mnistlab.device import MAX_THREADS, pick_device

    torch_device = str(pick_device(device))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise MnistlabError(
            f"{arg('seeds')} {seeds!r}: must be a whole number from 1 to {MAX_SEEDS}"
        )
    threads = list(threads)
    if not threads or any(
        isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS for n in threads
    ):
        raise MnistlabError(
            f"{arg('threads')} {threads!r}: give whole numbers from 1 to {MAX_THREADS}"
        )
    results = check_results(results)
    out = check_out(out)
    plans = plan_runs(
        [str(e) for e in experiments],
        list(range(1, seeds + 1)),
        threads,
        results,
        torch_device,
        compile,
    )
    # Everything that can be known before training is checked before the first run starts:
    # a run that cannot be trained, resumed or read is refused now, not after hours.
    finished: set[Path] = set()
    to_train: list[Plan] = []
    for plan in plans:
        if is_run_dir(plan.out):
            if read_run(plan.out).finished:
                finished.add(plan.out)
                continue
            if train:
                resumable(plan.out)  # its files agree with its config, it can go on
        elif train:
            check_new(plan.out)
        if not train:
            raise MnistlabError(
                f"{plan.out}: not a finished run, and {given('train', False)} trains nothing; "
                "drop it to train the run"
            )
        to_train.append(plan)
    if to_train:
        if compile:
            from mnistlab.training.trainer import check_compiler

            check_compiler()
        check_model_once(to_train, torch_device)
    for i, plan in enumerate(plans, 1):
        if plan.out in finished:
            print(f"[{i}/{len(plans)}] {plan.out}: finished, read as it is")
            continue
        print(f"[{i}/{len(plans)}] training {plan.out}", flush=True)
        # The child's error line is relayed as this command's one line, not printed beside it.
        done = subprocess.run(
            train_command(plan, torch_device, compile, data_dir), stderr=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            reason = _child_error(done.stderr) or f"exit {done.returncode}"
            raise MnistlabError(
                f"{plan.out}: training failed ({reason}); fix it and run confirm again, it resumes"
            )
        sys.stderr.write(done.stderr)  # its warnings, if any
    rows = [row(plan) for plan in plans]
    text = format_markdown(rows, summarize(rows))
    if out:
        atomic_write_text(Path(out), text + "\n")
    return rows, text
