"""Richer nets as data: separable, grouped and bottleneck convs, squeeze-and-excitation and
residual sums in a [net] table; exact parameters and MACs, and receptive fields that the
gradients of the input confirm, through every branch."""

import copy
import tomllib

import numpy as np
import pytest
import torch
from torch import nn

from mnistlab.config import dumps_toml, from_dict, to_dict
from mnistlab.models import build, check_fits
from mnistlab.models.layers import Residual
from mnistlab.models.netspec import INPUT, _Tally, _walk, check_net
from mnistlab.models.summary import Layer, format_table, has_linear, summarize

HEAD = [
    {"type": "gap"},
    {"type": "conv", "out": 10, "kernel": 1, "relu": False, "bn": False, "bias": False},
]
STEM = {"type": "conv", "out": 4}  # 1 -> 4 channels, 28 -> 26: 36 weights, BN 8, MACs below
STEM_MACS = 4 * 26 * 26 * 9
STEM_PARAMS = 4 * 9 + 2 * 4


def net(*layers: dict) -> dict:
    return {"layers": [STEM, *layers, *HEAD]}


def head(channels: int) -> tuple[int, int]:
    """The head's (params, MACs): a 1x1 conv from `channels` to 10 on a 1x1 map, no bias."""
    return 10 * channels, 10 * channels


# Each kind after the stem on its 4x26x26 map: the layer, then its parameters and MACs by hand.
# A conv's weights are out * (in / groups) * k * k; BatchNorm adds 2 a channel.
KINDS = {
    "separable": (
        {"type": "conv", "out": 8, "kind": "separable"},
        # depthwise 3x3: 4 kernels of 9, no bias; 1x1 to 8: 32; BN 16
        4 * 9 + 8 * 4 + 16,
        # depthwise k*k*C*H*W on the 24x24 output, then 1x1: 8*24*24*4
        9 * 4 * 24 * 24 + 8 * 24 * 24 * 4,
        8,
    ),
    "grouped": (
        {"type": "conv", "out": 8, "kind": "grouped", "groups": 2},
        8 * 2 * 9 + 16,
        8 * 24 * 24 * 2 * 9,  # each output reads 4 / 2 channels
        8,
    ),
    "bottleneck": (
        {"type": "conv", "out": 8, "bottleneck": 2},
        4 * 2 + 8 * 2 * 9 + 16,  # 1x1 4 -> 2 without bias, 3x3 2 -> 8
        2 * 26 * 26 * 4 + 8 * 24 * 24 * 2 * 9,
        8,
    ),
    "separable bottleneck": (
        {"type": "conv", "out": 8, "kind": "separable", "bottleneck": 2, "bn": False},
        4 * 2 + 2 * 9 + 8 * (2 + 1),  # no BatchNorm: the 1x1 has a bias
        2 * 26 * 26 * 4 + 9 * 2 * 24 * 24 + 8 * 24 * 24 * 2,
        8,
    ),
    "se": (
        {"type": "se", "reduction": 2},
        # 1x1 4 -> 2 and 2 -> 4, both with biases
        4 * 2 + 2 + 2 * 4 + 4,
        # the two 1x1 convs on the pooled 1x1 map, and one multiply a value of the map
        4 * 2 + 2 * 4 + 4 * 26 * 26,
        4,
    ),
    "residual identity": (
        {"type": "residual", "layers": [{"type": "conv", "out": 4, "padding": 1}]},
        4 * 4 * 9 + 8,
        4 * 26 * 26 * 4 * 9,  # the sum costs no multiply
        4,
    ),
    "residual projection": (
        {
            "type": "residual",
            "layers": [{"type": "conv", "out": 8, "stride": 2, "padding": 1}],
        },
        8 * 4 * 9 + 16 + 8 * (4 + 1),  # the 1x1 stride-2 projection has a bias
        8 * 13 * 13 * 4 * 9 + 8 * 13 * 13 * 4,
        8,
    ),
}


