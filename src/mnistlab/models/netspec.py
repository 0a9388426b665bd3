"""Networks as data: a `[net]` table in an experiment file instead of a registered name.

Two forms, both checked key by key before anything is built:

A layer list, run in order on the 1x28x28 input and flattened to 10 log-probabilities:

    [net]
    layers = [
        { type = "conv", out = 4 },                            # 3x3 conv -> ReLU -> BatchNorm
        { type = "conv", out = 16, relu = false, bn = false },  # a bare 3x3 conv
        { type = "maxpool" },                                   # 2x2, stride 2
        { type = "relu" },
        { type = "bn" },
        { type = "conv", out = 8, kernel = 1 },                 # 1x1 squeeze
        { type = "gap" },                                       # global average pool
        { type = "conv", out = 10, kernel = 1, relu = false, bn = false, bias = false },
    ]

A GAP family (the drill-down's networks): blocks of 3x3 convs with a 2x2 max-pool and an
optional 1x1 squeeze between blocks, global average pooling and a 1x1 head to 10 channels:

    [net]
    blocks = [[4, 16], [12, 14, 16, 16]]  # output channels of each 3x3 conv, block by block
    squeeze = [8]                         # 1x1 conv after each pool (0: none)
    pool_first = true                     # pool a block's last conv before its ReLU/BatchNorm
    dropout = 0.0                         # after every hidden conv block

The family is compiled to a layer list (`family_layers`), so both forms build alike. Modules
are created in layer order, so the same seed gives the same initial weights as a registered
model built from the same layers (gap_thin_stem above, for one).
"""

from collections.abc import Callable
from typing import Any

from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.layers import Chain

NET = "net"  # the model name of an experiment whose [net] table declares its network
NUM_CLASSES = 10
INPUT = (1, 28, 28)  # channels, height, width

# Each layer type: its keys and their defaults (None: required or derived).
LAYER_KEYS: dict[str, dict[str, Any]] = {
    "conv": {
        "out": None,
        "kernel": 3,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "relu": True,
        "bn": True,
        "dropout": 0.0,
        "bias": None,  # default: a bias only when no BatchNorm follows
    },
    "maxpool": {"kernel": 2, "stride": None, "padding": 0},  # stride defaults to the kernel
    "avgpool": {"kernel": 2, "stride": None, "padding": 0},
    "relu": {},
    "bn": {},
    "dropout": {"p": 0.1},
    "gap": {},
}
FAMILY_KEYS = ("blocks", "squeeze", "pool_first", "dropout")
TYPES: dict[str, type] = {
    "out": int,
    "kernel": int,
    "stride": int,
    "padding": int,
    "dilation": int,
    "relu": bool,
    "bn": bool,
    "bias": bool,
    "dropout": float,
    "p": float,
}


def _fail(where: str, key: str, problem: str) -> MnistlabError:
    return MnistlabError(f"{where}: {key} {problem}")


