"""Networks as data: the [net] table builds the drill-down's networks weight for weight, and
every command that rebuilds a model (train, checkpoint, summary, export, compare) does so
from the saved spec."""

import json
from pathlib import Path

import pytest
import torch

from mnistlab import weights
from mnistlab.cli import main
from mnistlab.config import dumps_toml, from_dict, load_config, to_dict
from mnistlab.models import build
from mnistlab.models.netspec import check_net
from mnistlab.models.summary import has_linear, model_stats
from mnistlab.runs import rundir
from mnistlab.runs.checkpoint import model_from_file
from mnistlab.runs.ship import ship_model
from mnistlab.training.trainer import train_run

ROOT = Path(__file__).parent.parent
# experiments/19-thin-stem.toml's gap_thin_stem as data: both forms.
THIN_STEM_FAMILY = {"blocks": [[4, 16], [12, 14, 16, 16]], "squeeze": [8], "pool_first": True}
THIN_STEM_LAYERS = {
    "layers": [
        {"type": "conv", "out": 4},
        {"type": "conv", "out": 16, "relu": False, "bn": False, "bias": False},
        {"type": "maxpool"},
        {"type": "relu"},
        {"type": "bn"},
        {"type": "conv", "out": 8, "kernel": 1},
        {"type": "conv", "out": 12},
        {"type": "conv", "out": 14},
        {"type": "conv", "out": 16},
        {"type": "conv", "out": 16},
        {"type": "gap"},
        {"type": "conv", "out": 10, "kernel": 1, "relu": False, "bn": False, "bias": False},
    ]
}


@pytest.mark.parametrize("net", [THIN_STEM_FAMILY, THIN_STEM_LAYERS], ids=["family", "layers"])
def test_the_final_model_as_data_is_the_registered_one(net):
    torch.manual_seed(1)
    registered = build("gap_thin_stem").eval()
    torch.manual_seed(1)
    data = build("net", net).eval()
    torch.manual_seed(1)
    assert build(net).state_dict().keys() == data.state_dict().keys()  # the table alone
    stats = model_stats(data)
    assert stats == model_stats(registered)
    assert (stats["params"], stats["rf"], stats["macs"]) == (7768, 28, 667312)
    assert not has_linear(data)
    # Built in the same order: the same seed gives the same initial weights, the same names.
    a, b = registered.state_dict(), data.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(registered(x), data(x))


def test_the_shipped_weights_load_into_their_data_twin():
    model, meta = model_from_file(ROOT / "src/mnistlab/weights/final.pt")
    assert meta["model_name"] == "gap_thin_stem"
    twin = build("net", THIN_STEM_FAMILY).eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_net_experiment_trains_saves_and_rebuilds_everywhere(
    data_dir, tmp_path, capsys, monkeypatch
):
    experiment = tmp_path / "net.toml"
    experiment.write_text(
        "epochs = 1\nbatch_size = 32\n\n[net]\n"
        "blocks = [[4, 16], [12, 14, 16, 16]]\nsqueeze = [8]\npool_first = true\n"
    )
    cfg = load_config(experiment)
    assert cfg.model == "net" and cfg.net == THIN_STEM_FAMILY
    out = tmp_path / "run"
    train_run(cfg, out, torch.device("cpu"), data_dir, console=False)
    # config.toml holds the [net] table; it reads back as the same experiment.
    assert rundir.read_config(out) == cfg
    assert json.loads((out / "run.json").read_text())["params"] == 7768
    model, meta = rundir.load_model(out)
    torch.manual_seed(0)
    reference = build("net", meta["config"]["net"])
    reference.load_state_dict(model.state_dict())
    # summary of the experiment file, export and compare of the run: all from the spec.
    assert main(["summary", str(experiment), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] == 7768
    script = tmp_path / "net.pt"
    assert (
        main(["export", "--checkpoint", str(out), "--format", "torchscript", "--out", str(script)])
        == 0
    )
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(script))(x), model(x), atol=1e-6)
    assert main(["compare", str(out), "--format", "json"]) == 0
    capsys.readouterr()
    # A registered model on the command line replaces the [net] table.
    from mnistlab.config import override

    assert override(cfg, model="gap_tiny").net == {}
    # Shipped, its final.json holds the [net] table, so "final" rebuilds it.
    ship_model(out, tmp_path / "package")
    monkeypatch.setattr(weights, "shipped_weights", lambda: tmp_path / "package" / "final.pt")
    build("final").load_state_dict(model.state_dict())


