"""Per-layer summary of a model: output shapes, parameters, receptive field, jump and MACs.

One forward pass of a zero batch (batch size 1, eval mode, no grad) with hooks on the leaf
modules records each leaf layer in execution order, as torchsummary does. The receptive field
(RF) walk then follows that order, which is right for chains of layers; when a layer's input is
not the previous layer's output, unchanged (a branch, a residual sum, a call such as F.relu in
forward()), the RF column ends there with a mark rather than a guess.

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

Global pooling (adaptive pooling to 1x1, or a Linear layer on a flattened map) sees the whole
last map: its RF is the union of that map's units, and its jump stays the last map's, marked
global. Every layer after it sees the whole input too.
"""

import html
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mnistlab.errors import MnistlabError

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


# ----------------------------------------------------------------------------- the walk


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


@dataclass
class Call:
    """One leaf module call seen by the hooks."""

    path: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    chained: bool  # its input is the previous call's output (or the model's input), unchanged


def _same_values(tensor: object, prev: object, version: int) -> bool:
    """True if `tensor` is `prev`, or `prev` flattened to (N, -1), neither changed in place."""
    if not isinstance(tensor, torch.Tensor) or not isinstance(prev, torch.Tensor):
        return False
    if tensor._version != version:  # e.g. `out += identity` between two layers
        return False
    if tensor is prev:
        return True
    return (  # x.view(N, -1) or x.flatten(1) in forward(): a flatten, no new values
        tensor.dim() == 2
        and prev.dim() == 4
        and tensor.is_contiguous()
        and prev.is_contiguous()
        and tensor.data_ptr() == prev.data_ptr()
        and tensor.numel() == prev.numel()
    )


def _record_leaf_calls(model: nn.Module, x: torch.Tensor) -> list[Call]:
    """Every leaf module call of one forward pass, in execution order."""
    calls: list[Call] = []
    last = {"out": x, "version": x._version, "chained": False}
    handles = []

    def pre_hook(module, args):
        # Checked before the module runs: an in-place ReLU bumps its input's version.
        last["chained"] = bool(args) and _same_values(args[0], last["out"], last["version"])

    for path, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(module, args, output, path=path):
            inp = args[0] if args else None
            is_tensor = isinstance(output, torch.Tensor)
            calls.append(
                Call(
                    path,
                    module,
                    tuple(inp.shape) if isinstance(inp, torch.Tensor) else (),
                    tuple(output.shape) if is_tensor else (),
                    last["chained"],
                )
            )
            last["out"], last["version"] = output, output._version if is_tensor else -1

        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return calls


