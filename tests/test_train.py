"""The trainer: determinism, exact resume, checkpoints, bad experiment files, learning."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import interrupted_in_epoch

from mnistlab.cli import main
from mnistlab.config import Config, from_dict, load_config
from mnistlab.errors import MnistlabError
from mnistlab.runs.checkpoint import load_torch
from mnistlab.runs.ship import ship_model
from mnistlab.training import trainer as train_module
from mnistlab.training.trainer import make_loaders, resume_run, setup, train_epoch, train_run

TIMING_KEYS = ("seconds", "images_per_s")


def small_config(**changes) -> Config:
    """Dropout, augmentation and a per-batch schedule: every source of state resume must restore."""
    data = {
        "name": "small",
        "model": "gap_dropout",
        "epochs": 3,
        "batch_size": 32,
        "test_batch_size": 50,
        "seed": 3,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "scheduler": {"name": "onecycle", "max_lr": 0.1},
        "augment": {"rotation": 10.0, "translate": 0.1, "erasing": 0.2},
    }
    data.update(changes)
    return from_dict(data)


CPU = torch.device("cpu")


def train_to_end(
    cfg: Config, run_dir: Path, data_dir: Path, device: torch.device = CPU
) -> list[dict]:
    train_run(cfg, run_dir, device, data_dir, console=False)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_torch(run_dir / "model.pt")["model_state"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_run_directory_has_every_file(tmp_path: Path, data_dir: Path) -> None:
    records = train_to_end(small_config(epochs=2), tmp_path / "run", data_dir)
    run = tmp_path / "run"
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", *TIMING_KEYS):
        assert key in records[0]
    info = json.loads((run / "run.json").read_text())
    assert info["finished"] is True and info["params"] == 6560 and info["rf"] == 28
    assert load_config(run / "config.toml").model == "gap_dropout"
    predictions = np.load(run / "predictions.npz")
    assert predictions["pred"].shape == predictions["label"].shape == (100,)
    assert 0 < predictions["confidence"].min() <= predictions["confidence"].max() <= 1
    accuracy = 100 * (predictions["pred"] == predictions["label"]).mean()
    assert accuracy == pytest.approx(records[-1]["test_acc"])
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))


def test_same_seed_same_metrics(tmp_path: Path, data_dir: Path, device: torch.device) -> None:
    a = train_to_end(small_config(epochs=2), tmp_path / "a", data_dir, device)
    b = train_to_end(small_config(epochs=2), tmp_path / "b", data_dir, device)
    assert without_timing(a) == without_timing(b)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    c = train_to_end(small_config(epochs=2, seed=4), tmp_path / "c", data_dir, device)
    assert without_timing(a) != without_timing(c)


def test_kill_and_resume_equals_uninterrupted(
    tmp_path: Path, data_dir: Path, device: torch.device, monkeypatch, capsys
) -> None:
    uninterrupted = train_to_end(small_config(), tmp_path / "full", data_dir, device)

    with interrupted_in_epoch(3, work_batches=4):
        train_run(small_config(), tmp_path / "killed", device, data_dir, console=False)
    assert load_torch(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 2

    resume_run(tmp_path / "killed", device, data_dir)
    assert f"Resuming {tmp_path / 'killed'} at epoch 3 of 3" in capsys.readouterr().out
    metrics = (tmp_path / "killed" / "metrics.jsonl").read_text()
    resumed = [json.loads(line) for line in metrics.splitlines()]
    assert without_timing(resumed) == without_timing(uninterrupted)
    assert_same_weights(tmp_path / "full", tmp_path / "killed")


def test_compiled_run_is_deterministic_and_resumes_compiled(
    tmp_path: Path, data_dir: Path, device: torch.device
) -> None:
    cfg = small_config(epochs=2, model="gap_tiny", batch_size=24)  # last batch of 8: eager
    runs = []
    for name in ("a", "b"):
        train_run(cfg, tmp_path / name, device, data_dir, compile=True, console=False)
        runs.append([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()])
    assert without_timing(runs[0]) == without_timing(runs[1])
    assert runs[0][-1]["test_acc"] > 50  # it learns: 10 classes, chance is 10%
    assert json.loads((tmp_path / "a" / "run.json").read_text())["compile"] is True
    assert "_orig_mod" not in str(list(weights(tmp_path / "a")))  # plain weight names


def test_a_compiled_run_resumes_compiled(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    with interrupted_in_epoch(2):
        train_run(small_config(epochs=2), tmp_path / "run", CPU, data_dir, console=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "compile": True}))
    compiled = []
    real_setup = train_module.setup

    def spy(cfg, device, steps, compile=False, bf16=False, *rest):
        compiled.append(compile)
        return real_setup(cfg, device, steps, False, bf16, *rest)  # the flag is what is checked

    monkeypatch.setattr(train_module, "setup", spy)
    resume_run(tmp_path / "run", CPU, data_dir, console=False)
    assert compiled == [True]


def test_the_smaller_last_batch_bypasses_the_compiled_model(tmp_path: Path, data_dir: Path) -> None:
    # Compiled with dynamic=False, a batch of another size would compile a second graph.
    cfg = small_config(epochs=1, batch_size=48)  # 320 images: 6 batches of 48, then 32
    loaders = make_loaders(cfg, CPU, data_dir)
    parts = setup(cfg, CPU, len(loaders.train))
    sizes = []

    class Spy(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            return self.model(x)

    parts.step_model = Spy(parts.model)
    train_epoch(parts, loaders.train, 1)
    assert sizes == [48] * 6
    assert parts.scheduler.last_epoch == 7  # the last batch still trained: 7 steps


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, data_dir: Path, monkeypatch
) -> None:
    real_loss = train_module.nll_loss

    def loss_nan_in_epoch_2(log_probs, target, smoothing):
        loss = real_loss(log_probs, target, smoothing)
        return loss * float("nan") if epoch_seen[-1] == 2 else loss

    epoch_seen = [0]
    original = train_module.train_epoch

    def tracking(parts, loader, epoch, progress=False, max_batches=None):
        epoch_seen.append(epoch)
        return original(parts, loader, epoch, progress, max_batches)

    monkeypatch.setattr(train_module, "nll_loss", loss_nan_in_epoch_2)
    monkeypatch.setattr(train_module, "train_epoch", tracking)
    with pytest.raises(MnistlabError, match="loss became nan at epoch 2"):
        train_run(small_config(), tmp_path / "run", CPU, data_dir, console=False)
    assert load_torch(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "run" / "model.pt").exists()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_then_evaluate(
    tmp_path: Path, data_dir: Path, device: torch.device, capsys
) -> None:
    experiment = tmp_path / "exp.toml"
    experiment.write_text('model = "gap_wide"\nepochs = 1\nbatch_size = 32\n')
    args = ["train", str(experiment), "--out", str(tmp_path / "run"), "--quiet"]
    args += ["--device", str(device)]
    code, out, _ = run_cli([*args, "--data-dir", str(data_dir), "--lr", "0.02"], capsys)
    assert code == 0
    assert "Test set: Average loss:" in out and "Accuracy: " in out and "/100 (" in out
    assert load_config(tmp_path / "run" / "config.toml").optimizer.lr == 0.02

    code, out, _ = run_cli(
        ["evaluate", str(tmp_path / "run"), "--format", "json", "--data-dir", str(data_dir)]
        + ["--device", str(device)],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    assert result["correct"] == np.trace(confusion) == 100 - len(result["misclassified"])
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert result["accuracy"] == pytest.approx(metrics["test_acc"])

    code, out, _ = run_cli(
        ["evaluate", str(tmp_path / "run"), "--split", "train", "--data-dir", str(data_dir)], capsys
    )
    assert code == 0
    assert out.startswith("Train set: Average loss:") and "/320 (" in out
    assert "Misclassified train images" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "seed"\nepochz = 3\n', "unknown key 'epochz'"),
        ('epochs = "ten"\n', "epochs must be int"),
        ("epochs = 0\n", "epochs must be >= 1"),
        ("[optimizer]\nlr = -1.0\n", "optimizer.lr must be > 0"),
        ('[optimizer]\nname = "rmsprop"\n', "optimizer.name must be one of"),
        ("[scheduler]\nmax_lr = 0.1\nwarmup = 3\n", "unknown key 'scheduler.warmup'"),
        ('model = "nosuchnet"\n', "model must be one of"),
        ("epochs = [\n", "not valid TOML"),
    ],
)
def test_bad_experiment_file_is_one_line_error(tmp_path: Path, capsys, text, message) -> None:
    experiment = tmp_path / "bad.toml"
    experiment.write_text(text)
    code, _, err = run_cli(["train", str(experiment), "--out", str(tmp_path / "run")], capsys)
    assert code == 1
    assert message in err and str(experiment) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, data_dir: Path, capsys) -> None:
    train_to_end(small_config(epochs=1), tmp_path / "run", data_dir)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "run" / "run.json").write_text(json.dumps({**info, "finished": False}))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    # No --data-dir: the checkpoint is checked before any data is looked for.
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run")], capsys)
    assert code == 1 and "checkpoint.pt" in err and "truncated" in err
    assert err.count("\n") == 1


def test_checkpoint_of_another_architecture_is_a_clear_error(
    tmp_path: Path, data_dir: Path, capsys
) -> None:
    train_to_end(small_config(epochs=1), tmp_path / "run", data_dir)
    state = load_torch(tmp_path / "run" / "model.pt")
    state["model_name"] = "skeleton"  # gap_dropout weights labelled as another model
    torch.save(state, tmp_path / "other.pt")
    code, _, err = run_cli(["evaluate", str(tmp_path / "other.pt")], capsys)
    assert code == 1 and "do not fit model 'skeleton'" in err and err.count("\n") == 1

    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    code, _, err = run_cli(["evaluate", str(tmp_path / "foreign.pt")], capsys)
    assert code == 1 and "not an mnistlab checkpoint" in err


def test_resume_refuses_changed_recipe(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["train", "--resume", str(tmp_path), "--epochs", "5"], capsys)
    assert code == 1 and "--epochs" in err
    code, _, err = run_cli(["train", "--resume", str(tmp_path), "--compile"], capsys)
    assert code == 1 and "drop --compile" in err


def test_damaged_run_json_is_one_line_error_on_resume(tmp_path: Path, data_dir: Path, capsys):
    train_to_end(small_config(epochs=1), tmp_path / "run", data_dir)
    (tmp_path / "run" / "run.json").write_text("{not json")
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run")], capsys)
    assert code == 1 and "run.json: not JSON" in err and len(err.strip().splitlines()) == 1


def test_compile_without_a_compiler_is_one_line_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, out, err = run_cli(["train", "--compile", "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "needs the C++ compiler" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.realdata
def test_short_training_learns_real_digits(tmp_path: Path) -> None:
    """Two epochs on 6,000 real training images take a compact model past 95% test accuracy."""
    cfg = from_dict(
        {
            "model": "gap_wide",
            "epochs": 2,
            "batch_size": 32,
            "limit_train": 6000,
            "limit_test": 2000,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"name": "onecycle", "max_lr": 0.1},
        }
    )
    records = train_to_end(cfg, tmp_path / "run", None)
    assert records[-1]["test_acc"] >= 95.0


def test_ship_copies_the_weights_with_a_description(tmp_path: Path, data_dir: Path) -> None:
    records = train_to_end(small_config(epochs=1), tmp_path / "run", data_dir)
    shipped = ship_model(tmp_path / "run", tmp_path / "package")
    assert shipped.read_bytes() == (tmp_path / "run" / "model.pt").read_bytes()
    description = json.loads((tmp_path / "package" / "final.json").read_text())
    assert description["model"] == "gap_dropout" and description["params"] == 6560
    assert description["last_test_acc"] == records[-1]["test_acc"]


def test_bn_recalibration_gives_the_plain_statistics_of_the_clean_images() -> None:
    from mnistlab.data.datasets import Loader
    from mnistlab.training.trainer import recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)).eval()
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    loader = Loader(images, torch.zeros(50, dtype=torch.long), 16, mean=0.5, std=0.25)
    recalibrate_bn(model, loader)
    x = (images.float().div(255).unsqueeze(1) - 0.5) / 0.25
    features = model[0](x).detach()
    bn = model[1]
    assert not model.training and bn.momentum == 0.1  # left as it was
    # Batches of 16, 16, 16 and 2, each weighing the same: the average of the batch means
    # and of the (unbiased) batch variances.
    batches = [features[i : i + 16] for i in range(0, 50, 16)]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.var(dim=(0, 2, 3)) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(dim=0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(dim=0), atol=1e-4)


def test_clean_epochs_train_the_last_epochs_on_unaugmented_images(data_dir: Path) -> None:
    from mnistlab.config import AugmentConfig
    from mnistlab.data.augment import make_augment
    from mnistlab.data.datasets import Loader

    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    common = dict(mean=0.1, std=0.3, shuffle=True, seed=5)
    augment = make_augment(AugmentConfig(rotation=10.0, translate=0.1))
    loader = Loader(images, labels, 16, augment=augment, clean_from=3, **common)
    plain = Loader(images, labels, 16, **common)
    for epoch in (1, 2):  # augmented: same order as the plain loader, other pixels
        batches, reference = list(loader.batches(epoch)), list(plain.batches(epoch))
        assert all(torch.equal(b[1], r[1]) for b, r in zip(batches, reference, strict=True))
        assert not torch.equal(batches[0][0], reference[0][0])
    for epoch in (3, 4):  # clean: the plain loader's batches, pixel for pixel
        batches, reference = list(loader.batches(epoch)), list(plain.batches(epoch))
        assert all(
            torch.equal(b[0], r[0]) and torch.equal(b[1], r[1])
            for b, r in zip(batches, reference, strict=True)
        )
    cfg = small_config(epochs=5, clean_epochs=2, limit_train=100, limit_test=100)
    assert make_loaders(cfg, torch.device("cpu"), data_dir).train.clean_from == 4  # epochs 4, 5


def test_clean_epochs_beyond_the_run_are_refused() -> None:
    with pytest.raises(MnistlabError, match="clean_epochs"):
        from_dict({"epochs": 3, "clean_epochs": 4})
