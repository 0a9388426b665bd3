"""`mnistlab bench --time-to`: interleaved runs, compile cost, the reached decision, ratios."""

import json
from pathlib import Path

import pytest

from mnistlab.bench.timeto import Recipe, Run, compile_overhead, format_time_to, time_to
from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.runs import rundir


def experiment(folder: Path, name: str, **keys) -> str:
    """A small experiment file: gap_tiny on the data_dir fixture's 320 images, tested at the end."""
    values = dict(model="gap_tiny", epochs=1, batch_size=64, test="end", channels_last=False)
    values.update(keys)
    lines = [f"name = {json.dumps(name)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class FakeRunner:
    """Hands out the given (epoch seconds, accuracy) per recipe and seed, and records calls."""

    def __init__(self, outcomes: dict[tuple[str, int], tuple[list[float], float]]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, int]] = []
        self.caches: list[tuple[str, Path, bool]] = []  # recipe, cache dir, empty when called

    def __call__(self, recipe: Recipe, seed, out, threads, device, data_dir, cache) -> Run:
        self.calls.append((recipe.name, seed))
        self.caches.append((recipe.name, cache, not any(cache.iterdir())))
        (cache / "kernel").write_text("compiled")  # what a compiling run leaves in its cache
        seconds, acc = self.outcomes[recipe.name, seed]
        return Run(recipe.name, seed, seconds, acc, 100.0 + seed, "")


def test_runs_are_interleaved_seed_by_seed_with_one_compile_cache_per_recipe(
    tmp_path: Path,
) -> None:
    a, b, c = (experiment(tmp_path, n) for n in ("a", "b", "c"))
    runner = FakeRunner({(n, s): ([1.0], 99.0) for n in "abc" for s in (1, 2)})
    time_to(99.0, [a, b, c], 2, 1, "cpu", runner=runner)
    assert runner.calls == [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("c", 2)]
    dirs = {name: {d for n, d, _ in runner.caches if n == name} for name in "abc"}
    assert all(len(d) == 1 for d in dirs.values())  # a recipe keeps its cache for later seeds
    assert len(set.union(*dirs.values())) == 3  # and shares it with no other recipe
    # Each recipe's first run finds its cache empty, its second finds the first's kernels.
    assert [empty for _, _, empty in runner.caches] == [True, True, True, False, False, False]


def test_reached_totals_and_ratios_come_from_the_runs_seconds(tmp_path: Path) -> None:
    peer = experiment(tmp_path, "peer", epochs=2)
    fast = experiment(tmp_path, "fast", epochs=3, compile=True)
    runner = FakeRunner(
        {
            # peer: 10 + 10 = 20 s and 9 + 11 = 20 s, accuracies 99.1 and 98.8: mean 98.95.
            ("peer", 1): ([10.0, 10.0], 99.1),
            ("peer", 2): ([9.0, 11.0], 98.8),
            # fast, compiled: the empty-cache run's first epoch is 9 s over its later epochs'
            # mean (2 s): the compile cost. Training counts first epochs at the later mean:
            # 2 + 2 + 2 = 6 s and 3 + 3 + 3 = 9 s (the warm run's 1 s excess is dropped):
            # mean 7.5 s, total 16.5 s, 0.825x the peer's 20 s. Accuracies 99.0 and 99.1.
            ("fast", 1): ([11.0, 2.0, 2.0], 99.0),
            ("fast", 2): ([4.0, 3.0, 3.0], 99.1),
        }
    )
    result = time_to(99.0, [peer, fast], 2, 2, "cpu", runner=runner)
    rows = result["recipes"]
    assert list(rows) == ["peer", "fast"]
    assert rows["peer"]["train_s"] == 20.0 and rows["peer"]["compile_s"] == 0.0
    assert rows["peer"]["test_acc_mean"] == 98.95 and not rows["peer"]["reached"]
    assert (rows["peer"]["test_acc_min"], rows["peer"]["test_acc_max"]) == (98.8, 99.1)
    assert rows["fast"]["train_s"] == 7.5 and rows["fast"]["compile_s"] == 9.0
    assert rows["fast"]["total_s"] == 16.5 and rows["fast"]["reached"]  # 99.05 >= 99.0
    assert rows["peer"]["ratio"] == 1.0 and rows["fast"]["ratio"] == 0.825
    assert rows["fast"]["peak_rss_mib"] == 102.0  # the larger of the runs' peaks
    assert [r["seed"] for r in rows["fast"]["runs"]] == [1, 2]
    lines = format_time_to(result).splitlines()
    assert lines[2].split()[-3:] == ["102", "no", "1.000x"]
    assert lines[3].split()[-6:] == ["7.5", "9.0", "16.5", "102", "yes", "0.825x"]
    # Exactly at ACC counts as reached: the mean 99.05 against 99.05.
    assert time_to(99.05, [peer, fast], 2, 2, "cpu", runner=runner)["recipes"]["fast"]["reached"]


