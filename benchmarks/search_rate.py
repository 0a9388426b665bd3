"""Trials per hour of a search, per worker setting, from the study and its trials' run.json.

A study run first with `--workers 1` and then continued with `--workers 2` holds trials
trained with 2 threads and trials trained with 1 (threads per worker = cores / workers). For
each thread count this counts the trials that trained (not infeasible) and ended by `--until`,
and the epochs they trained, over the wall time from the first such trial's start to the last
one's end, so a window in which other work shared the machine can be left out.

    python benchmarks/search_rate.py results/search/under-5k [--until 2026-11-29T23:00:00]
"""

import argparse
import json
from datetime import datetime
from pathlib import Path

import optuna

from mnistlab.search import STUDY_DB


def rate_table(folder: Path, until: datetime | None) -> str:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{folder / STUDY_DB}"
    study = optuna.load_study(study_name=folder.name, storage=storage)
    groups: dict[int, list] = {}
    for trial in study.get_trials(deepcopy=False):
        run = trial.user_attrs.get("run")
        if run is None or trial.datetime_complete is None:  # infeasible, or still running
            continue
        if until is not None and trial.datetime_complete > until:
            continue
        info = json.loads((folder / Path(run).name / "run.json").read_text())
        groups.setdefault(info["threads"], []).append(trial)
    lines = [
        f"study {folder.name}: trials that trained and ended"
        + (f" by {until.isoformat(timespec='seconds')}" if until else ""),
        "threads/trial  trials  complete  pruned  epochs   hours  trials/h  epochs/h",
    ]
    for threads, trials in sorted(groups.items(), reverse=True):
        start = min(t.datetime_start for t in trials)
        end = max(t.datetime_complete for t in trials)
        hours = (end - start).total_seconds() / 3600
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        epochs = sum(t.user_attrs.get("epochs", 0) for t in complete)
        epochs += sum(t.last_step or 0 for t in trials if t.state.name == "PRUNED")
        lines.append(
            f"{threads:>13}  {len(trials):>6}  {len(complete):>8}  "
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
