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

Richer layers, for networks that spend parameters more thinly:

    { type = "conv", out = 16, kind = "separable" }    # depthwise 3x3, then 1x1 to 16
    { type = "conv", out = 16, kind = "grouped", groups = 4 }  # 3x3 in 4 channel groups
    { type = "conv", out = 16, bottleneck = 4 }        # 1x1 down to 4 channels first
    { type = "se", reduction = 4 }                     # squeeze-and-excitation
    { type = "residual", layers = [                    # body(x) + x
        { type = "conv", out = 8, padding = 1 },
        { type = "conv", out = 8, padding = 1, kind = "separable" },
    ] }

- `kind` (default "conv"): "separable" is a depthwise conv (one kernel per input channel,
  no bias) straight into a 1x1 conv to `out` (no activation between: the pair replaces one
  conv); "grouped" splits the input and output channels into `groups` groups (default 2;
  both counts must divide by it; `groups` is only a key of grouped convs).
- `bottleneck` (default 0: none): a 1x1 conv (no bias, no activation) down to that many
  channels before the conv. Stride, padding and dilation apply to the conv itself; ReLU,
  BatchNorm and dropout follow the last conv of the layer, as for a plain conv.
- `se`: global average pool -> 1x1 conv to max(1, channels // reduction) -> ReLU -> 1x1 conv
  back -> sigmoid, multiplying each channel of its input (1x1 convs with biases, no Linear).
- `residual`: its layers (any, residuals included) run on the input and their output is
  added to it: unchanged (identity) when the shape is kept, else through a 1x1 conv with a
  bias that changes the channels and strides the map to the body's size. A body that crops
  the map (unpadded convs) cannot be matched: pad it (padding = 1 for a 3x3 conv).

A GAP family (the drill-down's networks): blocks of 3x3 convs with a 2x2 max-pool and an
optional 1x1 squeeze between blocks, global average pooling and a 1x1 head to 10 channels:

    [net]
    blocks = [[4, 16], [12, 14, 16, 16]]  # output channels of each 3x3 conv, block by block
    squeeze = [8]                         # 1x1 conv after each pool (0: none)
    pool_first = true                     # pool a block's last conv before its ReLU/BatchNorm
    dropout = 0.0                         # after every hidden conv block

and, each one entry per block (all optional, so that a search can draw them block by block):

    kind = ["conv", "separable"]   # the block's 3x3 convs: "conv", "separable" or "grouped"
    groups = [2, 4]                # groups of the block's convs where its kind is "grouped"
    bottleneck = [0, 8]            # 1x1 down to this many channels before each 3x3 (0: none)
    residual = [false, true]       # pad the block's convs and add the block's input to them
    se = [0, 4]                    # squeeze-and-excitation of this reduction (0: none)

The network's first conv reads the 1-channel image and stays a plain conv whatever its block's
kind and bottleneck. A residual block's sum is what its pool reads, so pool_first applies to
plain blocks only. Squeeze-and-excitation acts on a block's output after its pool, where the
multiply is cheapest, before the squeeze.

The family is compiled to a layer list (`family_layers`), so both forms build alike. Modules
are created in layer order, so the same seed gives the same initial weights as a registered
model built from the same layers (gap_thin_stem above, for one).

Every size is bounded to what can be built on the 1x28x28 input, and checked before any
module exists: at most MAX_LAYERS layers, those inside residuals included; a conv's `out` (and
a family's widths) in [1, MAX_CHANNELS]; kernel, stride and dilation in [1, 28] (the input's
side); a conv's padding at most dilation * (kernel - 1) (past that, outputs see only padding),
a pool's at most half its kernel (as torch requires); every layer's output non-empty, at most
MAX_VALUES values per image (MAX_TOTAL_VALUES over all layers), and at most MAX_PARAMS
parameters in all.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.layers import Chain, Residual, SqueezeExcite

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

CONV_KINDS = ("conv", "separable", "grouped")
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
        "kind": "conv",
        "groups": None,  # grouped convs only; default 2
        "bottleneck": 0,
    },
    "maxpool": {"kernel": 2, "stride": None, "padding": 0},  # stride defaults to the kernel
    "avgpool": {"kernel": 2, "stride": None, "padding": 0},
    "relu": {},
    "bn": {},
    "dropout": {"p": 0.1},
    "gap": {},
    "se": {"reduction": 4},
    "residual": {"layers": None},
}
FAMILY_KEYS = ("blocks", "squeeze", "pool_first", "dropout")
# The family's per-block keys: (type, lowest value, default).
BLOCK_KEYS: dict[str, tuple[type, int, Any]] = {
    "kind": (str, 0, "conv"),
    "groups": (int, 1, 2),
    "bottleneck": (int, 0, 0),
    "residual": (bool, 0, False),
    "se": (int, 0, 0),
}
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
    "kind": str,
    "groups": int,
    "bottleneck": int,
    "reduction": int,
    "layers": list,
}
Shape = tuple[int, int, int]  # channels, height, width


