"""What each layer of a network sees of one input: receptive fields checked against gradients,
feature maps and the first layer's kernels.

A view is a layer that changes what its units see (a convolution, a pool, a linear layer) with
the layers after it that act on each value alone (activations, batch norm, dropout, flatten):
those keep every unit's receptive field, so a view shows the map the next view reads.

The box of unit (y, x) comes from `summary`'s numbers alone: along each axis its receptive
field (RF) is `rf` input pixels wide, centred at `start + i * jump`, pixel p spanning [p, p+1).
The gradient of the unit (summed over channels) with respect to the input says which pixels it
does depend on:

- every pixel with a non-zero gradient lies inside the box (a ReLU that is off, or a max-pool
  that picked another pixel, only removes pixels);
- in a linear copy of the network (activations replaced by the identity, max-pools by average
  pools over the same windows) every pixel of the box has a path to the unit, so the box,
  clipped at the image's edge, is the smallest box holding the non-zero pixels; without gaps
  in the windows (dilation, or a stride longer than the window) they fill it.

Gradients are taken in float64, where a pixel without a path gets exactly 0 (float32 kernels
may transform or reorder the sums, leaving rounding noise where there is no path).
"""

import copy
import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.errors import MnistlabError, given
from mnistlab.models.summary import (
    Layer,
    Summary,
    _keep,
    find_rule,
    summarize,
    summarize_checked,
)

# What a model that fails on the dataset's images must do, for summarize_checked's error.
INSPECT_FIX = "inspect runs it on the dataset's images: fix its forward() to take them"

# Layers that keep each unit's RF but are not the identity: the linear copy drops them.
NONLINEAR = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
)  # fmt: skip


# ----------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class Box:
    """Input pixels rows top..bottom-1, columns left..right-1 (may reach into the padding)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def clip(self, height: int, width: int) -> "Box | None":
        """The part inside a height x width image; None when it lies wholly in the padding."""
        top, left = max(self.top, 0), max(self.left, 0)
        bottom, right = min(self.bottom, height), min(self.right, width)
        return Box(top, left, bottom, right) if top < bottom and left < right else None

    def mask(self, height: int, width: int) -> np.ndarray:
        """[height, width] True inside the box."""
        inside = np.zeros((height, width), dtype=bool)
        clipped = self.clip(height, width)
        if clipped is not None:
            inside[clipped.top : clipped.bottom, clipped.left : clipped.right] = True
        return inside

    def __str__(self) -> str:
        return f"rows {self.top}-{self.bottom - 1}, columns {self.left}-{self.right - 1}"


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True pixel; None when there is none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return Box(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def unit_box(layer: Layer, unit: tuple[int, int]) -> Box | None:
    """The input pixels unit (y, x) of `layer` sees, from the summary's RF, jump and start;
    None when the summary gives no single box per unit (RF unknown, or differing by unit)."""
    if layer.rf is None or layer.rf != layer.rf_min or layer.uneven:
        return None
    assert layer.start is not None and layer.jump is not None
    # start is the centre of unit 0's RF: rf pixels wide, so start - rf/2 is a whole number.
    # A global layer's every unit sees the same pixels (after a squeeze-and-excitation gate
    # its map may be larger than 1x1): no shift by unit.
    corners = [
        layer.start - layer.rf / 2 + (0 if layer.is_global else i * layer.jump) for i in unit
    ]
    top, left = (round(c) for c in corners)
    return Box(top, left, top + layer.rf, left + layer.rf)


# ----------------------------------------------------------------------------- results


@dataclass
class UnitField:
    """One unit's receptive field: the summary's box, and the gradients that check it."""

    unit: tuple[int, int]  # (y, x) in the view's map; (0, 0) for a layer without a map
    box: Box | None  # from the summary; None when it gives none (see `note` of the view)
    gradient: np.ndarray = field(repr=False)  # [H, W] d(unit) / d(input), the network as is
    linear_gradient: np.ndarray = field(repr=False)  # the same in the linear copy

    @property
    def image_box(self) -> Box | None:
        """The box clipped at the image's edge."""
        if self.box is None:
            return None
        return self.box.clip(*self.gradient.shape)

    @property
    def reach(self) -> Box | None:
        """The smallest box holding the pixels with a non-zero gradient (None: there are none,
        e.g. every ReLU the unit reads is off for this input)."""
        return bounding_box(self.gradient != 0)

    @property
    def linear_reach(self) -> Box | None:
        return bounding_box(self.linear_gradient != 0)

    @property
    def outside(self) -> int:
        """Pixels with a non-zero gradient outside the box (0 when the box is right)."""
        if self.box is None:
            return 0
        return int(((self.gradient != 0) & ~self.box.mask(*self.gradient.shape)).sum())

    @property
    def spans(self) -> bool:
        """The clipped box is the smallest box holding the linear copy's non-zero pixels."""
        return self.box is not None and self.linear_reach == self.image_box

    @property
    def holes(self) -> int:
        """Pixels of the clipped box where the linear copy's gradient is 0 (gaps: dilation)."""
        if self.box is None:
            return 0
        return int(((self.linear_gradient == 0) & self.box.mask(*self.gradient.shape)).sum())

    @property
    def checked(self) -> bool:
        """The box holds every non-zero pixel, and the linear copy reaches each of its edges."""
        return self.box is not None and self.outside == 0 and self.spans