@pytest.mark.parametrize(("layer", "params", "macs", "out"), KINDS.values(), ids=list(KINDS))
def test_params_and_macs_of_each_kind_by_hand(layer, params, macs, out):
    table = net(layer)
    model = build(table)
    s = summarize(model)
    head_params, head_macs = head(out)
    total = STEM_PARAMS + params + head_params
    assert s.total_params == sum(p.numel() for p in model.parameters()) == total
    assert s.macs == STEM_MACS + macs + head_macs
    # netspec's own count, which the bounds are checked against, is the same.
    tally = _Tally()
    _walk(check_net(table), INPUT, "net", "net.layers", tally)
    assert tally.params == total
    assert not has_linear(model)


# ----------------------------------------------------------------------------- receptive fields


def linearised(model: nn.Module) -> nn.Module:
    """A copy whose activations are the identity and whose max-pools average the same
    windows: every pixel of a unit's RF then has a path to it."""
    copied = copy.deepcopy(model)
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.ReLU):
            copied.set_submodule(name, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            copied.set_submodule(
                name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding)
            )
    return copied


def centre_gradient(model: nn.Module, path: str, x: torch.Tensor) -> np.ndarray:
    """d(the centre unit of the output of module `path`, summed over channels) / d(input)."""
    seen = []
    handle = model.get_submodule(path).register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    (out,) = seen
    value = out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum()
    (grad,) = torch.autograd.grad(value, x)
    return grad[0].sum(0).numpy()


def rf_box(layer: Layer, unit: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns the summary says unit (y, x) sees: RF pixels centred at
    start + i * jump, along each axis (every unit of a global layer sees the same box)."""
    assert layer.axes is not None, layer
    box = []
    for axis, i in zip(layer.axes, unit, strict=True):
        assert axis.rf == axis.rf_min and not axis.uneven
        low = axis.start - axis.rf / 2 + (0 if layer.is_global else i * axis.jump)
        box.append(slice(round(low), round(low) + axis.rf))
    return box[0], box[1]


def check_receptive_fields(model: nn.Module) -> int:
    """For every row with a map: the pixels the centre unit depends on lie in its RF box; in
    the linear copy they fill the box, clipped at the image's edge. Returns the rows checked."""
    model = model.double().eval()
    linear = linearised(model)
    layers = summarize(model).layers
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, *INPUT, dtype=torch.float64, generator=generator)
    checked = 0
    for layer in layers:
        if len(layer.output_shape) != 4:
            continue
        centre = (layer.output_shape[2] // 2, layer.output_shape[3] // 2)
        rows, cols = rf_box(layer, centre)
        inside = np.zeros(INPUT[1:], dtype=bool)
        inside[max(rows.start, 0) : rows.stop, max(cols.start, 0) : cols.stop] = True
        depends = centre_gradient(model, layer.path, x.clone().requires_grad_()) != 0
        assert not (depends & ~inside).any(), f"{layer.name}: a pixel outside its RF"
        linear_depends = centre_gradient(linear, layer.path, x.clone().requires_grad_()) != 0
        assert (linear_depends == inside).all(), f"{layer.name}: its RF box is not filled"
        checked += 1
    return checked


RF_NETS = {
    "separable": net({"type": "conv", "out": 8, "kind": "separable", "dilation": 1}),
    "grouped, strided": net(
        {"type": "conv", "out": 8, "kind": "grouped", "groups": 4, "stride": 2, "padding": 1},
        {"type": "conv", "out": 8, "kind": "grouped", "groups": 2},
    ),
    "bottleneck, pooled": net(
        {"type": "conv", "out": 8, "bottleneck": 2},
        {"type": "maxpool"},
        {"type": "conv", "out": 8, "bottleneck": 4, "kernel": 5, "padding": 1},
    ),
    "residuals": net(
        {"type": "maxpool"},
        {
            "type": "residual",  # identity: the body's two padded 3x3 convs win
            "layers": [
                {"type": "conv", "out": 4, "padding": 1},
                {"type": "conv", "out": 4, "padding": 1, "kind": "separable"},
            ],
        },
        {
            "type": "residual",  # a strided projection
            "layers": [
                {"type": "conv", "out": 6, "stride": 2, "padding": 1},
                {"type": "residual", "layers": [{"type": "conv", "out": 6, "padding": 1}]},
            ],
        },
    ),
    "squeeze-and-excitation": net(
        {"type": "conv", "out": 8},
        {"type": "se", "reduction": 4},
        {"type": "maxpool"},
        {"type": "conv", "out": 8},
    ),
    "family": {
        "blocks": [[4, 8], [8, 8, 8]],
        "squeeze": [4],
        "pool_first": True,
        "kind": ["separable", "grouped"],
        "groups": [2, 2],
        "bottleneck": [0, 4],
        "residual": [False, True],
        "se": [0, 2],
    },
}


@pytest.mark.parametrize("table", RF_NETS.values(), ids=list(RF_NETS))
def test_receptive_fields_agree_with_the_gradients(table):
    torch.manual_seed(0)
    model = build(table)
    assert check_receptive_fields(model) >= 4


def test_the_larger_path_of_a_residual_wins_whichever_it_is():
    # A 1x1 body beside a 5x5 shortcut: the shortcut's RF is the sum's.
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),  # RF 3
        Residual(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 5, padding=2)),  # 3 and 3 + 4 = 7
        nn.Conv2d(2, 10, 1),
    )
    s = summarize(model)
    assert [(layer.name, layer.rf) for layer in s.layers] == [
        ("Conv2d-1", 3),
        ("Conv2d-2", 3),
        ("Conv2d-3", 7),
        ("Add-4", 7),
        ("Conv2d-5", 7),
    ]
    assert check_receptive_fields(model) == 5


