"""`mnistlab search report`: a study as a Markdown report with figures, and its best trials as
experiment files for `mnistlab confirm`.

The report holds the best trials, every trial with its state (infeasible trials, pruned before
training because their network broke a constraint, are marked as such; failed trials with
their reason), validation accuracy against parameters with the Pareto front, the optimization
history and the parameter importances. Figures are bare matplotlib Figures (no pyplot), as in
report.py. counts.md, beside README.md, holds the study's counts by state and pruner in one
paragraph, for pages that quote them.
"""

import warnings
from pathlib import Path
from typing import Any

import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from mnistlab.config import dumps_toml, from_dict
from mnistlab.errors import MnistlabError, arg
from mnistlab.fileio import write_files
from mnistlab.runs.figures import FigureWriter, new_figure
from mnistlab.search.run import (
    LAST_N,
    open_storage,
    optuna_module,
    shown_url,
    state_name,
    storage_error,
)
from mnistlab.search.space import Space, space_from_data, suggest, trial_experiment

BEST_SHOWN = 10
FIGSIZE = (8, 5)


# ----------------------------------------------------------------------------- reading


def load_study(storage_url: str, name: str):
    optuna = optuna_module()
    import sqlalchemy.exc

    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
    except KeyError:
        raise MnistlabError(f"storage {shown_url(storage_url)}: has no study {name!r}") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise storage_error(storage_url, e) from None
    if "space" not in study.user_attrs:
        raise MnistlabError(f"study {name!r}: was not made by `mnistlab search run` (no space)")
    return study, trials


def trial_row(trial) -> dict[str, Any]:
    attrs = trial.user_attrs
    state = state_name(trial)
    last = None
    if trial.intermediate_values:
        last = trial.intermediate_values[max(trial.intermediate_values)]
    return {
        "number": trial.number,
        "state": state,
        "value": trial.values[0] if state == "COMPLETE" else None,
        "last_val": last,  # the last reported validation accuracy (pruned trials have one)
        "epochs": len(trial.intermediate_values) or attrs.get("epochs"),
        "params": attrs.get("params"),
        "macs": attrs.get("macs"),
        "rf": attrs.get("rf"),
        "run": attrs.get("run", ""),
        "pruner": attrs.get("pruner"),
        "lost": state == "FAIL" and bool(attrs.get("lost")),
        # why a trial was not trained, or failed (a trial that ended well keeps no reason)
        "note": attrs.get("infeasible") or (attrs.get("error") if state == "FAIL" else "") or "",
        "knobs": dict(trial.params),
    }


def last_span(rows: list[dict[str, Any]]) -> int:
    """How many last epochs the completed trials' objective averages: LAST_N, or fewer when
    every completed trial ran fewer (2-epoch trials: 2); 0 when they differ below LAST_N."""
    spans = {min(LAST_N, r["epochs"] or LAST_N) for r in ranked(rows)} or {LAST_N}
    return spans.pop() if len(spans) == 1 else 0