def test_net_tables_round_trip_through_toml():
    for net in (THIN_STEM_FAMILY, THIN_STEM_LAYERS):
        cfg = from_dict({"net": net})
        import tomllib

        assert from_dict(tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg


C4 = {"type": "conv", "out": 4}
HEAD = THIN_STEM_LAYERS["layers"][-2:]


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ({"layers": [{"type": "conv"}]}, "net.layers[0].out is required"),
        ({"layers": [{"type": "conv", "out": 4, "size": 3}]}, "net.layers[0].size is not a key"),
        ({"layers": [{"type": "dense", "out": 10}]}, "net.layers[0].type must be one of"),
        ({"layers": [{"type": "conv", "out": "4"}]}, "net.layers[0].out must be int"),
        ({"layers": [{"type": "conv", "out": 10, "kernel": 29}]}, "kernel must be in [1, 28]"),
        (
            {"layers": [{"type": "maxpool", "kernel": 28}, {"type": "conv", "out": 10}]},
            "net.layers[1] shrinks the map to nothing",
        ),
        ({"layers": [{"type": "conv", "out": 8}, {"type": "gap"}]}, "not 10; end with a gap"),
        ({"blocks": [[4], []]}, "net.blocks[1] must hold at least one"),
        ({"blocks": [[4], [8]], "squeeze": [1, 2]}, "net.squeeze must have one width per pool"),
        ({"blocks": [[4]], "width": 3}, "net.width is not a key of [net]"),
        ({"blocks": [[4], [8]], "dropout": 1.5}, "net.dropout must be in [0, 1)"),
        # richer layers
        (
            {"layers": [{"type": "conv", "out": 8, "kind": "depthwise"}]},
            "net.layers[0].kind must be one of conv, separable, grouped, got 'depthwise'",
        ),
        (
            {"layers": [{"type": "conv", "out": 8, "groups": 2}]},
            'net.layers[0].groups is a key of grouped convs only; drop it or set kind = "grouped"',
        ),
        (
            {"layers": [C4, {"type": "conv", "out": 6, "kind": "grouped", "groups": 4}, *HEAD]},
            "net.layers[1].groups must divide the conv's input and output channels (4 and 6)",
        ),
        (
            {"layers": [{"type": "conv", "out": 8, "bottleneck": -1}]},
            "net.layers[0].bottleneck must be in [0, 4096] (0: none), got -1",
        ),
        (
            {"layers": [C4, {"type": "se", "reduction": 0}, *HEAD]},
            "net.layers[1].reduction must be in [1, 4096], got 0",
        ),
        ({"layers": [C4, {"type": "residual"}]}, "net.layers[1].layers is required"),
        (
            {"layers": [C4, {"type": "residual", "layers": [{"type": "relu", "p": 1}]}]},
            "net.layers[1].layers[0].p is not a key of a relu layer",
        ),
        (
            {"layers": [C4, {"type": "residual", "layers": [C4]}, *HEAD]},
            "net.layers[1] cannot add its body's 4x24x24 output to its 4x26x26 input",
        ),
        (
            {"layers": [{"type": "residual", "layers": [{"type": "relu"}] * 300}]},
            "net.layers[0].layers[255] brings the network past 256 layers",
        ),
        ({"blocks": [[4], [8]], "kind": ["conv"]}, "net.kind must have one entry per block (2)"),
        ({"blocks": [[4], [8]], "kind": ["conv", "dw"]}, "net.kind[1] must be one of conv, "),
        (
            {"blocks": [[4], [6]], "kind": ["conv", "grouped"], "groups": [2, 4]},
            "net.groups[1] = 4 must divide the input and output channels of block 1's grouped "
            "convs, got 4 -> 6",
        ),
        ({"blocks": [[4]], "se": [-1]}, "net.se[0] must be in [0, 4096] (0: none), got -1"),
        ({"blocks": [[4]], "residual": ["yes"]}, "net.residual[0] must be bool, got 'yes'"),
    ],
)
def test_a_bad_net_is_one_line_naming_the_key(net, message, tmp_path, capsys):
    with pytest.raises(Exception, match=None) as info:
        check_net(net, "x.toml")
    assert message in str(info.value) and "\n" not in str(info.value)
    experiment = tmp_path / "bad.toml"
    experiment.write_text(dumps_toml({"epochs": 1, "net": net}))
    assert main(["summary", str(experiment)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and err.count("\n") == 1 and message in err


def test_a_registered_model_beside_a_net_table_is_refused(capsys):
    with pytest.raises(Exception, match='model must be "net"'):
        from_dict({"model": "gap_tiny", "net": THIN_STEM_FAMILY})
    with pytest.raises(Exception, match="net must be a table with `layers` or `blocks`"):
        from_dict({"model": "net"})