@dataclass
class LayerView:
    """One view: a layer and the per-value layers after it (see the module docstring)."""

    number: int  # from 1, in execution order
    names: tuple[str, ...]  # the summary's names of its leaf layers: ("Conv2d-1", "ReLU-2")
    paths: tuple[str, ...]  # where they sit in the model: ("convblock1.0", "convblock1.1")
    layer: Layer  # the summary's row of the layer whose output is shown
    maps: np.ndarray | None = field(repr=False)  # [C, H, W] for the input; None: no map
    centre: UnitField | None  # the unit in the middle of the map; no map: the whole output
    picked: UnitField | None = None  # the unit the caller asked for, on its view
    note: str = ""  # why there is no box, when there is none
    values: np.ndarray | None = field(default=None, repr=False)  # [C]: a layer without a map

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def title(self) -> str:
        """ "Conv2d-1 + ReLU-2" """
        return " + ".join(self.names)

    @property
    def units(self) -> list[UnitField]:
        return [u for u in (self.centre, self.picked) if u is not None]


@dataclass
class NetworkView:
    """Every view of a network for one input, its summary, and what it predicts."""

    summary: Summary
    layers: list[LayerView]
    kernels: np.ndarray | None = field(repr=False)  # the first Conv2d's [out, in, kh, kw]
    kernels_layer: str | None  # its summary name
    probabilities: np.ndarray | None = field(repr=False)  # [classes] for the input
    exact: bool = True  # gradients in float64; False: the network only runs in float32


# ----------------------------------------------------------------------------- the linear copy


class WindowMean(nn.Module):
    """The mean over a max-pool's windows (padding counted as zeros), dilation included,
    which AvgPool2d lacks: the linear stand-in for the pool, with the same output size.
    A leaf: the pool's settings are kept as numbers, not as a child module."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding, self.dilation = (
            _pair(v) for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
        )
        self.ceil_mode = pool.ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
        )
        # The max-pool's output size; ceil_mode may add a last window past the edge.
        size = F.max_pool2d(
            x.detach(), (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil_mode=self.ceil_mode
        ).shape[-2:]
        # Zero padding before, and after whatever a ceil_mode window reads past the edge.
        need_h = (size[0] - 1) * sh + dh * (kh - 1) + 1 - x.shape[-2] - ph
        need_w = (size[1] - 1) * sw + dw * (kw - 1) + 1 - x.shape[-1] - pw
        x = F.pad(x, (pw, max(need_w, 0), ph, max(need_h, 0)))
        channels = x.shape[1]
        weight = x.new_full((channels, 1, kh, kw), 1 / (kh * kw))
        out = F.conv2d(x, weight, stride=(sh, sw), dilation=(dh, dw), groups=channels)
        return out[..., : size[0], : size[1]]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _linear_stand_in(module: nn.Module) -> nn.Module | None:
    """What replaces a leaf layer in the linear copy (None: it stays)."""
    if isinstance(module, NONLINEAR):
        return nn.Identity()
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation) == (1, 1):
            return nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
        return WindowMean(module)
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    return None


def linear_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with activations replaced by the identity and max-pools by average
    pools over the same windows; leaf modules stay leaf modules, in the same order."""
    copied = copy.deepcopy(model)
    for path, module in list(copied.named_modules()):
        stand_in = _linear_stand_in(module) if path else None
        if stand_in is None:
            continue
        parent_path, _, name = path.rpartition(".")
        setattr(copied.get_submodule(parent_path), name, stand_in)
    return copied