def test_squeeze_and_excitation_makes_every_unit_global():
    # Its gate pools the whole map: after the multiply every unit depends on every pixel the
    # map saw (the gradients above confirm it).
    s = summarize(build(RF_NETS["squeeze-and-excitation"]))
    names = [layer.name.split("-")[0] for layer in s.layers]
    mul = names.index("Mul")
    assert names[mul - 5 : mul + 1] == [
        "AdaptiveAvgPool2d", "Conv2d", "ReLU", "Conv2d", "Sigmoid", "Mul"
    ]  # fmt: skip
    before, after = s.layers[mul - 6], s.layers[mul]
    assert (before.rf, before.is_global) == (5, False)
    assert (after.rf, after.jump, after.is_global) == (28, 1, True)
    assert all(layer.is_global and layer.rf == 28 for layer in s.layers[mul:])
    # Its map goes on: the pool after it doubles the jump, up to the global pool's.
    pool = names.index("MaxPool2d")
    assert [layer.jump for layer in s.layers[pool - 1 : pool + 1]] == [1, 2]
    assert (s.rf, s.jump, s.is_global) == (28, 2, True)
    assert "Mul-" in format_table(s)


def test_a_rectangular_kernel_is_height_by_width_and_agrees_with_the_gradients():
    model = nn.Sequential(
        nn.Conv2d(1, 4, (3, 1)),  # rows [u, u+3), columns [u, u+1)
        nn.Conv2d(4, 4, (1, 5), stride=(1, 2)),  # columns 5 wide, 2 apart
        nn.AvgPool2d(2),
    )
    s = summarize(model)
    table = format_table(s).splitlines()
    rows = [next(line for line in table if layer.name in line).split()[-4:-1] for layer in s.layers]
    assert [layer.axes[0].rf for layer in s.layers] == [3, 3, 4]
    assert [layer.axes[1].rf for layer in s.layers] == [1, 5, 7]
    assert rows[0] == ["3x1", "1", "1.5x0.5"]
    assert rows[1] == ["3x5", "1x2", "1.5x2.5"]
    assert s.rf is None and s.rf_hw == [4, 7] and s.jump_hw == [2, 4]
    assert check_receptive_fields(model) == 3


