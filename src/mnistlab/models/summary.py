"""Per-layer summary of a model: output shapes, parameters, receptive field, jump and MACs.

One forward pass of a zero batch (batch size 1, eval mode, no grad) with hooks on the leaf
modules records each leaf layer in execution order, as torchsummary does. The receptive field
(RF) follows the graph, not that order: every tensor of the pass carries what its units see
(a Field), set by the hooks for a leaf layer's output from its input's, and by a
TorchFunctionMode for what operations in forward() make (x + y, F.relu, flatten, view, cat
along channels, mean over the map). Where paths join (a residual sum, Add, Mul, cat) each unit
sees what the units at its place on every path see: the box around them, so the largest path
wins. An operation it does not follow (F.max_pool2d, F.interpolate, slicing) makes what it
returns unknown, and every row that reads it gets a mark rather than a guess.

Receptive field arithmetic (A. Dang-Ha The Hien, "A guide to receptive field arithmetic"),
generalised so that it stays exact for every layer it accepts: along one axis, unit i of a map
(any integer; units past the edges stand for padding) sees the input pixels [lo, hi) of
spans[i % P], moved by (i // P) * shift. The input starts as P = 1, spans [(0, 1)], shift 1.
A convolution or pooling window (kernel k, stride s, padding p, dilation d) makes unit u the
union of input units u*s - p + d*m, m < k; for an ordinary chain P stays 1 and this is

    jump_out = jump_in * s,  rf_out = rf_in + d*(k-1) * jump_in,
    start_out = start_in + (d*(k-1)/2 - p) * jump_in

from rf 1, jump 1, start 0.5 (the centre of the first pixel). A transposed convolution of
stride s gives s output units per input unit: P grows by s, and its units may differ in RF
(kernel 3, stride 2: every other unit sees one input unit fewer) or in spacing. The columns
report the RF (largest and smallest when units differ), the jump (mean spacing of RF centres,
"~" when uneven) and the start (centre of unit 0's RF). RFs count padding as pixels, so a
padded network's RF can exceed its input.

Global pooling (adaptive pooling to 1x1, a mean over the map, or a Linear layer on a flattened
map) sees the whole last map: its RF is the union of that map's units, and its jump stays the
last map's, marked global. Every layer after it sees the whole input too; so does a map
multiplied by such a value (squeeze-and-excitation's gate): its RF is that of the gate, and
its jump still follows the map through later layers, up to its own global pool.

Height and width are followed apart: where they differ (a 3x1 kernel), the columns show
"3x1", and only the `axes` of a row (and `rf_hw`, `jump_hw` of the summary) hold the numbers.
"""

import functools
import html
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mnistlab.errors import MnistlabError
from mnistlab.models.layers import Add, Mul

BYTES_PER_VALUE = 4  # float32, as torchsummary assumes
MB = 1024**2


# ----------------------------------------------------------------------------- RF arithmetic


@dataclass(frozen=True)
class Axis:
    """Which input pixels each unit of a map sees along one axis (see the module docstring)."""

    spans: tuple[tuple[int, int], ...] = ((0, 1),)
    shift: int = 1

    def span(self, unit: int) -> tuple[int, int]:
        lo, hi = self.spans[unit % len(self.spans)]
        moved = unit // len(self.spans) * self.shift
        return lo + moved, hi + moved


def _union(spans: list[tuple[int, int]]) -> tuple[int, int]:
    return min(lo for lo, _ in spans), max(hi for _, hi in spans)