def _fail(where: str, key: str, problem: str) -> MnistlabError:
    return MnistlabError(f"{where}: {key} {problem}")


def _check_value(value: Any, kind: type, where: str, key: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(where, key, f"must be {kind.__name__}, got {value!r}")
    return value


def _check_range(value: int, low: int, where: str, key: str, note: str = "") -> None:
    if not low <= value <= MAX_CHANNELS:
        raise _fail(where, key, f"must be in [{low}, {MAX_CHANNELS}]{note}, got {value}")


@dataclass
class _Count:
    """Layers checked so far, residuals' own included: nesting is bounded by MAX_LAYERS."""

    layers: int = 0


def _check_layer(layer: Any, where: str, key: str, count: _Count | None = None) -> dict[str, Any]:
    """One layer entry with its defaults filled in (a residual's layers too)."""
    count = count or _Count()
    count.layers += 1
    if count.layers > MAX_LAYERS:
        raise _fail(
            where,
            key,
            f"brings the network past {MAX_LAYERS} layers (those inside residuals included); "
            "use fewer",
        )
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
        if out["kind"] not in CONV_KINDS:
            raise _fail(
                where,
                f"{key}.kind",
                f"must be one of {', '.join(CONV_KINDS)}, got {out['kind']!r}",
            )
        if "groups" in out and out["kind"] != "grouped":
            raise _fail(
                where,
                f"{key}.groups",
                'is a key of grouped convs only; drop it or set kind = "grouped"',
            )
        if out["kind"] == "grouped":
            out.setdefault("groups", 2)
            _check_range(out["groups"], 1, where, f"{key}.groups")
        _check_range(out["bottleneck"], 0, where, f"{key}.bottleneck", " (0: none)")
    if "out" in out and not 1 <= out["out"] <= MAX_CHANNELS:
        raise _fail(where, f"{key}.out", f"must be in [1, {MAX_CHANNELS}], got {out['out']}")
    if kind == "se":
        _check_range(out["reduction"], 1, where, f"{key}.reduction")
    if kind == "residual":
        if "layers" not in out or not out["layers"]:
            raise _fail(where, f"{key}.layers", "is required: a non-empty list of layer tables")
        out["layers"] = [
            _check_layer(inner, where, f"{key}.layers[{i}]", count)
            for i, inner in enumerate(out["layers"])
        ]
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


def _block_list(net: dict[str, Any], name: str, blocks: int, where: str) -> list[Any]:
    """A per-block family key (BLOCK_KEYS): one checked entry per block, or its default."""
    kind, low, default = BLOCK_KEYS[name]
    key = f"net.{name}"
    if name not in net:
        return [default] * blocks
    value = net[name]
    if not isinstance(value, list):
        raise _fail(where, key, f"must be a list with one entry per block, got {value!r}")
    if len(value) != blocks:
        raise _fail(where, key, f"must have one entry per block ({blocks}), got {len(value)}")
    items = [_check_value(v, kind, where, f"{key}[{i}]") for i, v in enumerate(value)]
    for i, item in enumerate(items):
        if kind is str and item not in CONV_KINDS:
            raise _fail(
                where, f"{key}[{i}]", f"must be one of {', '.join(CONV_KINDS)}, got {item!r}"
            )
        if kind is int:
            _check_range(item, low, where, f"{key}[{i}]", " (0: none)" if low == 0 else "")
    return items


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
    per_block = {name: _block_list(net, name, len(widths), where) for name in BLOCK_KEYS}
    drop = {"dropout": dropout} if dropout else {}
    layers: list[dict[str, Any]] = []
    channels = INPUT[0]
    for b, block in enumerate(widths):
        kind, groups, bottleneck, residual, se = (per_block[k][b] for k in BLOCK_KEYS)
        pooled = b < len(widths) - 1
        body: list[dict[str, Any]] = []
        for j, width in enumerate(block):
            conv: dict[str, Any] = {"type": "conv", "out": width, **drop}
            if residual:  # the sum needs the block's map kept
                conv["padding"] = 1
            if b or j:  # the first conv reads the 1-channel image: always plain
                conv.update({"kind": kind} if kind != "conv" else {})
                conv.update({"bottleneck": bottleneck} if bottleneck else {})
                if kind == "grouped":
                    reads = bottleneck or channels
                    if reads % groups or width % groups:
                        raise _fail(
                            where,
                            f"net.groups[{b}]",
                            f"= {groups} must divide the input and output channels of block "
                            f"{b}'s grouped convs, got {reads} -> {width}; choose widths "
                            "(and squeeze, bottleneck) that it divides",
                        )
                    conv["groups"] = groups
            body.append(conv)
            channels = width
        if residual:
            layers.append({"type": "residual", "layers": body})
            layers += [{"type": "maxpool"}] if pooled else []
        elif pooled and pool_first:
            last = body[-1]
            last.pop("dropout", None)
            last.update(relu=False, bn=False, bias=False)
            layers += [*body, {"type": "maxpool"}, {"type": "relu"}, {"type": "bn"}]
            layers += [{"type": "dropout", "p": dropout}] if dropout else []
        else:
            layers += [*body, *([{"type": "maxpool"}] if pooled else [])]
        if se:
            layers.append({"type": "se", "reduction": se})
        if pooled and squeeze[b]:
            layers.append({"type": "conv", "out": squeeze[b], "kernel": 1, **drop})
            channels = squeeze[b]
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


def shortcut_stride(size: int, out: int) -> int | None:
    """The stride of a 1x1 conv that takes a side of `size` to `out`; None if none does."""
    if not 1 <= out <= size:
        return None
    stride = -(-size // out)
    return stride if _window(size, 1, stride, 0) == out else None


def _conv_maps(layer: dict[str, Any], shape: Shape) -> list[Shape]:
    """The maps a conv layer makes, in order: its bottleneck's and depthwise conv's, if any,
    then its output."""
    channels, height, width = shape
    maps = []
    if layer["bottleneck"]:
        channels = layer["bottleneck"]
        maps.append((channels, height, width))
    size = (layer["kernel"], layer["stride"], layer["padding"], layer["dilation"])
    height, width = _window(height, *size), _window(width, *size)
    if layer["kind"] == "separable":
        maps.append((channels, height, width))
    return [*maps, (layer["out"], height, width)]


def _conv_params(layer: dict[str, Any], channels: int) -> int:
    reads = layer["bottleneck"] or channels
    params = channels * layer["bottleneck"]  # the 1x1 bottleneck, no bias
    kernel = layer["kernel"] ** 2
    if layer["kind"] == "separable":  # depthwise without bias, then 1x1
        params += reads * kernel + layer["out"] * (reads + layer["bias"])
    else:
        groups = layer.get("groups", 1)
        params += layer["out"] * (reads // groups * kernel + layer["bias"])
    return params + (2 * layer["out"] if layer["bn"] else 0)


def _se_hidden(layer: dict[str, Any], channels: int) -> int:
    return max(1, channels // layer["reduction"])


@dataclass
class _Tally:
    """What the layers checked so far hold, against the bounds."""

    params: int = 0
    values: int = 0


def _walk(
    layers: list[dict[str, Any]], shape: Shape, where: str, prefix: str, tally: _Tally
) -> Shape:
    """The shape after `layers` from `shape`, each layer checked against the bounds."""
    for i, layer in enumerate(layers):
        key = f"{prefix}[{i}]"
        kind = layer["type"]
        channels, height, width = shape
        maps: list[Shape] = []
        if kind == "conv":
            reads = layer["bottleneck"] or channels
            groups = layer.get("groups", 1)
            if reads % groups or layer["out"] % groups:
                raise _fail(
                    where,
                    f"{key}.groups",
                    f"must divide the conv's input and output channels ({reads} and "
                    f"{layer['out']}), got {groups}",
                )
            maps = _conv_maps(layer, shape)
            tally.params += _conv_params(layer, channels)
        elif kind in ("maxpool", "avgpool"):
            size = (layer["kernel"], layer["stride"], layer["padding"])
            maps = [(channels, _window(height, *size), _window(width, *size))]
        elif kind == "gap":
            maps = [(channels, 1, 1)]
        elif kind == "bn":
            tally.params += 2 * channels
        elif kind == "se":
            hidden = _se_hidden(layer, channels)
            tally.params += 2 * channels * hidden + hidden + channels
            maps = [(hidden, 1, 1), (channels, 1, 1), shape]
        elif kind == "residual":
            body = _walk(layer["layers"], shape, where, f"{key}.layers", tally)
            strides = [shortcut_stride(n, m) for n, m in zip(shape[1:], body[1:], strict=True)]
            if None in strides:
                shown = "x".join(map(str, body)), "x".join(map(str, shape))
                raise _fail(
                    where,
                    key,
                    f"cannot add its body's {shown[0]} output to its {shown[1]} input (a 1x1 "
                    "shortcut only strides); pad the body's convs (padding = 1 for a 3x3)",
                )
            if body != shape:  # a 1x1 projection with a bias
                tally.params += body[0] * (channels + 1)
                maps.append(body)
            maps.append(body)
        shape = maps[-1] if maps else shape
        if shape[1] < 1 or shape[2] < 1:
            raise _fail(where, key, "shrinks the map to nothing; pad, pool less or drop it")
        for channels, height, width in maps or [shape]:
            values = channels * height * width
            tally.values += values
            if values > MAX_VALUES:
                raise _fail(
                    where,
                    key,
                    f"makes a {channels}x{height}x{width} map, {values:,} values per image, "
                    f"more than {MAX_VALUES:,}; use fewer channels or a smaller map",
                )
        if tally.values > MAX_TOTAL_VALUES:
            raise _fail(
                where,
                key,
                f"brings the layers' outputs to {tally.values:,} values per image, more than "
                f"{MAX_TOTAL_VALUES:,}; use fewer or narrower layers",
            )
        if tally.params > MAX_PARAMS:
            raise _fail(
                where,
                key,
                f"brings the network to {tally.params:,} parameters, more than {MAX_PARAMS:,}; "
                "use fewer channels or smaller kernels",
            )
    return shape


def check_net(net: Any, where: str = "net") -> list[dict[str, Any]]:
    """The checked layer list of a [net] table, with every default filled in.

    Follows the map shape through the layers: a map that shrinks to nothing or an output that
    is not 10 values is an error naming the layer.
    """
    if not isinstance(net, dict) or not net:
        raise _fail(where, "net", "must be a table with `layers` or `blocks`")
    count = _Count()
    if "layers" in net:
        extra = [k for k in net if k != "layers"]
        if extra:
            raise _fail(where, f"net.{extra[0]}", "cannot stand beside net.layers")
        raw = net["layers"]
        if not isinstance(raw, list) or not raw:
            raise _fail(where, "net.layers", "must be a non-empty list of layer tables")
        if len(raw) > MAX_LAYERS:
            raise _fail(where, "net.layers", f"has {len(raw)} layers, more than {MAX_LAYERS}")
        prefix = "net.layers"
        layers = [
            _check_layer(layer, where, f"{prefix}[{i}]", count) for i, layer in enumerate(raw)
        ]
    else:
        unknown = [k for k in net if k not in FAMILY_KEYS and k not in BLOCK_KEYS]
        if unknown:
            known = ", ".join(("layers", *FAMILY_KEYS, *BLOCK_KEYS))
            raise _fail(where, f"net.{unknown[0]}", f"is not a key of [net]; known keys: {known}")
        layers = [_check_layer(layer, where, "net", count) for layer in family_layers(net, where)]
        prefix = "net (as layers)"
    channels, height, width = _walk(layers, INPUT, where, prefix, _Tally())
    if channels * height * width != NUM_CLASSES:
        raise _fail(
            where,
            prefix,
            f"ends in {channels}x{height}x{width} = {channels * height * width} values, not "
            f"{NUM_CLASSES}; end with a gap layer and a 1x1 conv to {NUM_CLASSES} channels",
        )
    return layers


def _conv(layer: dict[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    channels = shape[0]
    window = {
        "stride": layer["stride"],
        "padding": layer["padding"],
        "dilation": layer["dilation"],
    }
    modules: list[nn.Module] = []
    if layer["bottleneck"]:
        modules.append(nn.Conv2d(channels, layer["bottleneck"], 1, bias=False))
        channels = layer["bottleneck"]
    if layer["kind"] == "separable":
        modules += [
            nn.Conv2d(channels, channels, layer["kernel"], groups=channels, bias=False, **window),
            nn.Conv2d(channels, layer["out"], 1, bias=layer["bias"]),
        ]
    else:
        groups = layer.get("groups", 1)
        modules.append(
            nn.Conv2d(
                channels, layer["out"], layer["kernel"], groups=groups, bias=layer["bias"], **window
            )
        )
    modules += [nn.ReLU()] if layer["relu"] else []
    modules += [nn.BatchNorm2d(layer["out"])] if layer["bn"] else []
    modules += [nn.Dropout(layer["dropout"])] if layer["dropout"] else []
    # A conv with ReLU/BatchNorm is one block (as compact.conv_block builds it), a bare conv
    # one layer: a registered network's weights load into its data twin.
    module = nn.Sequential(*modules) if len(modules) > 1 else modules[0]
    return module, _conv_maps(layer, shape)[-1]


def _pool(pool: type[nn.Module]) -> Callable[[dict[str, Any], Shape], tuple[nn.Module, Shape]]:
    def build(layer: dict[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
        size = (layer["kernel"], layer["stride"], layer["padding"])
        c, h, w = shape
        return pool(*size), (c, _window(h, *size), _window(w, *size))

    return build


def _se(layer: dict[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    return SqueezeExcite(shape[0], _se_hidden(layer, shape[0])), shape


def _residual(layer: dict[str, Any], shape: Shape) -> tuple[nn.Module, Shape]:
    body, out = _chain(layer["layers"], shape)
    shortcut = None
    if out != shape:  # check_net made sure a 1x1 conv can reach the body's shape
        stride = tuple(shortcut_stride(n, m) for n, m in zip(shape[1:], out[1:], strict=True))
        shortcut = nn.Conv2d(shape[0], out[0], 1, stride=stride)
    return Residual(nn.Sequential(*body), shortcut), out


# Each layer type's builder: (layer, input shape) -> (module, output shape).
BUILDERS: dict[str, Callable[[dict[str, Any], Shape], tuple[nn.Module, Shape]]] = {
    "conv": _conv,
    "maxpool": _pool(nn.MaxPool2d),
    "avgpool": _pool(nn.AvgPool2d),
    "relu": lambda layer, shape: (nn.ReLU(), shape),
    "bn": lambda layer, shape: (nn.BatchNorm2d(shape[0]), shape),
    "dropout": lambda layer, shape: (nn.Dropout(layer["p"]), shape),
    "gap": lambda layer, shape: (nn.AdaptiveAvgPool2d(1), (shape[0], 1, 1)),
    "se": _se,
    "residual": _residual,
}


def _chain(layers: list[dict[str, Any]], shape: Shape) -> tuple[list[nn.Module], Shape]:
    modules = []
    for layer in layers:
        module, shape = BUILDERS[layer["type"]](layer, shape)
        modules.append(module)
    return modules, shape


def _build(net: dict[str, Any], where: str = "net") -> nn.Module:
    """The network a [net] table describes, built layer by layer in order (models.build is
    the public way)."""
    modules, _ = _chain(check_net(net, where), INPUT)
    return Chain(*modules)
