"""Every registered model builds and runs; every experiment's model is what the file declares."""

from pathlib import Path

import pytest
import torch
from torch import nn

from mnistlab.config import load_config
from mnistlab.models import build, list_models
from mnistlab.models.summary import count_parameters, has_linear, model_stats
from mnistlab.weights import shipped_record

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))


@pytest.mark.parametrize("name", list_models())
def test_model_builds_and_gives_log_probabilities(name: str) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-5)


def test_experiments_exist_for_the_seed_and_the_drill_down() -> None:
    names = [path.stem for path in EXPERIMENTS]
    assert "seed" in names
    steps = [int(n[:2]) for n in names if n[:2].isdigit()]
    # Numbered 01, 02, ... with no gap and no number used twice.
    assert len(steps) >= 4 and steps == list(range(1, len(steps) + 1))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_declares_its_model_params_and_rf(path: Path) -> None:
    cfg = load_config(path)
    stats = model_stats(build(cfg.model, cfg.net))
    assert cfg.expect.params == stats["params"], "params in [expect] disagree with the model"
    assert (cfg.expect.rf or None) == stats["rf"], "rf in [expect] disagree with the model"
    assert cfg.target.strip(), "every experiment states its Target before it runs"


@pytest.mark.parametrize(
    "path", [p for p in EXPERIMENTS if p.stem[:2].isdigit()], ids=lambda p: p.stem
)
def test_drill_down_models_are_fully_convolutional_and_see_the_whole_digit(path: Path) -> None:
    cfg = load_config(path)
    model = build(cfg.model, cfg.net)
    assert not has_linear(model)
    assert model_stats(model)["rf"] >= 28


def test_final_experiment_meets_the_budget() -> None:
    final = shipped_record()
    cfg = load_config(EXPERIMENTS[[p.stem for p in EXPERIMENTS].index(final["experiment"])])
    model = build("final")
    assert count_parameters(model) < 8000 and cfg.epochs <= 15
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
