"""Bad values: every one refused with one line on stderr, exit status 1, and nothing written.

Covers experiment files (every float field finite, the seed's range, whole numbers in range),
command-line flags of every command (threads, batch sizes, bench rounds, seeds, rates,
devices), argparse's own errors, the train flag -> config mapping, and --help's defaults.
"""

import argparse
import dataclasses
import math
import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import assert_no_new_files, assert_one_line_failure, snapshot

from mnistlab import api, config
from mnistlab.cli import build_parser
from mnistlab.cli.common import HelpFormatter, flag
from mnistlab.cli.train import train_options
from mnistlab.data import datasets as data
from mnistlab.device import pick_device
from mnistlab.errors import MnistlabError, spelling

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
FINAL = EXPERIMENTS / "19-thin-stem.toml"  # one-cycle schedule


@pytest.fixture(autouse=True)
def no_default_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands given no --data-dir find no data: a refusal that slipped would not train."""
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "no-data"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's current folder (a train would make runs/ here), snapshotted by the tests."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def float_fields(obj: object = None, prefix: str = "") -> list[str]:
    """Dotted names of every float field of Config, nested tables included."""
    obj = config.Config() if obj is None else obj
    names = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            names += float_fields(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            names.append(f"{prefix}{f.name}")
    return names


def toml_with(key: str, literal: str) -> str:
    *tables, leaf = key.split(".")
    return f"[{tables[0]}]\n{leaf} = {literal}\n" if tables else f"{leaf} = {literal}\n"


def test_float_fields_cover_the_recipe():
    names = float_fields()
    for key in ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay"):
        assert key in names
    for key in ("scheduler.max_lr", "scheduler.gamma", "scheduler.pct_start", "label_smoothing"):
        assert key in names


@pytest.mark.parametrize("literal", ["inf", "-inf", "nan", "+inf", "-nan"])
@pytest.mark.parametrize("key", float_fields())
def test_non_finite_float_in_an_experiment_is_refused(tmp_path, key, literal):
    path = tmp_path / "exp.toml"
    path.write_text(toml_with(key, literal))
    with pytest.raises(MnistlabError, match="finite") as caught:
        config.load_config(path)
    assert key in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("key", float_fields())
def test_integer_too_large_for_a_float_field_is_refused(tmp_path, key):
    path = tmp_path / "exp.toml"
    path.write_text(toml_with(key, str(2**63 - 1)))
    with pytest.raises(MnistlabError, match=key.replace(".", r"\.")):
        config.load_config(path)


@pytest.mark.parametrize("seed", [-1, config.SEED_MAX + 1, 2**63 - 1, -(2**63)])
def test_seed_outside_32_bits_is_refused(tmp_path, seed):
    path = tmp_path / "exp.toml"
    path.write_text(f"seed = {seed}\n")
    with pytest.raises(MnistlabError, match=r"seed must be in \[0, 4294967295\]"):
        config.load_config(path)


@pytest.mark.parametrize("key", ["epochs", "batch_size", "test_batch_size", "val_size"])
def test_whole_numbers_past_32_bits_are_refused(tmp_path, key):
    path = tmp_path / "exp.toml"
    path.write_text(f"{key} = {2**40}\n")
    with pytest.raises(MnistlabError, match=key):
        config.load_config(path)


def test_valid_seeds_keep_the_shuffle_derivation():
    """seed * 100003 + epoch, as committed runs were made; the top seed does not overflow."""
    images, labels = torch.zeros(50, 28, 28, dtype=torch.uint8), torch.arange(50) % 10
    for seed in (1, config.SEED_MAX):
        loader = data.Loader(
            images, labels, 50, mean=0.0, std=1.0, shuffle=True, seed=seed, device="cpu"
        )
        _, got = next(loader.batches(epoch=3))
        order = torch.randperm(50, generator=torch.Generator().manual_seed(seed * 100_003 + 3))
        assert torch.equal(got, labels[order])
    assert config.from_dict({"seed": config.SEED_MAX}).seed == config.SEED_MAX


# ----------------------------------------------------------------------------- flags


def bad_flag_cases(data_dir: Path) -> list[tuple[list[str], str]]:
    """(command line, fragment its error must hold) for flags out of range, every command."""
    d = ["--data-dir", str(data_dir)]
    return [
        (["train", "--threads", "0", *d], "--threads"),
        (["train", "--threads", "-3", *d], "--threads"),
        (["train", "--batch-size", "0", *d], "--batch-size"),
        (["train", "--batch-size", "-1", *d], "--batch-size"),
        (["train", "--batch-size", str(2**40), *d], "--batch-size"),
        (["train", "--epochs", "0", *d], "--epochs"),
        (["train", "--seed", "-1", *d], "--seed"),
        (["train", "--seed", str(2**32), *d], "--seed"),
        (["train", "--seed", "100000000000000", *d], "--seed"),
        (["train", "--lr", "inf", *d], "--lr"),
        (["train", "--lr", "nan", *d], "--lr"),
        (["train", "--lr", "1e999", *d], "--lr"),
        (["train", "--lr", "0", *d], "--lr"),
        (["train", "--lr", "-0.1", *d], "--lr"),
        (["train", "--val-size", "-1", *d], "--val-size"),
        (["train", "--limit-train", "-5", *d], "--limit-train"),
        (["train", str(FINAL), "--max-lr", "inf", *d], "--max-lr"),
        (["train", str(FINAL), "--max-lr", "0", *d], "--max-lr"),
        (["train", "--device", "mps", *d], "--device"),
        (["evaluate", "--batch-size", "0", *d], "--batch-size"),
        (["evaluate", "--threads", "0", *d], "--threads"),
        (["evaluate", "--device", "meta", *d], "--device"),
        (["bench", "--batch-size", "0", *d], "--batch-size"),
        (["bench", "--batches", "0", *d], "--batches"),
        (["bench", "--rounds", "0", *d], "--rounds"),
        (["bench", "--threads", "0", *d], "--threads"),
        (["bench", "--device", "xla", *d], "--device"),
        (["predict", "--threads", "0", "x.png"], "--threads"),
        (["predict", "--device", "garbage", "x.png"], "--device"),
    ]


@pytest.mark.parametrize("index", range(29))
def test_bad_flag_is_one_line_naming_the_flag(workdir, data_dir, cli, index):
    cases = bad_flag_cases(data_dir)
    assert len(cases) == 29  # keep the parametrize range in step
    argv, flag = cases[index]
    before = snapshot(workdir)
    assert_one_line_failure(cli(*argv), flag)
    assert_no_new_files(before, workdir)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--no-such-flag"],
        ["train", "--epochs", "ten"],
        ["evaluate", "--format", "yaml"],
        ["data", "fetch", "--dataset", "cifar"],
        ["export", "--format", "onnx"],  # --out missing
        ["predict"],  # no image
        ["frobnicate"],
        [],
    ],
)
def test_argument_errors_are_one_line_exit_1(workdir, cli, argv):
    before = snapshot(workdir)
    line = assert_one_line_failure(cli(*argv), "--help")
    assert "usage:" not in line
    assert_no_new_files(before, workdir)


@pytest.mark.parametrize(
    "name", ["mps", "meta", "xla", "garbage", "", "cuda:-1", "cpu:1", "ipu", "vulkan"]
)
def test_devices_this_build_cannot_use_are_refused(name):
    with pytest.raises(MnistlabError, match="device="):  # a Python caller: the keyword
        pick_device(name)


def test_cuda_refused_where_absent_and_default_follows_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == torch.device("cpu")
    with pytest.raises(MnistlabError, match="CUDA is not available"):
        pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_every_command_takes_the_same_default_device(workdir, data_dir, cli, monkeypatch):
    """evaluate, bench, predict and train all pick the device with device.pick_device."""
    from mnistlab import api  # noqa: F401  (its import binds the name)

    seen = []

    def fake(name):
        seen.append(name)
        raise MnistlabError("device picked")

    monkeypatch.setattr("mnistlab.device.pick_device", fake)
    monkeypatch.setattr("mnistlab.api.pick_device", fake)
    assert_one_line_failure(cli("evaluate", "--data-dir", str(data_dir)), "device picked")
    assert_one_line_failure(cli("bench", "--data-dir", str(data_dir)), "device picked")
    image = workdir / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    assert_one_line_failure(cli("predict", str(image)), "device picked")
    assert seen == [None, None, None]


# ----------------------------------------------------------------------------- train flags


def parse_train(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def resolved(*argv: str) -> config.Config:
    """The config `mnistlab train ARGV` would train (through the API, as the command does)."""
    target, _, overrides = train_options(parse_train(*argv))
    with spelling(flag):
        return api.experiment(target, **overrides)


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["--model", "gap_tiny"], "model", "gap_tiny"),
        (["--epochs", "3"], "epochs", 3),
        (["--batch-size", "32"], "batch_size", 32),
        (["--seed", "4294967295"], "seed", 4294967295),
        (["--val-size", "10"], "val_size", 10),
        (["--limit-train", "100"], "limit_train", 100),
        (["--limit-test", "50"], "limit_test", 50),
        (["--limit-train", "0"], "limit_train", 0),
        (["--dataset", "fashion-mnist"], "dataset", "fashion-mnist"),
    ],
)
def test_each_train_flag_sets_its_config_key(argv, key, value):
    base = config.load_config(EXPERIMENTS / "01-skeleton.toml")
    cfg = resolved(str(EXPERIMENTS / "01-skeleton.toml"), *argv)
    assert getattr(cfg, key) == value
    # and nothing else changed, but for what --model drops
    changed = {
        k for k, v in config.to_dict(cfg).items() if config.to_dict(base)[k] != v and k != "expect"
    }
    assert changed == {key} or getattr(base, key) == value


def test_lr_sets_the_optimizer_rate_where_the_schedule_uses_it():
    exp = EXPERIMENTS / "01-skeleton.toml"
    base = config.load_config(exp)
    assert base.scheduler.name != "onecycle"
    cfg = resolved(str(exp), "--lr", "0.05")
    assert cfg.optimizer.lr == 0.05 and cfg.scheduler == base.scheduler


def test_lr_on_a_onecycle_experiment_is_refused_naming_max_lr(workdir, cli, data_dir):
    before = snapshot(workdir)
    result = cli("train", str(FINAL), "--lr", "0.05", "--data-dir", str(data_dir))
    assert_one_line_failure(result, "--lr", "--max-lr", "onecycle")
    assert_no_new_files(before, workdir)


def test_max_lr_sets_the_onecycle_peak():
    base = config.load_config(FINAL)
    cfg = resolved(str(FINAL), "--max-lr", "0.2")
    assert cfg.scheduler.max_lr == 0.2 and cfg.optimizer == base.optimizer


def test_max_lr_without_onecycle_is_refused_naming_lr(workdir, cli, data_dir):
    before = snapshot(workdir)
    exp = str(EXPERIMENTS / "01-skeleton.toml")
    result = cli("train", exp, "--max-lr", "0.2", "--data-dir", str(data_dir))
    assert_one_line_failure(result, "--max-lr", "--lr")
    assert_no_new_files(before, workdir)


def test_model_flag_drops_the_experiments_expectations():
    cfg = resolved(str(FINAL), "--model", "seed")
    assert cfg.model == "seed" and cfg.expect == config.ExpectConfig()
    same = resolved(str(FINAL))
    assert same == config.load_config(FINAL)


def test_train_without_an_experiment_is_named_after_the_model():
    cfg = resolved("--model", "gap_tiny", "--epochs", "2")
    assert (cfg.name, cfg.model, cfg.epochs) == ("gap_tiny", "gap_tiny", 2)


def test_resume_refuses_every_recipe_flag(workdir, cli):
    for argv in (["--max-lr", "0.2"], ["--lr", "0.1"], ["--seed", "3"], ["--limit-test", "0"]):
        result = cli("train", "--resume", str(workdir / "run"), *argv)
        assert_one_line_failure(result, "--resume", argv[0])


def test_train_uses_the_max_lr_flag(workdir, data_dir, cli):
    """The flag reaches the run: config.toml records the peak that was trained with."""
    out = workdir / "run"
    argv = ["train", str(FINAL), "--max-lr", "0.05", "--epochs", "1", "--limit-train", "64"]
    argv += ["--limit-test", "20", "--model", "seed", "--out", str(out), "--quiet"]
    argv += ["--data-dir", str(data_dir), "--device", "cpu"]
    code, _, err = cli(*argv)
    assert code == 0, err
    recorded = config.load_config(out / "config.toml")
    assert recorded.scheduler.max_lr == 0.05 and recorded.name == "19-thin-stem"
    assert not list(Path(tempfile.gettempdir()).glob("mnistlab-exp-*"))


# ----------------------------------------------------------------------------- help


def all_parsers() -> list[argparse.ArgumentParser]:
    found, todo = [], [build_parser()]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return found


def test_every_argument_has_help_and_shows_its_default():
    for parser in all_parsers():
        formatter = HelpFormatter(parser.prog)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{parser.prog} {action.dest}"
            assert action.help, f"{where} has no help"
            optional = action.option_strings or action.nargs in ("?", "*")
            if optional and not action.required:
                assert "default" in formatter._get_help_string(action), where


def test_help_prints_the_defaults(cli):
    code, out, _ = cli("evaluate", "--help")
    assert code == 0
    assert "(default: 1000)" in out and "shipped model" in out and "--threads" in out


def test_dataset_choices_come_from_the_registry(monkeypatch, cli):
    monkeypatch.setitem(data.DATASETS, "kmnist", dataclasses.replace(data.MNIST, name="kmnist"))
    code, out, _ = cli("data", "verify", "--help")
    assert code == 0 and "kmnist" in out
    assert_one_line_failure(cli("data", "verify", "--dataset", "emnist"), "kmnist")


def test_evaluate_defaults_to_the_shipped_model(data_dir, cli):
    from mnistlab.weights import shipped_weights

    if not shipped_weights().is_file():
        pytest.skip("the shipped model is not in this checkout")
    code, out, err = cli("evaluate", "--data-dir", str(data_dir), "--threads", "1")
    assert code == 0, err
    assert "Test set:" in out and "/100" in out
    assert torch.get_num_threads() == 1


def test_missing_shipped_model_is_one_line_for_evaluate(tmp_path, data_dir, cli, monkeypatch):
    monkeypatch.setattr("mnistlab.weights.shipped_weights", lambda: tmp_path / "none.pt")
    assert_one_line_failure(cli("evaluate", "--data-dir", str(data_dir)), "shipped model")


def test_float_flags_refuse_every_non_finite_spelling():
    from mnistlab.cli.common import finite_float

    for text in ("inf", "-inf", "nan", "NaN", "Infinity", "1e400"):
        with pytest.raises(argparse.ArgumentTypeError):
            finite_float(text)
    assert finite_float("1e-3") == 0.001 and math.isfinite(finite_float("-2.5"))
    assert np.isclose(finite_float("0.1"), 0.1)


# ----------------------------------------------------------------------------- experiment files


@pytest.mark.parametrize(
    "name", ["", "   ", "a/b", "../up", "..", ".", "tab\there", "nul\0", "x" * 201, "back\\slash"]
)
def test_names_that_are_not_one_folder_name_are_refused(name):
    with pytest.raises(MnistlabError, match="name must be"):
        config.from_dict({"name": name})


@pytest.mark.parametrize(
    "text",
    [
        'ends with a quote"',
        'three """ quotes',
        "control \0 \x01 \x1b \x7f characters",
        "windows\r\nlines\n\tand a tab",
        "back\\slash\\u0041 and \\n literally",
        '\nleading newline and trailing quotes ""',
    ],
)
def test_every_string_round_trips_through_config_toml(text):
    cfg = config.from_dict({"target": text, "analysis": text.replace("\n", " ")})
    again = config.from_dict(tomllib.loads(config.dumps_toml(config.to_dict(cfg))))
    assert again == cfg


def test_experiment_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, cli):
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    before = snapshot(tmp_path)
    assert_one_line_failure(cli("train", str(fifo)), str(fifo), "not a regular file")
    assert_no_new_files(before, tmp_path)


def test_experiment_that_is_not_text_is_one_line(tmp_path, cli):
    path = tmp_path / "exp.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    assert_one_line_failure(cli("train", str(path)), str(path), "UTF-8")


def test_os_errors_nobody_expected_are_still_one_line(tmp_path, cli, data_dir):
    long = str(tmp_path / ("a" * 5000))
    for argv in (
        ["data", "info", "--data-dir", long],
        ["evaluate", long, "--data-dir", str(data_dir)],
        ["predict", "--checkpoint", long, str(tmp_path / "x.png")],
        ["train", long + ".toml"],
        ["export", "--format", "torchscript", "--out", long + "/m.pt"],
    ):
        assert_one_line_failure(cli(*argv), "File name too long")
