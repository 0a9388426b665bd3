"""Experiment files with `base`, the committed runs' layout, and the one file naming the final."""

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from mnistlab.cli import main
from mnistlab.config import Config, load_config, to_dict
from mnistlab.errors import MnistlabError
from mnistlab.models import ALIASES, build, list_models
from mnistlab.runs.compare import summarize_run
from mnistlab.runs.rundir import find_runs, read_run
from mnistlab.weights import shipped_record

ROOT = Path(__file__).parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.toml"))
RESULTS = ROOT / "results"
FINAL = shipped_record()
RUNS = Path(__file__).parent / "fixtures" / "runs"
# What a committed run's config.toml may lack or hold differently from its experiment file now:
# its own name and texts, its seed, and keys the config gained after it ran.
NOT_COMPARED = ("name", "target", "analysis", "seed")


def gained_since(resolved: dict, recorded: dict, defaults: dict) -> dict:
    """`resolved` without the keys a run's config.toml lacks because the config gained them
    after it ran; each such key must still hold its default (the behaviour the run had)."""
    kept = {}
    for key, value in resolved.items():
        if key not in recorded:
            assert value == defaults[key], f"{key} = {value!r} is not the default the run had"
        elif isinstance(value, dict):
            kept[key] = gained_since(value, recorded[key], defaults[key])
        else:
            kept[key] = value
    return kept


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def comparable(data: dict) -> dict:
    data = json.loads(json.dumps(data))  # TOML has arrays where the config has tuples
    data = {k: v for k, v in data.items() if k not in NOT_COMPARED}
    data["model"] = ALIASES.get(data["model"], data["model"])  # runs keep the name they had
    return data


# ----------------------------------------------------------------------------- base


def test_a_step_states_only_what_it_changes(tmp_path):
    write(
        tmp_path / "a.toml",
        'name = "a"\nmodel = "gap_tiny"\nbatch_size = 32\ntarget = "A\'s own"\n'
        'analysis = "A\'s own"\n[optimizer]\nlr = 0.02\nmomentum = 0.8\n'
        "[augment]\nrotation = 5.0\n",
    )
    write(tmp_path / "sub" / "b.toml", 'base = "../a.toml"\nepochs = 3\n[optimizer]\nlr = 0.05\n')
    write(tmp_path / "sub" / "c.toml", 'base = "b.toml"\n[augment]\ntranslate = 0.1\n')
    cfg = load_config(tmp_path / "sub" / "c.toml")
    assert (cfg.name, cfg.model, cfg.batch_size, cfg.epochs) == ("c", "gap_tiny", 32, 3)
    assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (0.05, 0.8)  # tables merge key by key
    assert (cfg.augment.rotation, cfg.augment.translate) == (5.0, 0.1)
    assert cfg.target == "" and cfg.analysis == ""  # a file's own texts are not inherited
    assert "base" not in to_dict(cfg)


