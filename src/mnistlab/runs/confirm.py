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
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnistlab.config import LAST_N, load_config
from mnistlab.config import TARGET_ACC as LINE  # the target, in each of the last 3 epochs
from mnistlab.errors import MnistlabError, arg, given
from mnistlab.fileio import atomic_write_text
from mnistlab.runs.rundir import is_run_dir, read_info, read_run, run_folder


@dataclasses.dataclass
class Plan:
    experiment: Path
    name: str
    seed: int
    threads: int
    out: Path


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
        name = load_config(path).name  # a bad experiment file fails here, before any training
        for t in threads:
            for seed in seeds:
                out = run_folder(results, name, device, t, compiled, seed)
                plans.append(Plan(Path(path), name, seed, t, out))
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
    from mnistlab.device import pick_device

    torch_device = str(pick_device(device))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise MnistlabError(f"{arg('seeds')} {seeds!r}: must be a whole number >= 1")
    threads = list(threads)
    if not threads or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in threads):
        raise MnistlabError(f"{arg('threads')} {threads!r}: give whole numbers >= 1")
    plans = plan_runs(
        [str(e) for e in experiments],
        list(range(1, seeds + 1)),
        threads,
        Path(results),
        torch_device,
        compile,
    )
    for i, plan in enumerate(plans, 1):
        if is_run_dir(plan.out) and read_run(plan.out).finished:
            print(f"[{i}/{len(plans)}] {plan.out}: finished, read as it is")
            continue
        if not train:
            raise MnistlabError(
                f"{plan.out}: not a finished run, and {given('train', False)} trains nothing; "
                "drop it to train the run"
            )
        print(f"[{i}/{len(plans)}] training {plan.out}", flush=True)
        done = subprocess.run(train_command(plan, torch_device, compile, data_dir))
        if done.returncode != 0:
            raise MnistlabError(
                f"{plan.out}: training failed (exit {done.returncode}); fix it and run confirm "
                "again, it resumes"
            )
    rows = [row(plan) for plan in plans]
    text = format_markdown(rows, summarize(rows))
    if out:
        atomic_write_text(Path(out), text + "\n")
    return rows, text