# ----------------------------------------------------------------------------- the pass


@dataclass
class _Call:
    module: nn.Module
    output: object  # what the layer returned; a tensor that stays in the autograd graph


def _leaf_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], object]:
    """Every leaf layer call of one forward pass, in order (as the summary records them), and
    the model's output. Outputs are cloned: an in-place layer after one would change it."""
    calls: list[_Call] = []

    def hook(module: nn.Module, args: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            output = output.clone()
        calls.append(_Call(module, output))

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if next(module.children(), None) is None
    ]
    try:
        output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def _shape(call: _Call) -> tuple[int, ...] | None:
    return tuple(call.output.shape) if isinstance(call.output, torch.Tensor) else None


def _views(calls: list[_Call]) -> list[list[int]]:
    """Call indices grouped into views: a layer with the per-value layers that follow it."""
    groups: list[list[int]] = []
    for i, call in enumerate(calls):
        if groups and find_rule(call.module) is _keep:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _shown(calls: list[_Call], group: list[int]) -> int:
    """The call whose output a view shows: its last with a map (a flatten ends no view)."""
    maps = [i for i in group if _is_map(calls[i].output)]
    return maps[-1] if maps else group[-1]


def _is_map(output: object) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4


def _gradient(output: object, unit: tuple[int, int], x: torch.Tensor) -> np.ndarray:
    """d(sum over channels of `unit` of `output`) / d(x) as [H, W] float64."""
    if not isinstance(output, torch.Tensor) or not output.requires_grad:
        return np.zeros(tuple(x.shape[-2:]))  # no path from the input at all
    value = output[0, :, unit[0], unit[1]] if output.dim() == 4 else output[0]
    (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=True, allow_unused=True)
    if grad is None:
        return np.zeros(tuple(x.shape[-2:]))
    return grad[0].sum(0).detach().double().cpu().numpy()


def _unit(
    layer: Layer,
    output: object,
    unit: tuple[int, int],
    linear_output: object,
    x: torch.Tensor,
    linear_x: torch.Tensor,
) -> UnitField:
    # A layer without a map (a linear layer) is one unit: its box is the global one, if any.
    box = unit_box(layer, unit) if _is_map(output) or layer.is_global else None
    return UnitField(
        unit, box, _gradient(output, unit, x), _gradient(linear_output, unit, linear_x)
    )


def _note(layer: Layer, output: object, summary: Summary) -> str:
    if not (_is_map(output) or layer.is_global):
        return "no map: its output is " + str(layer.output_shape)
    if layer.rf is None:
        return summary.rf_note or "the summary gives no receptive field here"
    if layer.rf != layer.rf_min or layer.uneven:
        return "its units see different numbers of pixels; the summary gives no single box"
    return ""


def _whole(value: object) -> int | None:
    """A whole number given as one ("3") or as an int; None for anything else (3.5, True)."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    return None


def parse_unit(unit: object, names: list[str], paths: list[str]) -> tuple[int, int, int]:
    """(leaf layer index from 0, y, x) from (layer, y, x) or "layer,y,x", where layer is a
    summary name ("Conv2d-5"), its number (5) or the module's path ("convblock3.0")."""
    parts: list[object]
    if isinstance(unit, str):
        parts = [p.strip() for p in unit.split(",")]
    elif isinstance(unit, tuple | list):
        parts = list(unit)
    else:
        parts = []
    shown = given("unit", unit)
    if len(parts) != 3:
        raise MnistlabError(
            f"{shown}: expected LAYER,Y,X: a layer's name or number from the summary and the "
            "unit's row and column, e.g. Conv2d-5,3,4"
        )
    layer, row, column = parts
    y, x = _whole(row), _whole(column)
    if y is None or x is None:
        raise MnistlabError(f"{shown}: the row and column must be whole numbers, e.g. Conv2d-5,3,4")
    key = str(layer)
    for i, (name, path) in enumerate(zip(names, paths, strict=True)):
        if key in (name, str(i + 1), path):
            return i, y, x
    raise MnistlabError(
        f"{shown}: no layer {key!r}; give a name from the summary ({names[0]} to {names[-1]}), "
        f"its number (1 to {len(names)}) or its path in the model"
    )