def test_the_resolved_experiment_is_what_a_run_records(tmp_path, data_dir):
    write(tmp_path / "a.toml", 'model = "gap_tiny"\nepochs = 1\nbatch_size = 64\n')
    b = write(tmp_path / "b.toml", 'base = "a.toml"\nlimit_train = 64\nlimit_test = 50\n')
    out = tmp_path / "run"
    args = ["train", str(b), "--out", str(out), "--data-dir", str(data_dir), "--quiet"]
    assert main([*args, "--device", "cpu"]) == 0
    recorded = tomllib.loads((out / "config.toml").read_text())
    assert "base" not in recorded
    assert (recorded["name"], recorded["model"], recorded["limit_train"]) == ("b", "gap_tiny", 64)


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        (
            {"a.toml": 'base = "b.toml"\n', "b.toml": 'base = "a.toml"\n'},
            ["cycle", "a.toml -> ", "b.toml -> "],
        ),
        ({"a.toml": 'base = "a.toml"\n'}, ["cycle", "a.toml -> "]),
        ({"a.toml": 'base = "missing.toml"\n'}, ["base file", "missing.toml", "does not exist"]),
        ({"a.toml": "base = 3\n"}, ["base must be the name of another experiment file"]),
        ({"a.toml": 'base = "b.toml"\n', "b.toml": "epochs = [\n"}, ["b.toml", "not valid TOML"]),
    ],
    ids=["cycle", "self", "missing", "not-a-name", "bad-base-toml"],
)
def test_a_bad_base_is_one_line_naming_the_files(tmp_path, capsys, files, needles):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(MnistlabError):
        load_config(tmp_path / "a.toml")
    assert main(["train", str(tmp_path / "a.toml"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


# ----------------------------------------------------------------------------- committed runs


def seed1_runs(experiment: str) -> list[Path]:
    return sorted((RESULTS / experiment).glob("*/seed1"))


def test_every_drill_down_experiment_has_committed_runs():
    with_runs = [p.stem for p in EXPERIMENTS if seed1_runs(p.stem)]
    assert "seed" in with_runs and sum(s[:2].isdigit() for s in with_runs) >= 21


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_resolves_to_what_its_committed_runs_trained(path):
    runs = seed1_runs(path.stem)
    if not runs:
        pytest.skip(f"no committed run of {path.stem} yet")
    resolved = comparable(to_dict(load_config(path)))
    for run in runs:
        recorded = comparable(tomllib.loads((run / "config.toml").read_text()))
        assert gained_since(resolved, recorded, comparable(to_dict(Config()))) == recorded, run


def test_committed_runs_follow_one_layout():
    # results/<experiment>/<device>-<threads>t[-compiled]/seed<N>, as run.json and config.toml say
    # Search trials (results/search/<study>/trial-N) and the fast recipes' validation sweep
    # (results/fast-val/<variant>/seedN) are named by trial and variant, not experiment.
    sweeps = (RESULTS / "search", RESULTS / "fast-val")
    for info_path in RESULTS.rglob("run.json"):
        if any(info_path.is_relative_to(folder) for folder in sweeps):
            continue
        run = read_run(info_path.parent)
        info, seed = run.info, run.config["seed"]
        setting = f"{info['device']}-{info['threads']}t"
        setting += "-compiled" if info.get("compile") else ""
        assert info_path.parent.name == f"seed{seed}", info_path
        assert info_path.parent.parent.name == setting, info_path
        assert run.name == f"{run.experiment}/{setting}/seed{seed}"
        experiment = ROOT / "experiments" / f"{run.experiment}.toml"
        assert experiment.is_file(), info_path


def test_a_folder_of_runs_is_searched_at_every_depth(tmp_path):
    for name in ("01-seed", "03-final"):
        shutil.copytree(RUNS / name, tmp_path / "r" / name / "cpu-2t" / "seed1")
    found = find_runs([tmp_path / "r"])
    assert [read_run(p).name for p in found] == ["01-seed/cpu-2t/seed1", "03-final/cpu-2t/seed1"]
    # the experiment is the folder's, not the name config.toml recorded
    shutil.copytree(RUNS / "01-seed", tmp_path / "renamed" / "cpu-1t" / "seed1")
    assert summarize_run(read_run(tmp_path / "renamed" / "cpu-1t" / "seed1"))["experiment"] == (
        "renamed"
    )


# ----------------------------------------------------------------------------- names


def test_no_experiment_or_listed_model_is_called_final():
    assert not [p for p in EXPERIMENTS if "final" in p.stem]
    assert not [name for name in list_models() if "final" in name]


def test_former_model_names_still_build_but_are_not_listed():
    for old, new in ALIASES.items():
        assert old not in list_models() and new in list_models()
        assert type(build(old)) is type(build(new))
        assert [p.shape for p in build(old).parameters()] == [
            p.shape for p in build(new).parameters()
        ]


def test_a_committed_run_of_a_renamed_model_loads(tmp_path):
    from mnistlab.runs.rundir import load_model

    run = RESULTS / "07-wide-tail" / "cpu-1t" / "seed1"
    assert read_run(run).info["model"] == "gap_final"  # as the run wrote it
    model, meta = load_model(run)
    assert meta["model_name"] == "gap_final" and sum(p.numel() for p in model.parameters()) == 7756


# ----------------------------------------------------------------------------- the final model


def test_final_json_names_an_experiment_and_its_shipped_run():
    run = read_run(ROOT / FINAL["run"])
    assert run.experiment == FINAL["experiment"] and run.finished
    assert load_config(ROOT / "experiments" / f"{FINAL['experiment']}.toml").model == FINAL["model"]
    assert summarize_run(run)["last3_test_acc"] == FINAL["last3_test_acc"]


def test_nothing_else_names_the_final_run():
    # Makefile, the CUDA pass and the README read final.json instead of naming the run.
    for path in ("Makefile", "benchmarks/cuda_check.sh"):
        text = (ROOT / path).read_text()
        assert FINAL["run"] not in text and f"{FINAL['experiment']}.toml" not in text, path
        assert "final.json" in text, path