def layer_macs(module: nn.Module, in_elements: int, out_elements: int) -> int:
    """Multiply-accumulates of one call: convolutions and linear layers only, bias not counted.

    Conv2d: output elements * (in_channels / groups) * kH * kW. ConvTranspose2d scatters each
    input element: input elements * (out_channels / groups) * kH * kW. Linear: output elements
    * in_features. Batch norm, activations and pooling count 0.
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out_elements * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return in_elements * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out_elements * module.in_features
    return 0


def _covers(new: Axis, whole: Axis) -> bool:
    lo, hi = new.span(0)
    whole_lo, whole_hi = whole.span(0)
    return lo <= whole_lo and hi >= whole_hi


@dataclass
class _Walk:
    """The RF state between layers."""

    axes: tuple[Axis, Axis] = (Axis(), Axis())
    sizes: tuple[int, int] = (1, 1)  # the last map's height and width
    global_jump: tuple[int | float, bool] | None = None  # (jump, uneven) of the last map
    unknown: str | None = None  # why the RF is unknown from here on

    def step(self, call: Call) -> None:
        if self.unknown is not None:
            return
        if not call.chained:
            self.unknown = "its input is not the previous layer's output (a branch, or code in "
            self.unknown += "forward() between them)"
        elif self.global_jump is not None:
            pass  # every unit already sees the whole input
        elif isinstance(call.module, nn.Linear):
            if len(call.in_shape) != 2:
                self.unknown = "it mixes values along one axis of a map"
            else:  # on a flattened map: each output sees all of it
                self._go_global(
                    tuple(whole_axis(a, n) for a, n in zip(self.axes, self.sizes, strict=True))
                )
        else:
            self._spatial(call)
        if len(call.out_shape) == 4:
            self.sizes = (call.out_shape[2], call.out_shape[3])

    def _spatial(self, call: Call) -> None:
        rule = find_rule(call.module)
        if rule is None:
            self.unknown = "this tool does not know how it changes the receptive field"
            return
        if rule is _keep:
            return
        if len(call.in_shape) != 4:
            self.unknown = f"its input has shape {list(call.in_shape)}, not N,C,H,W"
            return
        sizes = (call.in_shape[2], call.in_shape[3])
        new = [rule(call.module, a, self.axes[a], sizes[a]) for a in (0, 1)]
        reason = next((r for r in new if isinstance(r, str)), None)
        if reason is not None:
            self.unknown = reason
            return
        wholes = [whole_axis(a, n) for a, n in zip(self.axes, sizes, strict=True)]
        if call.out_shape[2:] == (1, 1) and all(map(_covers, new, wholes)):
            self._go_global(tuple(new))
        else:
            self.axes = (new[0], new[1])

    def _go_global(self, axes: tuple[Axis, ...]) -> None:
        last = axis_stats(self.axes[0])
        self.global_jump = (last.jump, last.uneven)
        self.axes = (axes[0], axes[1])

    def stats(self) -> AxisStats | None:
        if self.unknown is not None:
            return None
        height, width = (axis_stats(a) for a in self.axes)
        if height != width:
            self.unknown = "its height and width receptive fields differ (only square ones "
            self.unknown += "are reported)"
            return None
        if self.global_jump is not None:
            jump, uneven = self.global_jump
            return AxisStats(height.rf, height.rf_min, jump, uneven, height.start)
        return height


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
    rf: int | None  # of the last layer; None when unknown
    jump: int | float | None  # of the last layer; after a global pool, of the last map
    is_global: bool = False  # the last layer sees the whole input
    rf_note: str | None = None  # "RF unknown past layer N: ..." when the RF column ends early

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
    walk = _Walk(sizes=(input_shape[1], input_shape[2]) if len(input_shape) == 3 else (1, 1))
    rf_note = None
    for index, call in enumerate(calls, start=1):
        name = f"{type(call.module).__name__}-{index}"
        walk.step(call)
        stats = walk.stats()
        if stats is None and rf_note is None:
            rf_note = f"RF unknown past layer {index - 1}: {name} ({walk.unknown})"
        layers.append(
            Layer(
                name=name,
                path=call.path,
                output_shape=[-1, *call.out_shape[1:]],
                params=sum(p.numel() for p in call.module.parameters()),
                trainable_params=sum(
                    p.numel() for p in call.module.parameters() if p.requires_grad
                ),
                rf=stats.rf if stats else None,
                jump=stats.jump if stats else None,
                start=stats.start if stats else None,
                macs=layer_macs(call.module, math.prod(call.in_shape), math.prod(call.out_shape)),
                rf_min=stats.rf_min if stats else None,
                uneven=stats.uneven if stats else False,
                is_global=stats is not None and walk.global_jump is not None,
            )
        )

    total_params = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    output_values = sum(math.prod(layer.output_shape[1:]) for layer in layers)
    input_mb = math.prod(input_shape) * BYTES_PER_VALUE / MB
    forward_backward_mb = 2 * output_values * BYTES_PER_VALUE / MB
    params_mb = total_params * BYTES_PER_VALUE / MB
    last = layers[-1] if layers else None
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


def _rf_cells(layer: Layer) -> list[str]:
    """RF, Jump and Start as printed: "2-3" for RFs that differ, "~0.5" for uneven spacing."""
    if layer.rf is None:
        return ["?", "?", "?"]
    rf = str(layer.rf) if layer.rf_min == layer.rf else f"{layer.rf_min}-{layer.rf}"
    jump = f"{'~' if layer.uneven else ''}{layer.jump:g}"
    if layer.is_global:
        rf += " global"
    return [rf, jump, f"{layer.start:g}"]


def _cells(layer: Layer) -> list[str]:
    return [
        layer.name,
        str(layer.output_shape),
        f"{layer.params:,}",
        *_rf_cells(layer),
        f"{layer.macs:,}",
    ]


def _rf_line(s: Summary) -> str:
    if s.rf is None:
        return f"Receptive field: unknown; {s.rf_note}"
    if s.is_global:
        return f"Receptive field: {s.rf}, global (the whole input)  jump: {s.jump:g} (last map)"
    return f"Receptive field: {s.rf}  jump: {s.jump:g}"


def _notes(s: Summary) -> list[str]:
    notes = []
    if any(layer.rf != layer.rf_min for layer in s.layers):
        notes.append("RF a-b: units of that layer see from a to b input pixels")
    if any(layer.uneven for layer in s.layers):
        notes.append("Jump ~j: units are unevenly spaced, j pixels apart on average")
    if s.rf_note and s.rf is not None:  # the note already ends the RF line when the last is ?
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
) -> Summary:
    """summarize(), a failing forward() of a user's model becoming a one-line error naming
    `name` (the traceback stays on the error's __cause__)."""
    # A user's forward() failing is their input; a registered model failing on anything but
    # a shape mismatch (a RuntimeError) is a bug here and keeps its traceback.
    expected = Exception if user else RuntimeError
    try:
        return summarize(model, input_shape)
    except expected as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise MnistlabError(
            f"model {name!r} fails on input shape {','.join(map(str, input_shape))} "
            f"({reason}); pass a shape it was built for with {option}, or fix its forward()"
        ) from e