def inspect_network(
    model: nn.Module,
    x: torch.Tensor,
    unit: object = None,
    name: str = "model",
    user: bool = True,
) -> NetworkView:
    """Every view of `model` for one normalised input `x` [1, C, H, W] (see the module
    docstring). `unit`: also the receptive field of this unit, (layer, y, x) or "layer,y,x".
    `model` is not changed: a copy runs, on x's device, in float64 where it can. `name` and
    `user` word the error when its forward() fails (as summary does)."""
    net = copy.deepcopy(model).eval().to(x.device)
    for param in net.parameters():
        param.requires_grad_(False)  # gradients with respect to the input only
    shape = tuple(x.shape[1:])
    exact = True
    try:
        summary = summarize(net.double(), shape)
    except Exception:
        # A forward() with float32 constants of its own: check in float32 instead.
        exact = False
        summary = summarize_checked(net.float(), shape, name, user, fix=INSPECT_FIX)
    dtype = torch.float64 if exact else torch.float32
    linear = linear_copy(net)
    inputs = [x.detach().to(dtype).clone().requires_grad_(True) for _ in range(2)]
    with torch.enable_grad():
        calls, output = _leaf_calls(net, inputs[0])
        linear_calls, _ = _leaf_calls(linear, inputs[1])
        if len(calls) != len(summary.layers) or [_shape(c) for c in calls] != [
            _shape(c) for c in linear_calls
        ]:
            raise MnistlabError(
                f"model {name!r}: its layers run differently from one call to the next; "
                "inspect takes a network whose forward() calls the same layers each time"
            )
        picked = None
        if unit is not None:
            paths = [layer.path for layer in summary.layers]
            picked = parse_unit(unit, [layer.name for layer in summary.layers], paths)
        views = []
        for number, group in enumerate(_views(calls), start=1):
            shown = _shown(calls, group)
            layer, out, lin = summary.layers[shown], calls[shown].output, linear_calls[shown].output
            maps = out[0].detach().float().cpu().numpy() if _is_map(out) else None
            centre_unit = (out.shape[2] // 2, out.shape[3] // 2) if maps is not None else (0, 0)
            view = LayerView(
                number,
                tuple(summary.layers[i].name for i in group),
                tuple(summary.layers[i].path for i in group),
                layer,
                maps,
                _unit(layer, out, centre_unit, lin, *inputs),
                note=_note(layer, out, summary),
            )
            if maps is None and isinstance(out, torch.Tensor) and out.dim() == 2:
                view.values = out[0].detach().float().cpu().numpy()
            if picked is not None and picked[0] in group:
                view.picked = _unit(layer, out, _check_unit(unit, picked, view), lin, *inputs)
            views.append(view)
    first_conv = next((i for i, c in enumerate(calls) if isinstance(c.module, nn.Conv2d)), None)
    kernels = kernels_layer = None
    if first_conv is not None:
        kernels = calls[first_conv].module.weight.detach().float().cpu().numpy()
        kernels_layer = summary.layers[first_conv].name
    return NetworkView(summary, views, kernels, kernels_layer, _probabilities(output), exact)


def _check_unit(unit: object, picked: tuple[int, int, int], view: LayerView) -> tuple[int, int]:
    _, y, x = picked
    if view.maps is None:
        raise MnistlabError(
            f"{given('unit', unit)}: {view.title} has no map (its output is "
            f"{view.layer.output_shape}); pick a layer whose output is [-1, C, H, W]"
        )
    height, width = view.maps.shape[1:]
    if not (0 <= y < height and 0 <= x < width):
        raise MnistlabError(
            f"{given('unit', unit)}: {view.title}'s map is {height}x{width}; give a row "
            f"from 0 to {height - 1} and a column from 0 to {width - 1}"
        )
    return y, x


def _probabilities(output: object) -> np.ndarray | None:
    """Class probabilities from what the network returned, logits or log-probabilities
    alike (softmax of either is the probabilities); None for any other output."""
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 1:
        return None
    probs = torch.softmax(output.detach().double(), dim=1)[0].cpu().numpy()
    return probs if math.isfinite(float(probs.sum())) else None