def window_axis(axis: Axis, kernel: int, stride: int, padding: int, dilation: int) -> Axis:
    """The axis after a convolution or pooling window: unit u reads units u*s - p + d*m."""
    period = len(axis.spans) // math.gcd(len(axis.spans), stride)
    spans = tuple(
        _union([axis.span(u * stride - padding + dilation * m) for m in range(kernel)])
        for u in range(period)
    )
    return Axis(spans, axis.shift * period * stride // len(axis.spans))


def transposed_axis(
    axis: Axis, kernel: int, stride: int, padding: int, dilation: int
) -> Axis | None:
    """The axis after a transposed convolution, or None if some output unit reads no input.

    Output unit u sits at u + p in the unpadded output, where input unit i lands its kernel tap
    m when i*s + d*m = u + p; so u reads every i = (u + p - d*m) / s that is a whole number.
    """
    period = len(axis.spans) * stride  # s outputs per input unit; P input units repeat
    spans = []
    for u in range(period):
        reads = [
            (u + padding - dilation * m) // stride
            for m in range(kernel)
            if (u + padding - dilation * m) % stride == 0
        ]
        if not reads:
            return None
        spans.append(_union([axis.span(i) for i in reads]))
    return Axis(tuple(spans), axis.shift)


def whole_axis(axis: Axis, size: int) -> Axis:
    """The axis of one unit that pools all `size` units of the map: a global pool."""
    return Axis((_union([axis.span(i) for i in range(size)]),), axis.shift)


@dataclass(frozen=True)
class AxisStats:
    rf: int  # largest RF of a unit
    rf_min: int  # smallest; equal to rf unless units differ
    jump: int | float  # mean distance between neighbouring units' RF centres
    uneven: bool  # True when those distances differ
    start: float  # centre of unit 0's RF


def axis_stats(axis: Axis) -> AxisStats:
    sizes = [hi - lo for lo, hi in axis.spans]
    period = len(axis.spans)
    doubled_centres = [lo + hi for lo, hi in axis.spans]  # whole numbers, compared exactly
    uneven = any(
        (c - doubled_centres[0]) * period != 2 * u * axis.shift
        for u, c in enumerate(doubled_centres)
    )
    jump = axis.shift // period if axis.shift % period == 0 else axis.shift / period
    return AxisStats(max(sizes), min(sizes), jump, uneven, doubled_centres[0] / 2)


# ----------------------------------------------------------------------------- layer rules
# Each rule takes the module, the axis (0 height, 1 width), the state of that axis and the
# layer's input map size along it, and returns the new state, or a string saying why the RF
# is unknown past it. The registries are looked up along the module's class hierarchy.

Rule = Callable[[nn.Module, int, Axis, int], Axis | str]


def _pick(value: int | tuple[int, ...], axis: int) -> int:
    """One axis of a size that torch stores as an int or an (H, W) tuple."""
    return value[axis] if isinstance(value, tuple) else value


def conv_padding(module: nn.Conv2d, axis: int) -> int:
    """Padding before the first pixel; for 'same', torch puts the odd pixel after the last."""
    if module.padding == "valid":
        return 0
    if module.padding == "same":
        return _pick(module.dilation, axis) * (_pick(module.kernel_size, axis) - 1) // 2
    return _pick(module.padding, axis)


def _conv_rule(module: nn.Module, axis: int, state: Axis, size: int) -> Axis | str:
    if module.padding_mode == "circular":
        return "circular padding wraps the far edge into its first units"
    return window_axis(
        state,
        _pick(module.kernel_size, axis),
        _pick(module.stride, axis),
        conv_padding(module, axis),
        _pick(module.dilation, axis),
    )


def _pool_rule(module: nn.Module, axis: int, state: Axis, size: int) -> Axis | str:
    # ceil_mode only adds a last window that runs past the map: the windows stay the same.
    return window_axis(
        state,
        _pick(module.kernel_size, axis),
        _pick(module.stride, axis),
        _pick(module.padding, axis),
        _pick(getattr(module, "dilation", 1), axis),  # AvgPool2d has no dilation
    )


def _transposed_rule(module: nn.Module, axis: int, state: Axis, size: int) -> Axis | str:
    result = transposed_axis(
        state,
        _pick(module.kernel_size, axis),
        _pick(module.stride, axis),
        _pick(module.padding, axis),
        _pick(module.dilation, axis),
    )
    return result if result is not None else "some of its outputs read no input"


def _adaptive_rule(module: nn.Module, axis: int, state: Axis, size: int) -> Axis | str:
    out = _pick(module.output_size, axis) or size  # None keeps the input size
    if out == 1:
        return whole_axis(state, size)
    if size % out:
        return f"its windows differ in size ({size} px pooled to {out})"
    return window_axis(state, size // out, size // out, 0, 1)


def _keep(module: nn.Module, axis: int, state: Axis, size: int) -> Axis | str:
    return state


RULES: dict[type, Rule] = {
    nn.Conv2d: _conv_rule,
    nn.ConvTranspose2d: _transposed_rule,
    nn.MaxPool2d: _pool_rule,
    nn.AvgPool2d: _pool_rule,
    nn.AdaptiveAvgPool2d: _adaptive_rule,
    nn.AdaptiveMaxPool2d: _adaptive_rule,
}
# Layers that act on each value (or each pixel's channels) alone keep the RF. Normalisations
# with statistics over the map (GroupNorm, InstanceNorm, LayerNorm) are left out on purpose.
for _type in (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.BatchNorm2d, nn.Flatten,
):  # fmt: skip
    RULES[_type] = _keep


def find_rule(module: nn.Module) -> Rule | None:
    return next((RULES[t] for t in type(module).__mro__ if t in RULES), None)


# ----------------------------------------------------------------------------- the graph


@dataclass
class Layer:
    name: str  # "Conv2d-1": type name and position among all leaf layers, from 1
    path: str  # where the module sits in the model, e.g. "convblock1.0"
    output_shape: list[int]  # [-1, C, H, W]; -1 stands for the batch
    params: int
    trainable_params: int
    rf: int | None  # RF in input pixels (the largest, if units differ); None once unknown
    jump: int | float | None  # input pixels between neighbouring units; global: the last map's
    start: float | None  # centre of the first unit's RF, in input pixel coordinates
    macs: int
    rf_min: int | None = None  # the smallest RF of a unit; equal to rf unless units differ
    uneven: bool = False  # neighbouring units are unevenly spaced; jump is the mean
    is_global: bool = False  # every unit sees the whole input (after a global pool)
    # Height's and width's numbers whenever the RF is known; rf, rf_min, jump and start
    # above are set only when the two agree (a 3x1 kernel makes them differ).
    axes: list[AxisStats] | None = None


# Leaf layers that join two tensors elementwise: each unit sees what both inputs' units at
# its place see (broadcasting a 1x1 gate that sees the whole input makes every unit global).
JOINS: tuple[type, ...] = (Add, Mul)


@dataclass(frozen=True)
class Field:
    """What each unit of one tensor sees: the RF state that flows along the graph."""

    axes: tuple[Axis, Axis] = (Axis(), Axis())
    sizes: tuple[int, int] = (1, 1)  # its map's height and width (a flattened map's too)
    # Once every unit sees the whole input: per axis, (jump, uneven) of the map it pooled.
    global_jump: tuple[tuple[int | float, bool], ...] | None = None
    # A map that sees the whole input through a gate (squeeze-and-excitation) is still a map:
    # what its units see along the map alone, followed so that its jump stays the map's.
    local: tuple[Axis, Axis] | None = None
    unknown: str | None = None  # why the RF is unknown (then every other field is moot)

    def stats(self) -> tuple[AxisStats, AxisStats] | None:
        """Height's and width's numbers; None when unknown."""
        if self.unknown is not None:
            return None
        height, width = (axis_stats(a) for a in self.axes)
        if self.global_jump is None:
            return height, width
        (jh, uh), (jw, uw) = self.global_jump
        return replace(height, jump=jh, uneven=uh), replace(width, jump=jw, uneven=uw)


def _unknown(why: str) -> Field:
    return Field(unknown=why)


def _go_global(field: Field, axes: tuple[Axis, ...] | list[Axis]) -> Field:
    jumps = tuple((s.jump, s.uneven) for s in map(axis_stats, field.axes))
    return replace(field, axes=(axes[0], axes[1]), global_jump=jumps)


def _whole(field: Field) -> tuple[Axis, Axis]:
    return tuple(whole_axis(a, n) for a, n in zip(field.axes, field.sizes, strict=True))


def _covers(new: Axis, whole: Axis) -> bool:
    lo, hi = new.span(0)
    whole_lo, whole_hi = whole.span(0)
    return lo <= whole_lo and hi >= whole_hi


def after_layer(field: Field, module: nn.Module, in_shape: tuple, out_shape: tuple) -> Field:
    """The field of a one-input layer's output, from its input's."""
    if field.unknown is not None:
        return field
    if field.global_jump is not None:
        if field.local is not None:  # every unit sees the whole input; its map goes on
            field = _along_map(field, module, in_shape, out_shape)
    elif isinstance(module, nn.Linear):
        if len(in_shape) != 2:
            return _unknown("it mixes values along one axis of a map")
        field = _go_global(field, _whole(field))  # on a flattened map: each output sees all
    else:
        field = _spatial(field, module, in_shape, out_shape)
        if field.unknown is not None:
            return field
    if len(out_shape) == 4:
        field = replace(field, sizes=(out_shape[2], out_shape[3]))
    return field


def _along_map(field: Field, module: nn.Module, in_shape: tuple, out_shape: tuple) -> Field:
    """A gated global map after a layer: its jump follows the map until a global pool (or a
    layer that is not followed) ends the map, as after any global pool."""
    assert field.local is not None
    shadow = Field(axes=field.local, sizes=field.sizes)
    if not isinstance(module, nn.Linear):
        shadow = _spatial(shadow, module, in_shape, out_shape)
    if shadow.unknown is not None or isinstance(module, nn.Linear):
        return replace(field, local=None)
    if shadow.global_jump is not None:
        return replace(field, local=None, global_jump=shadow.global_jump)
    jumps = tuple((s.jump, s.uneven) for s in map(axis_stats, shadow.axes))
    return replace(field, local=shadow.axes, global_jump=jumps)


def _spatial(field: Field, module: nn.Module, in_shape: tuple, out_shape: tuple) -> Field:
    rule = find_rule(module)
    if rule is None:
        return _unknown("this tool does not know how it changes the receptive field")
    if rule is _keep:
        return field
    if len(in_shape) != 4:
        return _unknown(f"its input has shape {list(in_shape)}, not N,C,H,W")
    sizes = (in_shape[2], in_shape[3])
    new = [rule(module, a, field.axes[a], sizes[a]) for a in (0, 1)]
    reason = next((r for r in new if isinstance(r, str)), None)
    if reason is not None:
        return _unknown(reason)
    axes = [a for a in new if isinstance(a, Axis)]
    wholes = [whole_axis(a, n) for a, n in zip(field.axes, sizes, strict=True)]
    if out_shape[2:] == (1, 1) and all(map(_covers, axes, wholes)):
        return _go_global(field, axes)
    return replace(field, axes=(axes[0], axes[1]))


def _join_axes(a: Axis, b: Axis) -> Axis | None:
    """Unit u sees what unit u of both sees (the box around both); None when their units are
    spaced differently, so that no period describes the sum."""
    pa, pb = len(a.spans), len(b.spans)
    if a.shift * pb != b.shift * pa:
        return None
    period = math.lcm(pa, pb)
    spans = tuple(_union([a.span(u), b.span(u)]) for u in range(period))
    return Axis(spans, a.shift * period // pa)


def join(inputs: list[tuple[Field, tuple[int, ...]]], out_shape: tuple[int, ...]) -> Field:
    """The field of an elementwise join (a sum, a product, a channel concatenation) of
    tensors with these fields and shapes, broadcast to `out_shape`: the largest path wins."""
    unknown = next((f for f, _ in inputs if f.unknown is not None), None)
    if unknown is not None:
        return unknown
    local: list[Field] = []
    whole: list[Field] = []
    for field, shape in inputs:
        if field.global_jump is not None:
            whole.append(field)
        elif len(shape) == len(out_shape) and shape[2:] == out_shape[2:]:
            local.append(field)
        else:
            return _unknown("it spreads a map that does not see the whole input over a larger one")
    if local:
        sizes = {f.sizes for f in local}
        if len(sizes) > 1:
            return _unknown("it joins maps of different sizes")
        axes = list(local[0].axes)
        for field in local[1:]:
            joined = [_join_axes(a, b) for a, b in zip(axes, field.axes, strict=True)]
            if None in joined:
                return _unknown("it joins maps whose units are spaced differently")
            axes = [a for a in joined if a is not None]
        field = replace(local[0], axes=(axes[0], axes[1]))
        if not whole:
            return field
        # A gate that sees the whole input (squeeze-and-excitation): every unit sees all of it,
        # if the gate sees at least what the map's units see together.
        gate = _hull(whole)
        if not all(map(_covers, gate, _whole(field))):
            return _unknown("it joins a map to a pooled value of another part of the input")
        return replace(_go_global(field, gate), local=field.axes)
    return replace(whole[0], axes=_hull(whole))


def _hull(fields: list[Field]) -> tuple[Axis, Axis]:
    """The box around what global fields see (one span an axis)."""
    height, width = (
        Axis((_union([f.axes[a].span(0) for f in fields]),), fields[0].axes[a].shift)
        for a in (0, 1)
    )
    return height, width


# Operations in forward() the fields follow (in-place variants, add_ and the like, too):
# elementwise ones join their tensor inputs; reshapes that flatten a map keep its field.
ELEMENTWISE = frozenset((
    "add", "sub", "subtract", "rsub", "mul", "multiply", "div", "divide", "true_divide", "neg",
    "negative", "abs", "pow", "square", "sqrt", "rsqrt", "exp", "log", "clamp", "clip",
    "maximum", "minimum", "where", "lerp", "addcmul", "addcdiv", "relu", "relu6", "leaky_relu",
    "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh",
    "softplus", "sigmoid", "tanh", "logsigmoid", "threshold", "prelu", "dropout", "dropout1d",
    "dropout2d", "alpha_dropout", "feature_alpha_dropout", "batch_norm", "contiguous", "clone",
    "detach", "to", "float", "double", "half", "bfloat16", "__add__", "__radd__", "__iadd__",
    "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__",
    "__rtruediv__", "__itruediv__", "__neg__", "__pos__", "__abs__", "__pow__", "__rpow__",
))  # fmt: skip
RESHAPES = frozenset(("flatten", "view", "reshape", "view_as", "reshape_as", "squeeze"))
CONCATS = frozenset(("cat", "concat", "concatenate"))


def _op_name(func: Callable) -> str:
    name = getattr(func, "__name__", "") or repr(func)
    if name.endswith("_") and not name.endswith("__"):  # add_ is add, in place
        name = name[:-1]
    return name.lstrip("_") if not name.startswith("__") else name


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> object:
    return kwargs[name] if name in kwargs else args[index] if len(args) > index else None


def after_op(
    func: Callable,
    args: tuple,
    kwargs: dict,
    inputs: list[tuple[Field, tuple[int, ...]]],
    out: torch.Tensor,
) -> Field:
    """The field of what an operation in forward() returns, from its traced inputs'."""
    name, out_shape = _op_name(func), tuple(out.shape)
    if all(f.global_jump is not None for f, _ in inputs):
        return join(inputs, ())  # made from global inputs alone: every unit sees it all
    if name in ELEMENTWISE:
        return join(inputs, out_shape)
    if name in CONCATS:
        dim = _argument(args, kwargs, 1, "dim") or 0
        if len(out_shape) == 4 and isinstance(dim, int) and dim % 4 == 1:
            return join(inputs, out_shape)  # along channels: the maps line up
    if name in RESHAPES and len(inputs) == 1:
        field, shape = inputs[0]
        flattened = (
            len(shape) == 4 and len(out_shape) == 2 and out_shape[0] == shape[0]
        ) and math.prod(out_shape) == math.prod(shape)
        if out_shape == shape or flattened:
            return field
    if name in ("mean", "sum", "amax", "amin") and len(inputs) == 1:
        field, shape = inputs[0]
        dims = _argument(args, kwargs, 1, "dim")
        dims = {dims} if isinstance(dims, int) else set(dims or ())
        if len(shape) == 4 and {d % 4 for d in dims} in ({2, 3}, {1, 2, 3}):
            return _go_global(field, _whole(replace(field, sizes=(shape[2], shape[3]))))
    reason = next((f.unknown for f, _ in inputs if f.unknown is not None), None)
    return _unknown(reason or f"it reads {name}() in forward(), which this tool does not follow")


@dataclass
class Call:
    """One leaf module call seen by the hooks."""

    path: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    field: Field  # what each unit of its output sees


class _Trace(TorchFunctionMode):
    """The field of every tensor of one forward pass: leaf layers' outputs (set by the hooks)
    and what operations in forward() make of them (set here). Operations inside a leaf layer
    are its own business: the hooks mark them with `inside`."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, Field]] = {}  # the tensor kept: ids stay
        self.inside = 0

    def field(self, tensor: object) -> Field | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None else None

    def set(self, tensor: torch.Tensor, field: Field) -> None:
        self.fields[id(tensor)] = (tensor, field)

    def traced(self, args: tuple, kwargs: dict) -> list[tuple[Field, tuple[int, ...]]]:
        tensors = [*args, *kwargs.values()]
        tensors += [t for a in tensors if isinstance(a, list | tuple) for t in a]
        found = []
        for tensor in tensors:
            field = self.field(tensor)
            if field is not None and isinstance(tensor, torch.Tensor):
                found.append((field, tuple(tensor.shape)))
        return found

    def __torch_function__(
        self, func: Callable, types: object, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside:
            return out
        inputs = self.traced(args, kwargs)
        if inputs:
            if isinstance(out, torch.Tensor):
                self.set(out, after_op(func, args, kwargs, inputs, out))
            elif isinstance(out, list | tuple):  # split, chunk, max with indices: not followed
                why = f"it reads {_op_name(func)}() in forward(), which this tool does not follow"
                for item in out:
                    if isinstance(item, torch.Tensor):
                        self.set(item, _unknown(why))
        return out


def _record_leaf_calls(model: nn.Module, x: torch.Tensor) -> list[Call]:
    """Every leaf module call of one forward pass, in execution order, with its output's
    field traced from the input through every path."""
    calls: list[Call] = []
    trace = _Trace()
    trace.set(x, Field(sizes=(x.shape[2], x.shape[3]) if x.dim() == 4 else (1, 1)))
    handles = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        trace.inside += 1

    def hook(module: nn.Module, args: tuple, output: object, path: str = "") -> None:
        inp = args[0] if args else None
        in_shape = tuple(inp.shape) if isinstance(inp, torch.Tensor) else ()
        out_shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        inputs = trace.traced(args, {})
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if isinstance(module, JOINS) and len(inputs) == len(tensors):
            field = join(inputs, out_shape)
        elif not isinstance(module, JOINS) and trace.field(inp) is not None:
            field = after_layer(trace.field(inp), module, in_shape, out_shape)
        else:  # e.g. a constant, or a tensor this tool did not see made
            field = _unknown("its input does not come from the model's input through layers")
        if isinstance(output, torch.Tensor):
            trace.set(output, field)
        calls.append(Call(path, module, in_shape, out_shape, field))
        trace.inside -= 1

    for path, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(functools.partial(hook, path=path)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), trace:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def layer_macs(module: nn.Module, in_elements: int, out_elements: int) -> int:
    """Multiply-accumulates of one call: convolutions, linear layers and products only, bias
    not counted.

    Conv2d: output elements * (in_channels / groups) * kH * kW (a depthwise conv: k*k*C*H*W).
    ConvTranspose2d scatters each input element: input elements * (out_channels / groups) *
    kH * kW. Linear: output elements * in_features. Mul (a gate times a map): one per output
    element. Batch norm, activations, pooling and sums count 0.
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out_elements * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return in_elements * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out_elements * module.in_features
    if isinstance(module, Mul):
        return out_elements
    return 0


@dataclass
class Summary:
    input_shape: list[int]
    layers: list[Layer]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    input_mb: float
    forward_backward_mb: float
    params_mb: float
    total_mb: float
    macs: int
    rf: int | None  # of the last layer; None when unknown (or height's and width's differ)
    jump: int | float | None  # of the last layer; after a global pool, of the last map
    is_global: bool = False  # the last layer sees the whole input
    rf_note: str | None = None  # "RF unknown past layer N: ..." when the RF column ends early
    rf_hw: list[int] | None = None  # the last layer's RF along height and width
    jump_hw: list[int | float] | None = None  # and its jump

    @property
    def rows(self) -> list[dict]:
        """One dict per leaf layer, as in to_dict()."""
        return [asdict(layer) for layer in self.layers]

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return format_table(self)

    def _repr_html_(self) -> str:
        return format_html(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's text form: the table
        printer.text(format_table(self))


def summarize(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> Summary:
    """Run one zero batch of shape (1, *input_shape) through `model` and describe each leaf layer.

    The model's train/eval mode is restored afterwards. Totals follow torchsummary: sizes in MB
    assume float32; the forward/backward size is the sum of all layer output elements, times two
    (values and gradients). Parameter totals count each parameter of the model once.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
    calls = _record_leaf_calls(model, x)

    layers = []
    rf_note = None
    for index, call in enumerate(calls, start=1):
        name = f"{type(call.module).__name__}-{index}"
        axes = call.field.stats()
        if axes is None and rf_note is None:
            rf_note = f"RF unknown past layer {index - 1}: {name} ({call.field.unknown})"
        same = axes[0] if axes is not None and axes[0] == axes[1] else None
        layers.append(
            Layer(
                name=name,
                path=call.path,
                output_shape=[-1, *call.out_shape[1:]],
                params=sum(p.numel() for p in call.module.parameters()),
                trainable_params=sum(
                    p.numel() for p in call.module.parameters() if p.requires_grad
                ),
                rf=same.rf if same else None,
                jump=same.jump if same else None,
                start=same.start if same else None,
                macs=layer_macs(call.module, math.prod(call.in_shape), math.prod(call.out_shape)),
                rf_min=same.rf_min if same else None,
                uneven=any(a.uneven for a in axes) if axes else False,
                is_global=axes is not None and call.field.global_jump is not None,
                axes=list(axes) if axes is not None else None,
            )
        )

    total_params = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    output_values = sum(math.prod(layer.output_shape[1:]) for layer in layers)
    input_mb = math.prod(input_shape) * BYTES_PER_VALUE / MB
    forward_backward_mb = 2 * output_values * BYTES_PER_VALUE / MB
    params_mb = total_params * BYTES_PER_VALUE / MB
    last = layers[-1] if layers else None
    last_axes = last.axes if last else [AxisStats(1, 1, 1, False, 0.5)] * 2
    return Summary(
        input_shape=list(input_shape),
        layers=layers,
        total_params=total_params,
        trainable_params=trainable,
        non_trainable_params=total_params - trainable,
        input_mb=input_mb,
        forward_backward_mb=forward_backward_mb,
        params_mb=params_mb,
        total_mb=input_mb + forward_backward_mb + params_mb,
        macs=sum(layer.macs for layer in layers),
        rf=last.rf if last else 1,
        jump=last.jump if last else 1,
        is_global=bool(last and last.is_global),
        rf_note=rf_note,
        rf_hw=[a.rf for a in last_axes] if last_axes else None,
        jump_hw=[a.jump for a in last_axes] if last_axes else None,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_stats(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> dict:
    """{"params", "macs", "rf", "jump"} of `model`: the numbers a run records in run.json."""
    s = summarize(model, input_shape)
    return {"params": s.total_params, "macs": s.macs, "rf": s.rf, "jump": s.jump}


def has_linear(model: nn.Module) -> bool:
    """True if the model has any fully connected (nn.Linear) layer."""
    return any(isinstance(m, nn.Linear) for m in model.modules())


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse an input shape such as "1,28,28" (C,H,W)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise MnistlabError(
            f"--input {text!r}: expected three positive integers C,H,W; e.g. --input 1,28,28"
        )
    return shape


# ----------------------------------------------------------------------------- formatting

HEADER = ["Layer (type)", "Output Shape", "Param #", "RF", "Jump", "Start", "MACs"]


def _axis_cells(axis: AxisStats) -> list[str]:
    rf = str(axis.rf) if axis.rf_min == axis.rf else f"{axis.rf_min}-{axis.rf}"
    return [rf, f"{'~' if axis.uneven else ''}{axis.jump:g}", f"{axis.start:g}"]


def _rf_cells(layer: Layer) -> list[str]:
    """RF, Jump and Start as printed: "2-3" for RFs that differ, "~0.5" for uneven spacing,
    "3x1" for height and width that differ."""
    if layer.axes is None:
        return ["?", "?", "?"]
    height, width = (_axis_cells(a) for a in layer.axes)
    cells = [h if h == w else f"{h}x{w}" for h, w in zip(height, width, strict=True)]
    if layer.is_global:
        cells[0] += " global"
    return cells


def _cells(layer: Layer) -> list[str]:
    return [
        layer.name,
        str(layer.output_shape),
        f"{layer.params:,}",
        *_rf_cells(layer),
        f"{layer.macs:,}",
    ]


def _rf_line(s: Summary) -> str:
    if s.rf is None and (s.rf_hw is None or s.jump_hw is None):
        return f"Receptive field: unknown; {s.rf_note}"
    if s.rf is None:  # height and width differ
        rf = "x".join(map(str, s.rf_hw or []))
        jump = "x".join(f"{j:g}" for j in s.jump_hw or [])
    else:
        rf, jump = str(s.rf), f"{s.jump:g}"
    if s.is_global:
        return f"Receptive field: {rf}, global (the whole input)  jump: {jump} (last map)"
    return f"Receptive field: {rf}  jump: {jump}"


def _notes(s: Summary) -> list[str]:
    notes = []
    axes = [a for layer in s.layers for a in layer.axes or []]
    if any(a.rf != a.rf_min for a in axes):
        notes.append("RF a-b: units of that layer see from a to b input pixels")
    if any(a.uneven for a in axes):
        notes.append("Jump ~j: units are unevenly spaced, j pixels apart on average")
    if any(a != b for layer in s.layers for a, b in [layer.axes or [None, None]]):
        notes.append("hxw: height, then width, where the two differ")
    if s.rf_note and s.rf_hw is not None:  # the note already ends the RF line when the last is ?
        notes.append(s.rf_note)
    return notes


def format_table(s: Summary) -> str:
    """The summary as a torchsummary-style text table with RF, Jump, Start and MACs columns."""
    rows = [_cells(layer) for layer in s.layers]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    rule_width = len(line(HEADER))
    out = ["-" * rule_width, line(HEADER), "=" * rule_width]
    out += [line(row) for row in rows]
    out += [
        "=" * rule_width,
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        "-" * rule_width,
        f"Input size (MB): {s.input_mb:.2f}",
        f"Forward/backward pass size (MB): {s.forward_backward_mb:.2f}",
        f"Params size (MB): {s.params_mb:.2f}",
        f"Estimated Total Size (MB): {s.total_mb:.2f}",
        "-" * rule_width,
        f"Total MACs: {s.macs:,}",
        _rf_line(s),
        *_notes(s),
        "-" * rule_width,
    ]
    return "\n".join(out)


def format_html(s: Summary) -> str:
    """The summary as an HTML table, for Jupyter."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(layer)) + "</tr>"
        for layer in s.layers
    )
    foot = [
        f"Total params: {s.total_params:,} (trainable {s.trainable_params:,})",
        f"Total MACs: {s.macs:,}",
        _rf_line(s),
        *_notes(s),
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" + "".join(
        f"<p>{html.escape(line)}</p>" for line in foot
    )


def summarize_checked(
    model: nn.Module,
    input_shape: tuple[int, ...],
    name: str,
    user: bool = True,
    option: str = "--input",
    fix: str | None = None,
) -> Summary:
    """summarize(), a failing forward() of a user's model becoming a one-line error naming
    `name` and `fix` (default: another shape, given by `option`; the traceback stays on the
    error's __cause__)."""
    # A user's forward() failing is their input; a registered model failing on anything but
    # a shape mismatch (a RuntimeError) is a bug here and keeps its traceback.
    expected = Exception if user else RuntimeError
    try:
        return summarize(model, input_shape)
    except expected as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        fix = fix or f"pass a shape it was built for with {option}, or fix its forward()"
        raise MnistlabError(
            f"model {name!r} fails on input shape {','.join(map(str, input_shape))} "
            f"({reason}); {fix}"
        ) from e