def _check_value(value: Any, kind: type, where: str, key: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(where, key, f"must be {kind.__name__}, got {value!r}")
    return value


def _check_layer(layer: Any, where: str, key: str) -> dict[str, Any]:
    """One layer entry with its defaults filled in."""
    if not isinstance(layer, dict):
        raise _fail(
            where, key, f'must be a table such as {{ type = "conv", out = 8 }}, got {layer!r}'
        )
    kind = layer.get("type")
    if kind not in LAYER_KEYS:
        raise _fail(where, f"{key}.type", f"must be one of {', '.join(LAYER_KEYS)}, got {kind!r}")
    known = LAYER_KEYS[kind]
    out: dict[str, Any] = {"type": kind}
    for name, value in layer.items():
        if name == "type":
            continue
        if name not in known:
            allowed = ", ".join(known) or "no other keys"
            raise _fail(where, f"{key}.{name}", f"is not a key of a {kind} layer ({allowed})")
        out[name] = _check_value(value, TYPES[name], where, f"{key}.{name}")
    for name, default in known.items():
        if name not in out and default is not None:
            out[name] = default
    if kind == "conv":
        if "out" not in out:
            raise _fail(where, f"{key}.out", "is required: the conv's output channels")
        out.setdefault("bias", not out["bn"])
    for name in ("out", "kernel", "stride", "dilation"):
        if name in out and out[name] < 1:
            raise _fail(where, f"{key}.{name}", f"must be >= 1, got {out[name]}")
    if out.get("padding", 0) < 0:
        raise _fail(where, f"{key}.padding", f"must be >= 0, got {out['padding']}")
    for name in ("dropout", "p"):
        if name in out and not 0 <= out[name] < 1:
            raise _fail(where, f"{key}.{name}", f"must be in [0, 1), got {out[name]}")
    if kind in ("maxpool", "avgpool"):
        out.setdefault("stride", out["kernel"])
        if out["padding"] * 2 > out["kernel"]:
            raise _fail(where, f"{key}.padding", "must be at most half the kernel")
    return out


def _int_list(value: Any, where: str, key: str) -> list[int]:
    if not isinstance(value, list):
        raise _fail(where, key, f"must be a list of whole numbers, got {value!r}")
    return [_check_value(v, int, where, f"{key}[{i}]") for i, v in enumerate(value)]


def family_layers(net: dict[str, Any], where: str = "net") -> list[dict[str, Any]]:
    """The GAP family's layer list (see the module docstring)."""
    blocks = net.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise _fail(where, "net.blocks", f"must be a non-empty list of lists, got {blocks!r}")
    widths = [_int_list(b, where, f"net.blocks[{i}]") for i, b in enumerate(blocks)]
    for i, block in enumerate(widths):
        if not block:
            raise _fail(where, f"net.blocks[{i}]", "must hold at least one conv width")
        for j, w in enumerate(block):
            if w < 1:
                raise _fail(where, f"net.blocks[{i}][{j}]", f"must be >= 1, got {w}")
    squeeze = _int_list(net.get("squeeze", [0] * (len(widths) - 1)), where, "net.squeeze")
    if len(squeeze) != len(widths) - 1:
        raise _fail(
            where,
            "net.squeeze",
            f"must have one width per pool ({len(widths) - 1}), got {len(squeeze)}",
        )
    if any(s < 0 for s in squeeze):
        raise _fail(where, "net.squeeze", f"must be >= 0 (0: no squeeze), got {squeeze}")
    pool_first = _check_value(net.get("pool_first", False), bool, where, "net.pool_first")
    dropout = _check_value(net.get("dropout", 0.0), float, where, "net.dropout")
    if not 0 <= dropout < 1:
        raise _fail(where, "net.dropout", f"must be in [0, 1), got {dropout}")
    drop = {"dropout": dropout} if dropout else {}
    layers: list[dict[str, Any]] = []
    for b, block in enumerate(widths):
        pooled = b < len(widths) - 1
        for j, width in enumerate(block):
            if pooled and pool_first and j == len(block) - 1:
                layers += [
                    {"type": "conv", "out": width, "relu": False, "bn": False, "bias": False},
                    {"type": "maxpool"},
                    {"type": "relu"},
                    {"type": "bn"},
                ]
                layers += [{"type": "dropout", "p": dropout}] if dropout else []
            else:
                layers.append({"type": "conv", "out": width, **drop})
        if pooled:
            layers += [] if pool_first else [{"type": "maxpool"}]
            if squeeze[b]:
                layers.append({"type": "conv", "out": squeeze[b], "kernel": 1, **drop})
    layers += [
        {"type": "gap"},
        {
            "type": "conv",
            "out": NUM_CLASSES,
            "kernel": 1,
            "relu": False,
            "bn": False,
            "bias": False,
        },
    ]
    return layers


def _window(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_net(net: Any, where: str = "net") -> list[dict[str, Any]]:
    """The checked layer list of a [net] table, with every default filled in.

    Follows the map shape through the layers: a map that shrinks to nothing or an output that
    is not 10 values is an error naming the layer.
    """
    if not isinstance(net, dict) or not net:
        raise _fail(where, "net", "must be a table with `layers` or `blocks`")
    if "layers" in net:
        extra = [k for k in net if k != "layers"]
        if extra:
            raise _fail(where, f"net.{extra[0]}", "cannot stand beside net.layers")
        raw = net["layers"]
        if not isinstance(raw, list) or not raw:
            raise _fail(where, "net.layers", "must be a non-empty list of layer tables")
        layers = [_check_layer(layer, where, f"net.layers[{i}]") for i, layer in enumerate(raw)]
        prefix = "net.layers"
    else:
        unknown = [k for k in net if k not in FAMILY_KEYS]
        if unknown:
            raise _fail(
                where,
                f"net.{unknown[0]}",
                f"is not a key of [net]; known keys: layers, {', '.join(FAMILY_KEYS)}",
            )
        layers = [_check_layer(layer, where, "net") for layer in family_layers(net, where)]
        prefix = "net (as layers)"
    channels, height, width = INPUT
    for i, layer in enumerate(layers):
        kind = layer["type"]
        if kind == "conv":
            size = (layer["kernel"], layer["stride"], layer["padding"], layer["dilation"])
            height, width = _window(height, *size), _window(width, *size)
            channels = layer["out"]
        elif kind in ("maxpool", "avgpool"):
            size = (layer["kernel"], layer["stride"], layer["padding"])
            height, width = _window(height, *size), _window(width, *size)
        elif kind == "gap":
            height = width = 1
        if height < 1 or width < 1:
            raise _fail(
                where, f"{prefix}[{i}]", "shrinks the map to nothing; pad, pool less or drop it"
            )
    if channels * height * width != NUM_CLASSES:
        raise _fail(
            where,
            prefix,
            f"ends in {channels}x{height}x{width} = {channels * height * width} values, not "
            f"{NUM_CLASSES}; end with a gap layer and a 1x1 conv to {NUM_CLASSES} channels",
        )
    return layers


def _conv(layer: dict[str, Any], cin: int) -> tuple[nn.Module, int]:
    modules: list[nn.Module] = [
        nn.Conv2d(
            cin,
            layer["out"],
            layer["kernel"],
            stride=layer["stride"],
            padding=layer["padding"],
            dilation=layer["dilation"],
            bias=layer["bias"],
        )
    ]
    modules += [nn.ReLU()] if layer["relu"] else []
    modules += [nn.BatchNorm2d(layer["out"])] if layer["bn"] else []
    modules += [nn.Dropout(layer["dropout"])] if layer["dropout"] else []
    # A conv with ReLU/BatchNorm is one block (as compact.conv_block builds it), a bare conv
    # one layer: a registered network's weights load into its data twin.
    return (nn.Sequential(*modules) if len(modules) > 1 else modules[0]), layer["out"]


# Each layer type's builder: (layer, input channels) -> (module, output channels).
BUILDERS: dict[str, Callable[[dict[str, Any], int], tuple[nn.Module, int]]] = {
    "conv": _conv,
    "maxpool": lambda layer, c: (
        nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"]),
        c,
    ),
    "avgpool": lambda layer, c: (
        nn.AvgPool2d(layer["kernel"], layer["stride"], layer["padding"]),
        c,
    ),
    "relu": lambda layer, c: (nn.ReLU(), c),
    "bn": lambda layer, c: (nn.BatchNorm2d(c), c),
    "dropout": lambda layer, c: (nn.Dropout(layer["p"]), c),
    "gap": lambda layer, c: (nn.AdaptiveAvgPool2d(1), c),
}


def _build(net: dict[str, Any], where: str = "net") -> nn.Module:
    """The network a [net] table describes, built layer by layer in order (models.build is
    the public way)."""
    modules: list[nn.Module] = []
    channels = INPUT[0]
    for layer in check_net(net, where):
        module, channels = BUILDERS[layer["type"]](layer, channels)
        modules.append(module)
    return Chain(*modules)