# ----------------------------------------------------------------------------- training


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_a_net_of_every_kind_fits_trains_and_traces():
    torch.manual_seed(0)
    model = build(RF_NETS["family"])
    assert check_fits(model, "net", torch.device("cpu")) == "log_probs"
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, *INPUT, generator=generator)
    y = torch.randint(0, 10, (8,), generator=generator)
    losses = []
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(model(x), y)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # the same batch three times: it learns it
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:2])
        assert torch.allclose(traced(x), model(x))


def test_rich_net_tables_round_trip_through_toml():
    for table in (RF_NETS["residuals"], RF_NETS["family"]):
        cfg = from_dict({"net": table})
        assert from_dict(tomllib.loads(dumps_toml(to_dict(cfg)))) == cfg


def test_the_family_compiles_to_the_documented_layers():
    layers = check_net(RF_NETS["family"])
    types = [layer["type"] for layer in layers]
    # block 0: the first conv stays plain; pool_first on its (separable) last conv
    assert types[:6] == ["conv", "conv", "maxpool", "relu", "bn", "conv"]
    assert layers[0]["kind"] == "conv" and layers[1]["kind"] == "separable"
    assert (layers[1]["relu"], layers[1]["bn"]) == (False, False)
    # the squeeze, then block 1: a residual of padded grouped bottleneck convs, its SE
    assert types[6:] == ["residual", "se", "gap", "conv"]
    body = layers[6]["layers"]
    assert [(c["kind"], c["groups"], c["bottleneck"], c["padding"]) for c in body] == [
        ("grouped", 2, 4, 1)
    ] * 3
    assert layers[7]["reduction"] == 2


# ----------------------------------------------------------------------------- search space

SPACE = """
[search]
val_size = 100

[experiment]
epochs = 1

[space.net]
first = [4]
layers = [[1, 2], [2]]
width = [8, 12]
squeeze = [0, 8]
kind = ["conv", "separable", "grouped"]
groups = [2, 4]
bottleneck = [0, 4]
residual = [false, true]
se = [0, 4]
"""


def test_a_search_space_draws_the_richer_layers_block_by_block(tmp_path):
    import optuna

    from mnistlab.search.space import load_space, measure, suggest

    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    space = load_space(path)
    # groups is drawn only for a block drawn "grouped": FixedTrial refuses any other name.
    params = {
        "layers_1": 2, "first": 4, "width_1_2": 8, "layers_2": 2, "width_2_1": 12,
        "width_2_2": 12, "squeeze_1": 8, "kind_1": "separable", "kind_2": "grouped",
        "groups_2": 4, "bottleneck_1": 0, "bottleneck_2": 4, "residual_1": False,
        "residual_2": True, "se_1": 4, "se_2": 0,
    }  # fmt: skip
    net, _ = suggest(optuna.trial.FixedTrial(params), space)
    assert net == {
        "blocks": [[4, 8], [12, 12]],
        "squeeze": [8],
        "pool_first": False,
        "dropout": 0.0,
        "kind": ["separable", "grouped"],
        "groups": [2, 4],
        "bottleneck": [0, 4],
        "residual": [False, True],
        "se": [4, 0],
    }
    stats = measure(net)
    assert stats["params"] == sum(p.numel() for p in build(net).parameters())
    assert not stats["linear"] and stats["rf"] == 28
    # Every draw builds (the corners were checked when the space was read).
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drawn = set()
    for _ in range(12):
        net, _ = suggest(study.ask(), space)
        assert "error" not in measure(net), net
        drawn |= set(net["kind"])
    assert drawn == {"conv", "separable", "grouped"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('kind = ["conv", "separable", "grouped"]', 'kind = ["dw"]'), "space.net.kind must be"),
        (("groups = [2, 4]", "groups = [2, 3]"), "space.net cannot build its corner"),
        (("se = [0, 4]", "se = [-1]"), "space.net.se must be whole numbers in [0, 4096]"),
    ],
)
def test_a_bad_richer_knob_is_one_line(tmp_path, change, message):
    from mnistlab.errors import MnistlabError
    from mnistlab.search.space import load_space

    path = tmp_path / "space.toml"
    path.write_text(SPACE.replace(*change))
    with pytest.raises(MnistlabError) as caught:
        load_space(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
