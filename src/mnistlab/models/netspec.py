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

Every size is bounded to what can be built on the 1x28x28 input, and checked before any
module exists: at most MAX_LAYERS layers; a conv's `out` (and a family's widths) in
[1, MAX_CHANNELS]; kernel, stride and dilation in [1, 28] (the input's side); a conv's padding
at most dilation * (kernel - 1) (past that, outputs see only padding), a pool's at most half
its kernel (as torch requires); every layer's output non-empty, at most MAX_VALUES values per
image (MAX_TOTAL_VALUES over all layers), and at most MAX_PARAMS parameters in all.
"""

from collections.abc import Callable
from typing import Any

from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.layers import Chain

NET = "net"  # the model name of an experiment whose [net] table declares its network
NUM_CLASSES = 10
INPUT = (1, 28, 28)  # channels, height, width
# Bounds (see the module docstring): generous for a 28x28 input, and far inside what the
# allocator and 32-bit sizes take.
MAX_LAYERS = 256
MAX_CHANNELS = 4096
MAX_WINDOW = INPUT[1]  # kernel, stride, dilation
MAX_VALUES = 2**22  # one layer's output, per image: 4096 channels of 32x32
MAX_TOTAL_VALUES = 2**25  # all layers' outputs, per image (128 MiB of float32)
MAX_PARAMS = 2**28  # 1 GiB of float32 weights

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
    if "out" in out and not 1 <= out["out"] <= MAX_CHANNELS:
        raise _fail(where, f"{key}.out", f"must be in [1, {MAX_CHANNELS}], got {out['out']}")
    if kind in ("maxpool", "avgpool"):
        out.setdefault("stride", out["kernel"])
    for name in ("kernel", "stride", "dilation"):
        if name in out and not 1 <= out[name] <= MAX_WINDOW:
            raise _fail(
                where,
                f"{key}.{name}",
                f"must be in [1, {MAX_WINDOW}] (the input's side), got {out[name]}",
            )
    if "padding" in out:
        if kind == "conv":  # past the kernel's reach less one, outputs see only padding
            most, rule = out["dilation"] * (out["kernel"] - 1), "dilation * (kernel - 1)"
        else:  # torch's rule for pools
            most, rule = out["kernel"] // 2, "half the kernel"
        if not 0 <= out["padding"] <= most:
            raise _fail(
                where,
                f"{key}.padding",
                f"must be in [0, {most}] (at most {rule}), got {out['padding']}",
            )
    for name in ("dropout", "p"):
        if name in out and not 0 <= out[name] < 1:
            raise _fail(where, f"{key}.{name}", f"must be in [0, 1), got {out[name]}")
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
    convs = sum(len(b) if isinstance(b, list) else 1 for b in blocks)
    if convs + 2 * len(blocks) > MAX_LAYERS:  # a conv a width, a pool and a squeeze a block
        raise _fail(
            where, "net.blocks", f"holds {convs} convs; a network has at most {MAX_LAYERS} layers"
        )
    widths = [_int_list(b, where, f"net.blocks[{i}]") for i, b in enumerate(blocks)]
    for i, block in enumerate(widths):
        if not block:
            raise _fail(where, f"net.blocks[{i}]", "must hold at least one conv width")
        for j, w in enumerate(block):
            if not 1 <= w <= MAX_CHANNELS:
                raise _fail(
                    where, f"net.blocks[{i}][{j}]", f"must be in [1, {MAX_CHANNELS}], got {w}"
                )
    squeeze = _int_list(net.get("squeeze", [0] * (len(widths) - 1)), where, "net.squeeze")
    if len(squeeze) != len(widths) - 1:
        raise _fail(
            where,
            "net.squeeze",
            f"must have one width per pool ({len(widths) - 1}), got {len(squeeze)}",
        )
    for i, width in enumerate(squeeze):
        if not 0 <= width <= MAX_CHANNELS:
            raise _fail(
                where,
                f"net.squeeze[{i}]",
                f"must be in [0, {MAX_CHANNELS}] (0: no squeeze), got {width}",
            )
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
        if len(raw) > MAX_LAYERS:
            raise _fail(where, "net.layers", f"has {len(raw)} layers, more than {MAX_LAYERS}")
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
    params = total = 0
    for i, layer in enumerate(layers):
        kind = layer["type"]
        if kind == "conv":
            size = (layer["kernel"], layer["stride"], layer["padding"], layer["dilation"])
            height, width = _window(height, *size), _window(width, *size)
            params += layer["out"] * (channels * layer["kernel"] ** 2 + layer["bias"])
            params += 2 * layer["out"] if layer["bn"] else 0
            channels = layer["out"]
        elif kind in ("maxpool", "avgpool"):
            size = (layer["kernel"], layer["stride"], layer["padding"])
            height, width = _window(height, *size), _window(width, *size)
        elif kind == "gap":
            height = width = 1
        elif kind == "bn":
            params += 2 * channels
        if height < 1 or width < 1:
            raise _fail(
                where, f"{prefix}[{i}]", "shrinks the map to nothing; pad, pool less or drop it"
            )
        values = channels * height * width
        total += values
        if values > MAX_VALUES:
            raise _fail(
                where,
                f"{prefix}[{i}]",
                f"makes a {channels}x{height}x{width} map, {values:,} values per image, more "
                f"than {MAX_VALUES:,}; use fewer channels or a smaller map",
            )
        if total > MAX_TOTAL_VALUES:
            raise _fail(
                where,
                f"{prefix}[{i}]",
                f"brings the layers' outputs to {total:,} values per image, more than "
                f"{MAX_TOTAL_VALUES:,}; use fewer or narrower layers",
            )
        if params > MAX_PARAMS:
            raise _fail(
                where,
                f"{prefix}[{i}]",
                f"brings the network to {params:,} parameters, more than {MAX_PARAMS:,}; "
                "use fewer channels or smaller kernels",
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
