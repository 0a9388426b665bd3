"""Trials per hour of a search, per worker setting, from the study and its trials' run.json.

A study run first with `--workers 1` and then continued with `--workers 2` holds trials
trained with 2 threads and trials trained with 1 (threads per worker = cores / workers). For
each thread count and pruner (trials that name none ran under the one the study was started
with) this counts the trials that trained (not infeasible) and ended by `--until`, and the
epochs they trained, over the time in which at least one of them was training (so the gaps
between runs of the command do not count); `--until` leaves out a window in which other work
shared the machine.

    python benchmarks/search_rate.py results/search/under-5k [--until 2026-11-29T23:00:00]
"""

import argparse
from datetime import datetime
from pathlib import Path

from mnistlab.runs import rundir
from mnistlab.search.report import load_study
from mnistlab.search.run import default_storage


def busy_seconds(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds in which at least one of the spans was open (gaps between runs left out)."""
    total, end = 0.0, None
    for start, stop in sorted(spans):
        if end is None or start > end:
            total, end = total + (stop - start).total_seconds(), stop
        elif stop > end:
            total, end = total + (stop - end).total_seconds(), stop
    return total


def rate_table(folder: Path, until: datetime | None) -> str:
    study, trials = load_study(default_storage(folder.parent, folder.name), folder.name)
    started_with = study.user_attrs["space"]["pruner"]
    groups: dict[tuple[int, str], list] = {}
    for trial in trials:
        run = trial.user_attrs.get("run")
        ended = trial.state.name in ("COMPLETE", "PRUNED")
        if run is None or not ended or (until is not None and trial.datetime_complete > until):
            continue  # infeasible, failed, running, or after the window
        info = rundir.read_info(folder / Path(run).name)
        pruner = trial.user_attrs.get("pruner", started_with)
        groups.setdefault((info["threads"], pruner), []).append(trial)
    lines = [
        f"study {folder.name}: trials that trained and ended"
        + (f" by {until.isoformat(timespec='seconds')}" if until else ""),
        "threads/trial  pruner  trials  complete  pruned  epochs   hours  trials/h  epochs/h",
    ]
    for (threads, pruner), trials in sorted(groups.items(), key=lambda g: g[1][0].number):
        hours = busy_seconds([(t.datetime_start, t.datetime_complete) for t in trials]) / 3600
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        epochs = sum(t.user_attrs.get("epochs", 0) for t in complete)
        epochs += sum(t.last_step or 0 for t in trials if t.state.name == "PRUNED")
        lines.append(
            f"{threads:>13}  {pruner:>6}  {len(trials):>6}  {len(complete):>8}  "
            f"{len(trials) - len(complete):>6}  {epochs:>6}  {hours:>6.2f}  "
            f"{len(trials) / hours:>8.1f}  {epochs / hours:>8.1f}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the study's folder (holding study.db)")
    parser.add_argument("--until", type=datetime.fromisoformat, help="end of the window")
    args = parser.parse_args()
    print(rate_table(args.folder, args.until), end="")


if __name__ == "__main__":
    main()