def test_compile_overhead_is_the_first_epochs_excess_over_the_later_mean() -> None:
    assert compile_overhead([30.0, 10.0, 12.0]) == 19.0
    assert compile_overhead([9.0, 10.0, 12.0]) == 0.0  # a fast first epoch costs nothing
    assert compile_overhead([9.0]) == 0.0


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (dict(test="never", val_size=20), 'test = "never"'),
        (dict(compile=True), "compiled recipe needs epochs >= 2"),
    ],
)
def test_recipes_that_cannot_be_timed_are_refused_before_anything_trains(
    tmp_path: Path, keys: dict, message: str
) -> None:
    good, bad = experiment(tmp_path, "good"), experiment(tmp_path, "bad", **keys)
    runner = FakeRunner({})
    with pytest.raises(MnistlabError, match=message):
        time_to(99.0, [good, bad], 1, 1, "cpu", runner=runner)
    assert runner.calls == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--time-to", "ninety"], "ACC must be a test accuracy"),
        (["--time-to", "101", "x.toml"], "ACC must be in (0, 100]"),
        (["--time-to", "99"], "at least one experiment"),
        (["--time-to", "99", "EXP", "--seeds", "0"], "--seeds: must be from 1"),
        (["--time-to", "99", "EXP", "--out", "t.txt"], "name a .json file"),
        (["--time-to", "99", "missing.toml"], "cannot read experiment file"),
        (["--time-to", "99", "EXP", "--compile"], "--compile times the trainer's loop"),
    ],
)
def test_bad_time_to_arguments_are_one_line_errors(
    tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    argv = [a.replace("EXP", experiment(tmp_path, "e")) for a in argv]
    assert main(["bench", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and message in err and err.count("\n") == 1


def test_time_to_trains_each_run_in_a_process_and_writes_table_and_json(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    a = experiment(tmp_path, "tiny-a", epochs=2)
    b = experiment(tmp_path, "tiny-b", model="gap_thin_stem_tiny", epochs=1, batch_size=32)
    out, runs = tmp_path / "bench" / "time-to.json", tmp_path / "runs"
    argv = ["bench", "--time-to", "10", a, b, "--seeds", "1", "--threads", "1"]
    argv += ["--device", "cpu", "--data-dir", str(data_dir), "--out", str(out), "--runs", str(runs)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert out.with_suffix(".txt").read_text() == format_time_to(doc) + "\n"
    assert format_time_to(doc) in capsys.readouterr().out
    assert doc["threads"] == 1 and doc["seeds"] == 1
    assert list(doc["recipes"]) == ["tiny-a", "tiny-b"]
    for name, row in doc["recipes"].items():
        # The numbers are the kept run's own: its epochs' seconds and final test accuracy.
        metrics = rundir.read_metrics(runs / name / "seed1")
        (run,) = row["runs"]
        assert run["epoch_seconds"] == [m["seconds"] for m in metrics]
        assert run["test_acc"] == metrics[-1]["test_acc"] == row["test_acc_mean"]
        assert "test_acc" not in metrics[0] or len(metrics) == 1  # tested once, at the end
        assert row["train_s"] == round(sum(run["epoch_seconds"]), 2)
        assert 50 < row["peak_rss_mib"] < 4000  # a Python process with torch, measured
        assert run["cache"] == "empty"
    assert doc["recipes"]["tiny-a"]["ratio"] == 1.0
    assert doc["recipes"]["tiny-b"]["ratio"] == round(
        doc["recipes"]["tiny-b"]["total_s"] / doc["recipes"]["tiny-a"]["total_s"], 3
    )


def test_compiled_names_experiments_that_train_compiled_whatever_their_file_says(
    tmp_path: Path,
) -> None:
    eager, final = experiment(tmp_path, "eager"), experiment(tmp_path, "final", epochs=2)
    seen = {}

    def runner(recipe: Recipe, seed, out, threads, device, data_dir, cache) -> Run:
        seen[recipe.name] = recipe.cfg.compile
        return Run(recipe.name, seed, [5.0, 1.0], 99.0, 1.0, "")

    result = time_to(99.0, [eager, final], 1, 1, "cpu", runner=runner, compiled=(final,))
    assert seen == {"eager": False, "final": True}
    assert result["recipes"]["final"]["compile_s"] == 4.0
    assert result["recipes"]["eager"]["compile_s"] == 0.0
    with pytest.raises(MnistlabError, match="--compiled other.toml: not one of"):
        time_to(99.0, [eager], 1, 1, "cpu", runner=runner, compiled=("other.toml",))
