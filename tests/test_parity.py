"""One front door: every command that has an API twin gives, both ways, the same resolved
config, the same run files and the same refusals (naming a flag to the shell, a keyword to
Python). The divergences the CLI and the API once had each have a case here."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import assert_one_line_failure, interrupted_in_epoch
from PIL import Image

import mnistlab as ml
from mnistlab.config import load_config
from mnistlab.errors import MnistlabError
from mnistlab.runs.checkpoint import load_torch

ROOT = Path(__file__).resolve().parents[1]
FINAL = ROOT / "experiments" / "19-thin-stem.toml"  # onecycle
STEP = ROOT / "experiments" / "01-skeleton.toml"  # a step schedule
TIMING = ("seconds", "images_per_s")
RUN_ONLY = ("cpu", "threads", "torch", "finished")  # how a run ran, not what it is

RECIPE = """
name = "{name}"
epochs = 2
batch_size = 32
test_batch_size = 50
seed = 3
{model}

[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9

[scheduler]
name = "onecycle"
max_lr = 0.1

[augment]
rotation = 10.0
erasing = 0.2
"""
NET = """
[net]
blocks = [[4, 8], [8, 10]]
squeeze = [6]
"""


@pytest.fixture(params=["registered", "net"])
def experiment(request, tmp_path: Path) -> Path:
    """A 2-epoch experiment of a registered model and one whose [net] table is the model."""
    model = 'model = "gap_dropout"' if request.param == "registered" else NET
    path = tmp_path / f"{request.param}.toml"
    path.write_text(RECIPE.format(name=request.param, model=model))
    return path


def run_files(run: Path) -> dict:
    """What a run directory says, less how long it took and where it ran."""
    info = json.loads((run / "run.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "config": (run / "config.toml").read_text(),
        "info": {k: v for k, v in info.items() if k not in RUN_ONLY},
        "metrics": [{k: v for k, v in r.items() if k not in TIMING} for r in metrics],
        "files": sorted(p.name for p in run.iterdir()),
    }


def assert_same_run(a: Path, b: Path) -> None:
    assert run_files(a) == run_files(b)
    wa, wb = (load_torch(r / "model.pt")["model_state"] for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_both_ways(tmp_path, data_dir, cli, experiment) -> None:
    flags = ["--epochs", "1", "--seed", "5", "--quiet", "--device", "cpu", "--threads", "1"]
    result = cli(
        "train",
        str(experiment),
        *flags,
        "--out",
        str(tmp_path / "cli"),
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    done = ml.train(
        experiment,
        epochs=1,
        seed=5,
        out=tmp_path / "api",
        device="cpu",
        threads=1,
        progress=False,
        console=False,
        data_dir=data_dir,
    )
    assert_same_run(tmp_path / "cli", tmp_path / "api")
    assert done.run_dir == (tmp_path / "api").resolve() and done.run_dir.is_absolute()
    assert load_config(tmp_path / "api" / "config.toml") == ml.experiment(
        experiment, epochs=1, seed=5
    )


def test_resume_both_ways_equals_an_uninterrupted_run(tmp_path, data_dir, cli) -> None:
    """`train --resume` and `ml.train(resume=...)` continue a killed run exactly."""
    experiment = tmp_path / "small.toml"
    experiment.write_text(
        RECIPE.format(name="small", model='model = "gap_dropout"').replace(
            "epochs = 2", "epochs = 3"
        )
    )
    options = dict(device="cpu", threads=1, progress=False, console=False, data_dir=data_dir)
    ml.train(experiment, out=tmp_path / "whole", **options)
    for side in ("cli", "api"):
        with interrupted_in_epoch(3, work_batches=4):
            ml.train(experiment, out=tmp_path / side, **options)
        assert load_torch(tmp_path / side / "checkpoint.pt")["epoch"] == 2
    result = cli(
        "train",
        "--resume",
        str(tmp_path / "cli"),
        "--quiet",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    resumed = ml.train(resume=tmp_path / "api", **options)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3]
    assert_same_run(tmp_path / "whole", tmp_path / "cli")
    assert_same_run(tmp_path / "whole", tmp_path / "api")


@pytest.fixture
def finished(tmp_path, data_dir) -> Path:
    run = tmp_path / "run"
    ml.train(
        "gap_tiny",
        epochs=1,
        out=run,
        device="cpu",
        progress=False,
        console=False,
        data_dir=data_dir,
    )
    return run


def test_evaluate_both_ways(finished, data_dir, cli) -> None:
    result = cli("evaluate", str(finished), "--format", "json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ml.evaluate(finished, data_dir=data_dir)


def test_predict_both_ways(finished, tmp_path, cli) -> None:
    image = tmp_path / "seven.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:9, 8:20], pixels[9:22, 16:19] = 255, 255
    Image.fromarray(pixels).save(image)
    result = cli("predict", str(image), "--json", "--checkpoint", str(finished))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [p.as_dict() for p in ml.predict([image], finished)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_both_ways(finished, tmp_path, cli, fmt) -> None:
    result = cli(
        "export", "--checkpoint", str(finished), "--format", fmt, "--out", str(tmp_path / "cli.bin")
    )
    assert result.returncode == 0, result.stderr
    ml.export(finished, tmp_path / "api.bin", fmt)
    if fmt == "onnx":  # the same graph, weights and metadata, byte for byte
        assert (tmp_path / "cli.bin").read_bytes() == (tmp_path / "api.bin").read_bytes()
    else:  # a TorchScript zip names its folder after the file: compare what it computes
        a, b = (torch.jit.load(tmp_path / f) for f in ("cli.bin", "api.bin"))
        x = torch.randn(4, 1, 28, 28)
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("spec", ["seed", "final", str(FINAL)])
def test_summary_both_ways(cli, spec) -> None:
    result = cli("summary", spec, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"model": spec, **ml.summary(spec).to_dict()}


def test_confirm_both_ways_reads_the_committed_runs(cli, tmp_path) -> None:
    argv = ["--seeds", "1", "--threads", "2", "--compile", "--device", "cpu"]
    result = cli("confirm", str(FINAL), *argv, "--results", str(ROOT / "results"), "--no-train")
    assert result.returncode == 0, result.stderr
    table = ml.confirm(
        FINAL, seeds=1, threads=2, compile=True, device="cpu", results=ROOT / "results", train=False
    )
    assert table in result.stdout and "19-thin-stem/cpu-2t-compiled/seed1" in table


SPACE = """
[search]
val_size = 64
seed = 0

[constraints]
max_params = 5000

[experiment]
epochs = 1
batch_size = 32
test_batch_size = 100

[space.net]
first = [4, 8]
layers = [[1, 2]]
width = [4, 8]
squeeze = [0]
"""


def test_search_run_both_ways(tmp_path, data_dir, cli) -> None:
    """The same space and seed: the same trials, configs and metrics, CLI or API."""
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    argv = ["--trials", "2", "--threads", "1", "--device", "cpu", "--data-dir", str(data_dir)]
    result = cli("search", "run", str(space), "--runs", str(tmp_path / "cli"), *argv)
    assert result.returncode == 0, result.stderr
    folder = ml.run_search(
        space, 2, runs=tmp_path / "api", threads=1, device="cpu", data_dir=data_dir
    )
    assert folder == (tmp_path / "api" / "space").resolve()
    trials = sorted(p.name for p in folder.glob("trial-*"))
    assert trials and trials == sorted(p.name for p in (tmp_path / "cli/space").glob("trial-*"))
    for trial in trials:
        a, b = run_files(tmp_path / "cli/space" / trial), run_files(folder / trial)
        a["info"].pop("search"), b["info"].pop("search")
        assert a == b


# ----------------------------------------------------------------------------- refusals
# Each refusal the CLI makes is made by the API too, naming the keyword instead of the flag.
REFUSALS = [
    # (CLI argv, API call, words the CLI names, words the API names)
    (
        ["train", str(FINAL), "--lr", "0.5"],
        lambda: ml.train(FINAL, optimizer={"lr": 0.5}),
        ["--lr", "--max-lr", "onecycle"],
        ["optimizer={'lr': ...}", "scheduler={'max_lr': ...}", "onecycle"],
    ),
    (
        ["train", "--model", "gap_thin_stem", "--max-lr", "0.05"],
        lambda: ml.train("gap_thin_stem", scheduler={"max_lr": 0.05}),
        ["--max-lr", "--lr"],
        ["scheduler={'max_lr': ...}", "optimizer={'lr': ...}"],
    ),
    (
        ["train", str(STEP), "--max-lr", "0.2"],
        lambda: ml.train(STEP, scheduler={"max_lr": 0.2}),
        ["--max-lr", "--lr"],
        ["scheduler={'max_lr': ...}"],
    ),
    (
        ["train", "--resume", "{tmp}/run", "--seed", "3"],
        lambda tmp: ml.train(resume=tmp / "run", seed=3),
        ["--resume", "--seed"],
        ["resume=", "seed="],
    ),
    (
        ["train", "--resume", "{tmp}/run", "--max-lr", "0.2"],
        lambda tmp: ml.train(resume=tmp / "run", scheduler={"max_lr": 0.2}),
        ["--resume", "--max-lr"],
        ["resume=", "scheduler={'max_lr': ...}"],
    ),
    (
        ["train", "seed", "--device", "mps"],
        lambda: ml.train("seed", device="mps"),
        ["--device mps"],
        ["device='mps'"],
    ),
    (
        ["evaluate", "--device", "cuda:7"],
        lambda: ml.evaluate(device="cuda:7"),
        ["--device"],
        ["device="],
    ),
    (
        ["predict", "{tmp}/x.png", "--device", "vulkan"],
        lambda tmp: ml.predict(tmp / "x.png", device="vulkan"),
        ["--device vulkan"],
        ["device='vulkan'"],
    ),
    (
        ["summary", "nosuchmodel"],
        lambda: ml.summary("nosuchmodel"),
        ["nosuchmodel"],
        ["nosuchmodel"],
    ),
    (
        ["summary", "seed", "--input", "1,8,8"],
        lambda: ml.summary("seed", (1, 8, 8)),
        ["--input"],
        ["input_size="],
    ),
    (
        ["evaluate", "{tmp}/nothing"],
        lambda tmp: ml.evaluate(tmp / "nothing"),
        ["nothing"],
        ["nothing"],
    ),
    (
        ["export", "--format", "onnx", "--out", "{tmp}"],
        lambda tmp: ml.export("final", tmp, "onnx"),
        ["directory"],
        ["directory"],
    ),
    (
        ["search", "run", "{tmp}/none.toml", "--trials", "1", "--runs", "{tmp}/s"],
        lambda tmp: ml.run_search(tmp / "none.toml", 1, runs=tmp / "s"),
        ["none.toml"],
        ["none.toml"],
    ),
    (
        [
            "confirm",
            str(FINAL),
            "--seeds",
            "1",
            "--threads",
            "1",
            "--results",
            "{tmp}/r",
            "--no-train",
        ],
        lambda tmp: ml.confirm(FINAL, seeds=1, threads=1, results=tmp / "r", train=False),
        ["--no-train"],
        ["train=False", "not a finished run"],
    ),
]


@pytest.mark.parametrize(("argv", "call", "cli_words", "api_words"), REFUSALS)
def test_each_refusal_both_ways(tmp_path, cli, argv, call, cli_words, api_words) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "x.png").write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    assert_one_line_failure(cli(*argv), *cli_words)
    with pytest.raises(MnistlabError) as raised:
        call(tmp_path) if call.__code__.co_argcount else call()
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in api_words), message
    assert " --" not in f" {message}", f"a Python caller was told a flag: {message}"
    assert sorted(tmp_path.rglob("*")) == before  # nothing made either way


def test_what_train_records_is_what_it_trains(tmp_path, data_dir) -> None:
    """An override is trained as recorded: a table override changes only its keys."""
    cfg = ml.experiment(STEP, optimizer={"lr": 0.02}, epochs=1)
    base = load_config(STEP)
    assert cfg.optimizer.lr == 0.02 and cfg.optimizer.momentum == base.optimizer.momentum
    assert cfg.scheduler == base.scheduler and cfg.epochs == 1


def test_one_device_rule_for_every_function(monkeypatch) -> None:
    """load, load_data, predict, evaluate and train default to pick_device(None): CUDA where
    present (they once defaulted to the CPU where the CLI picked CUDA)."""
    import inspect

    for name in ("load", "load_data", "predict", "evaluate", "train"):
        default = inspect.signature(getattr(ml, name)).parameters["device"].default
        assert default is None, name
    seen = []

    def fake(name=None):
        seen.append(name)
        raise MnistlabError("device picked")

    monkeypatch.setattr("mnistlab.api.pick_device", fake)
    for call in (ml.load, ml.load_data, lambda: ml.predict(np.zeros((28, 28), np.uint8))):
        with pytest.raises(MnistlabError, match="device picked"):
            call()
    assert seen == [None, None, None]
