"""The peer recipe's pieces: its network, Adam's betas, OneCycle without momentum cycling, and
one batch order for every epoch."""

from pathlib import Path

import pytest
import torch

from mnistlab.config import Config, dumps_toml, from_dict, load_config, to_dict
from mnistlab.data.datasets import Loader
from mnistlab.errors import MnistlabError
from mnistlab.models import build
from mnistlab.models.summary import count_parameters
from mnistlab.training.trainer import make_optimizer, make_scheduler

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def test_peer_network_has_the_notebooks_layers_and_parameter_count() -> None:
    model = build("peer_fast")
    assert count_parameters(model) == 215_194
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (24, 1, 5, 5) and shapes["conv2.weight"] == (32, 24, 3, 3)
    assert shapes["fc1.weight"] == (256, 800) and shapes["fc2.weight"] == (10, 256)


def test_peer_experiments_resolve_to_the_notebooks_recipe() -> None:
    for name, epochs in (("peer-fast", 1), ("peer-fast-2ep", 2)):
        cfg = load_config(EXPERIMENTS / f"{name}.toml")
        assert (cfg.epochs, cfg.batch_size, cfg.shuffle, cfg.test) == (epochs, 256, "once", "end")
        assert not cfg.channels_last and not cfg.compile and cfg.precision == "fp32"
        assert cfg.augment.enabled is False
        optimizer = make_optimizer(cfg, build(cfg.model))
        scheduler, per_batch = make_scheduler(cfg, optimizer, 235)  # ceil(60000 / 256)
        assert per_batch and optimizer.defaults["betas"] == (0.7, 0.9)
        lrs, betas = [], set()
        for _ in range(235 * epochs):
            lrs.append(optimizer.param_groups[0]["lr"])
            betas.add(optimizer.param_groups[0]["betas"])
            optimizer.step()
            scheduler.step()
        assert betas == {(0.7, 0.9)}  # cycle_momentum = false: beta1 stays the notebook's
        assert lrs[0] == pytest.approx(0.01 / 25) and max(lrs) == pytest.approx(0.01, rel=1e-4)
        assert abs(lrs.index(max(lrs)) - 0.3 * 235 * epochs) <= 1  # pct_start 0.3
        assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4, rel=0.1)  # final_div_factor 1e4


def test_onecycle_cycles_beta1_by_default_as_pytorch_does() -> None:
    cfg = from_dict({"optimizer": {"name": "adam"}, "scheduler": {"name": "onecycle"}})
    optimizer = make_optimizer(cfg, torch.nn.Linear(2, 2))
    make_scheduler(cfg, optimizer, 10)
    assert optimizer.param_groups[0]["betas"][0] == pytest.approx(0.95)  # not the 0.9 given


def test_betas_round_trip_through_toml_and_are_checked() -> None:
    cfg = from_dict({"optimizer": {"name": "adam", "betas": [0.7, 0.9]}})
    assert cfg.optimizer.betas == (0.7, 0.9)
    assert "betas = [0.7, 0.9]" in dumps_toml(to_dict(cfg))
    assert from_dict(to_dict(cfg)) == cfg
    assert Config().optimizer.betas == (0.9, 0.999)  # PyTorch's defaults, as before
    for bad, message in (
        ([0.9], "two numbers in"),
        ([0.9, 1.0], "two numbers in"),
        ("0.9", "list of numbers"),
        ([True, 0.9], "list of numbers"),
    ):
        with pytest.raises(MnistlabError, match=f"optimizer.betas.*{message}"):
            from_dict({"optimizer": {"betas": bad}})
    with pytest.raises(MnistlabError, match="shuffle must be one of every-epoch, once"):
        from_dict({"shuffle": "never"})


def test_shuffle_once_keeps_one_order_for_every_epoch() -> None:
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1).expand(40, 28, 28).contiguous()
    labels = torch.arange(40)

    def order(reshuffle: bool, epoch: int) -> list[int]:
        loader = Loader(images, labels, 8, mean=0, std=1, shuffle=True, seed=3, reshuffle=reshuffle)
        return torch.cat([y for _, y in loader.batches(epoch)]).tolist()

    assert sorted(order(False, 1)) == list(range(40))
    assert order(False, 1) == order(False, 2) == order(False, 7) == order(True, 0)
    assert order(True, 1) != order(True, 2)  # the default reshuffles per epoch, as before


def test_compile_in_the_experiment_trains_through_torch_compile(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistlab.runs.rundir import read_info
    from mnistlab.training import trainer as train

    compiled = []

    def fake_compile(model, **kwargs):  # records the call, trains eagerly (no C++ compiler)
        compiled.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = from_dict({"model": "gap_tiny", "epochs": 1, "batch_size": 64, "compile": True})
    train.train_run(cfg, tmp_path / "run", torch.device("cpu"), data_dir, console=False)
    assert compiled == [{"dynamic": False}]
    assert read_info(tmp_path / "run")["compile"] is True
    compiled.clear()
    train.train_run(
        from_dict({"model": "gap_tiny", "epochs": 1, "batch_size": 64}),
        tmp_path / "eager",
        torch.device("cpu"),
        data_dir,
        console=False,
    )
    assert compiled == [] and read_info(tmp_path / "eager")["compile"] is False