def last_epochs(rows: list[dict[str, Any]], short: bool = False) -> str:
    """ "last 3 epochs" as the completed trials' own epochs make it: "last 2 epochs" when each
    ran 2; where some ran fewer than 3, the long form says a trial of fewer takes all its own."""
    n = last_span(rows)
    if n == 0:
        return f"last {LAST_N} epochs" + ("" if short else " (all of a trial's, if it ran fewer)")
    return "last epoch" if n == 1 else f"last {n} epochs"


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials, best validation accuracy first (fewer parameters break ties)."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    return sorted(done, key=lambda r: (-r["value"], r["params"] or 0, r["number"]))


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials that no other beats on both accuracy and parameters, by size."""
    front, best = [], float("-inf")
    for row in sorted(ranked(rows), key=lambda r: (r["params"], -r["value"])):
        if row["value"] > best:
            front.append(row)
            best = row["value"]
    return front


# ----------------------------------------------------------------------------- tables


def _num(value: Any) -> str:
    return "" if value is None else f"{value:,}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _knobs(knobs: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v).lower()

    return ", ".join(f"{k}={show(v)}" for k, v in knobs.items())


def trials_table(rows: list[dict[str, Any]], objective: str = "val. last 3 (%)") -> str:
    lines = [
        f"| trial | state | {objective} | last val. (%) | epochs | params | MACs | RF "
        "| parameters | note |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        state = r["state"].lower()
        state = f"**{state}**" if state == "infeasible" else state
        lines.append(
            f"| {r['number']} | {state} | {_pct(r['value'])} | {_pct(r['last_val'])} | "
            f"{r['epochs'] or ''} | {_num(r['params'])} | {_num(r['macs'])} | {r['rf'] or ''} | "
            f"{_knobs(r['knobs'])} | {r['note'].replace('|', '/')} |"
        )
    return "\n".join(lines)


def state_counts(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"].lower()] = counts.get(r["state"].lower(), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _of(n: int, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 or what.endswith("ed") else "s")


def counts_text(rows: list[dict[str, Any]], space: Space) -> str:
    """The study's trials counted by state, and the trained ones by the pruner they ran
    under (a trial that names none ran under the pruner the study was started with)."""
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    trained = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]
    parts = [
        f"{_of(len(trained), 'trained')} ({by_state.get('COMPLETE', 0):,} to their last epoch, "
        f"{by_state.get('PRUNED', 0):,} pruned)"
    ]
    if by_state.get("INFEASIBLE"):
        parts.append(f"{by_state['INFEASIBLE']:,} infeasible (not trained)")
    failed = [r for r in rows if r["state"] == "FAIL"]
    if failed:
        lost = sum(r["lost"] for r in failed)
        parts.append(
            f"{len(failed):,} failed" + (f" ({lost:,} lost with their worker)" * bool(lost))
        )
    for state in ("RUNNING", "WAITING"):
        if by_state.get(state):
            parts.append(f"{by_state[state]:,} {state.lower()}")
    text = f"{_of(len(rows), 'trial')} in all: {', '.join(parts)}."
    pruners: dict[str, list[dict[str, Any]]] = {}
    for r in trained:
        pruners.setdefault(r["pruner"] or space.pruner, []).append(r)
    if pruners:
        text += (
            " By the pruner each ran under: "
            + "; ".join(
                f"{len(group):,} under {name} ({sum(r['state'] == 'PRUNED' for r in group):,} "
                "pruned)"
                for name, group in pruners.items()
            )
            + "."
        )
    return text


def constraints_text(space: Space) -> str:
    parts = [f"at most {space.max_params:,} parameters"] if space.max_params else []
    parts += [f"at most {space.max_macs:,} MACs"] if space.max_macs else []
    parts += [f"RF at least {space.min_rf}"] if space.min_rf else []
    return ", ".join(parts + ["no Linear layer"])


# ----------------------------------------------------------------------------- figures


def _bottom_marks(ax, xs: list[float], label: str) -> None:
    """Trials without an accuracy, marked along the bottom edge at their x."""
    if xs:
        marks = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(xs, [0.02] * len(xs), marker="x", color="C3", transform=marks, label=label)


def pareto_figure(
    rows: list[dict[str, Any]], space: Space, last: str = f"last {LAST_N} epochs"
) -> Figure:
    fig = new_figure(FIGSIZE)
    ax = fig.add_subplot()
    done = ranked(rows)
    ax.scatter(
        [r["params"] for r in done], [r["value"] for r in done], color="C0", s=18, label="completed"
    )
    front = pareto_front(rows)
    if front:
        ax.step(
            [r["params"] for r in front],
            [r["value"] for r in front],
            where="post",
            color="C1",
            marker="o",
            label="Pareto front",
        )
        for r in front:
            ax.annotate(
                str(r["number"]),
                (r["params"], r["value"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    infeasible = [r["params"] for r in rows if r["state"] == "INFEASIBLE" and r["params"]]
    _bottom_marks(ax, infeasible, "infeasible (not trained)")
    if infeasible:  # marks on the blended transform do not widen the axes themselves
        low, high = ax.get_xlim()
        ax.set_xlim(min(low, min(infeasible)), max(high, max(infeasible) * 1.02))
    if space.max_params:
        ax.axvline(space.max_params, color="C3", linestyle="--", label="parameter budget")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"validation accuracy, mean of {last} (%)")
    ax.set_title("Validation accuracy against parameters")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def history_figure(rows: list[dict[str, Any]]) -> Figure:
    fig = new_figure(FIGSIZE)
    ax = fig.add_subplot()
    done = sorted(ranked(rows), key=lambda r: r["number"])
    ax.scatter(
        [r["number"] for r in done], [r["value"] for r in done], color="C0", s=18, label="completed"
    )
    pruned = [r for r in rows if r["state"] == "PRUNED" and r["last_val"] is not None]
    ax.scatter(
        [r["number"] for r in pruned],
        [r["last_val"] for r in pruned],
        color="0.6",
        marker="v",
        s=18,
        label="pruned (last validation accuracy)",
    )
    if done:
        best, xs, ys = float("-inf"), [], []
        for r in done:
            best = max(best, r["value"])
            xs.append(r["number"])
            ys.append(best)
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    _bottom_marks(ax, [r["number"] for r in rows if r["state"] == "INFEASIBLE"], "infeasible")
    failed = [r["number"] for r in rows if r["state"] == "FAIL"]
    if failed:
        marks = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(
            failed, [0.02] * len(failed), marker="s", color="k", transform=marks, label="failed"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Optimization history")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def importances(study) -> dict[str, float] | str:
    """Parameter importances for the first objective, or why there are none."""
    optuna = optuna_module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its advice on small samples
            # PED-ANOVA ranks what reaches low targets: the accuracy, negated.
            return optuna.importance.get_param_importances(
                study,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=lambda t: -t.values[0],
            )
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def importance_figure(values: dict[str, float]) -> Figure:
    fig = new_figure((8, 0.6 + 0.35 * max(1, len(values))))
    ax = fig.add_subplot()
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="C0")
    ax.set_xlabel("importance (normalised to sum to 1)")
    ax.set_title("Parameter importances (PED-ANOVA, validation accuracy)")
    ax.grid(alpha=0.3, axis="x")
    return fig


# ----------------------------------------------------------------------------- export


def best_experiment(space: Space, study_name: str, trial, row: dict[str, Any]) -> dict[str, Any]:
    """A trial as an experiment file: all 60,000 training images, test every epoch."""
    optuna = optuna_module()
    net, recipe = suggest(optuna.trial.FixedTrial(trial.params), space)
    name = f"{study_name}-trial-{trial.number}"
    data = trial_experiment(space, name, net, recipe)
    for key in ("limit_train", "limit_test"):  # every image: a search may have trained on fewer
        data.pop(key, None)
    data.update(val_size=0, test="every-epoch")
    last = min(LAST_N, row["epochs"] or LAST_N)
    data["target"] = (
        f"Trial {trial.number} of study {study_name}: {row['value']:.2f}% mean validation "
        f"accuracy over its last {last} epoch{'s' if last != 1 else ''} on "
        f"{space.val_size:,} held-out training images, "
        f"{row['params']:,} parameters, {row['macs']:,} MACs, RF {row['rf']}. Trained on all "
        "60,000 training images and tested every epoch: does it hold on the test set?"
    )
    data["expect"] = {"params": row["params"], "rf": row["rf"]}
    from_dict(data, name)  # what is written must load
    return data


# ----------------------------------------------------------------------------- the report


def write_search_report(
    storage_url: str, study_name: str, out: str | Path, export_best: int = 0
) -> Path:
    """out/README.md, out/figures/*.png and, with export_best, out/experiments/*.toml.

    Asked to export trials when none has completed, it refuses before writing anything:
    there is nothing to export, and a report without the files asked for would look done.
    Fewer completed trials than asked for are all exported, and the report says so.
    """
    out = Path(out)
    study, trials = load_study(storage_url, study_name)
    space = space_from_data(study.user_attrs["space"], f"study {study_name}")
    rows = [trial_row(t) for t in trials]
    best = ranked(rows)
    if export_best and not best:
        raise MnistlabError(
            f"study {study_name!r}: no trial has completed ({state_counts(rows) or 'no trials'}), "
            f"so there is no best trial to export; run more trials or drop {arg('export_best')}"
        )
    figures = FigureWriter(out / "figures")
    counts = counts_text(rows, space)
    files: dict[Path, bytes] = {out / "counts.md": (counts + "\n").encode()}
    column = f"val. last {last_span(rows) or LAST_N} (%)"
    with matplotlib.style.context("default"):
        lines = [
            f"# Search: {study_name}",
            "",
            f"{counts} The objective is the mean validation accuracy of a trial's "
            f"{last_epochs(rows)} on {space.val_size:,} images held out of the training set; "
            "the test set was never read. Infeasible trials broke a constraint "
            f"({constraints_text(space)}) and were not trained; failed trials say why in their "
            "note.",
            "",
            f"## Best trials (up to {BEST_SHOWN})",
            "",
            trials_table(best[:BEST_SHOWN], column) if best else "No trial has completed yet.",
            "",
            "## Validation accuracy against parameters",
            "",
            figures.write(
                pareto_figure(rows, space, last_epochs(rows, short=True)),
                "pareto",
                "Accuracy against parameters",
            ),
            "",
            "Pareto front (no other completed trial is both smaller and more accurate): "
            + (", ".join(f"trial {r['number']}" for r in pareto_front(rows)) or "none")
            + ".",
            "",
            "## Optimization history",
            "",
            figures.write(history_figure(rows), "history", "Optimization history"),
            "",
            "## Parameter importances",
            "",
        ]
        values = importances(study)
        if isinstance(values, dict) and values:
            lines += [figures.write(importance_figure(values), "importances", "Importances")]
        else:
            lines += [f"Not computed: {values or 'no parameters to compare'}."]
        everything = sorted(rows, key=lambda r: r["number"])
        lines += ["", "## All trials", "", trials_table(everything, column)]
        if export_best:
            lines += ["", "## Exported experiments", ""]
            if len(best) < export_best:
                lines += [
                    f"{export_best} asked for; only {len(best)} trial"
                    f"{'s' if len(best) != 1 else ''} completed.",
                    "",
                ]
            by_number = {t.number: t for t in trials}
            exported = []
            for row in best[:export_best]:
                data = best_experiment(space, study_name, by_number[row["number"]], row)
                path = out / "experiments" / f"{data['name']}.toml"
                files[path] = dumps_toml(data).encode()
                exported.append(path)
                lines.append(f"- [{path.name}](experiments/{path.name}): trial {row['number']}")
            lines += [
                "",
                "Check them on the test set: `mnistlab confirm "
                + " ".join(f"{out.as_posix()}/experiments/{p.name}" for p in exported)
                + "`.",
            ]
    path = out / "README.md"
    write_files({**figures.files, **files, path: ("\n".join(lines) + "\n").encode()})
    return path
