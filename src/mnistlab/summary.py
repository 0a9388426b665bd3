"""Per-layer summary of a model: output shapes, parameters, receptive field, jump and MACs.

One forward pass of a zero batch (batch size 1, eval mode, no grad) with forward hooks on the
leaf modules records each leaf layer in execution order, as torchsummary does. The receptive
field (RF) arithmetic then walks the layers in that order, which is right for sequential chains
(every model in this project is one); a network with branches would need a graph walk.

Receptive field arithmetic (A. Dang-Ha The Hien, "A guide to receptive field arithmetic"):
for a layer with kernel k, stride s, padding p and dilation d, with k_eff = d * (k - 1) + 1,

    jump_out  = jump_in * s
    rf_out    = rf_in + (k_eff - 1) * jump_in
    start_out = start_in + ((k_eff - 1) / 2 - p) * jump_in

starting from rf 1, jump 1, start 0.5 (the centre of the first input pixel). `start` is the
centre of the first output unit's receptive field in input pixel coordinates. Values are taken
along the height; the layers in this project are square. Adaptive pooling to 1x1 and a Linear
layer on a flattened map see the whole map: they count as a kernel as large as their input.
Pooling done with torch.nn.functional inside forward() is not a module, so it is not seen.
"""

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mnistlab import models
from mnistlab.errors import MnistlabError

BYTES_PER_VALUE = 4  # float32, as torchsummary assumes
MB = 1024**2


@dataclass
class Layer:
    name: str  # "Conv2d-1": type name and position among all leaf layers, from 1
    path: str  # where the module sits in the model, e.g. "convblock1.0"
    output_shape: list[int]  # [-1, C, H, W]; -1 stands for the batch
    params: int
    trainable_params: int
    rf: int
    jump: int
    start: float
    macs: int


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
    rf: int
    jump: int


def _height(value: int | tuple[int, ...]) -> int:
    """Height component of a size that torch stores as an int or an (H, W) tuple."""
    return value[0] if isinstance(value, tuple) else value


def rf_step(
    module: nn.Module, in_size: int, rf: int, jump: int, start: float
) -> tuple[int, int, float]:
    """Receptive field, jump and start after `module`, given their values and the map size before.

    Layers that neither convolve nor pool (activations, batch norm, dropout, flatten...) keep
    all three.
    """
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _height(module.kernel_size)
        stride = _height(module.stride)
        padding = _height(module.padding)
        dilation = _height(getattr(module, "dilation", 1))  # AvgPool2d has no dilation
    elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        out_size = _height(module.output_size) or in_size  # None keeps the input size
        if in_size % out_size == 0:
            kernel = stride = in_size // out_size
        else:
            # Windows of uneven size: count the whole map, an upper bound on the RF.
            kernel = stride = in_size
        padding, dilation = 0, 1
    elif isinstance(module, nn.Linear):
        kernel = stride = in_size
        padding, dilation = 0, 1
    else:
        return rf, jump, start
    k_eff = dilation * (kernel - 1) + 1
    return (
        rf + (k_eff - 1) * jump,
        jump * stride,
        start + ((k_eff - 1) / 2 - padding) * jump,
    )


def layer_macs(module: nn.Module, out_elements: int) -> int:
    """Multiply-accumulates of one call: convolutions and linear layers only, bias not counted.

    Conv2d: output elements * (in_channels / groups) * kH * kW. Linear: output elements *
    in_features (in * out for one sample). Batch norm, activations and pooling count 0.
    """
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out_elements * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out_elements * module.in_features
    return 0


def _record_leaf_calls(
    model: nn.Module, x: torch.Tensor
) -> list[tuple[str, nn.Module, torch.Size, torch.Size]]:
    """(path, module, input shape, output shape) of every leaf module call, in execution order."""
    calls = []
    handles = []
    for path, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(module, inputs, output, path=path):
            calls.append((path, module, inputs[0].shape, output.shape))

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
    rf, jump, start = 1, 1, 0.5
    size = input_shape[1] if len(input_shape) == 3 else 1  # current map height
    for index, (path, module, in_shape, out_shape) in enumerate(calls, start=1):
        if len(in_shape) == 4:
            size = in_shape[2]
        rf, jump, start = rf_step(module, size, rf, jump, start)
        if len(out_shape) == 4:
            size = out_shape[2]
        elif isinstance(module, nn.Linear):
            size = 1
        layers.append(
            Layer(
                name=f"{type(module).__name__}-{index}",
                path=path,
                output_shape=[-1, *out_shape[1:]],
                params=sum(p.numel() for p in module.parameters()),
                trainable_params=sum(p.numel() for p in module.parameters() if p.requires_grad),
                rf=rf,
                jump=jump,
                start=start,
                macs=layer_macs(module, out_shape.numel()),
            )
        )

    total_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    output_values = sum(-_prod(layer.output_shape) for layer in layers)  # -1 batch -> one sample
    input_mb = _prod(input_shape) * BYTES_PER_VALUE / MB
    forward_backward_mb = 2 * output_values * BYTES_PER_VALUE / MB
    params_mb = total_params * BYTES_PER_VALUE / MB
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
        rf=rf,
        jump=jump,
    )


def _prod(values: list[int] | tuple[int, ...]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


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


def _summarize_by_name(name: str, input_shape: tuple[int, ...]) -> Summary:
    model = models.create_model(name)
    try:
        return summarize(model, input_shape)
    except RuntimeError as e:
        reason = str(e).splitlines()[0]
        raise MnistlabError(
            f"model {name!r} does not accept input shape {','.join(map(str, input_shape))} "
            f"({reason}); pass a shape it was built for with --input"
        ) from e


def format_table(s: Summary) -> str:
    """The summary as a torchsummary-style text table with RF, Jump, Start and MACs columns."""
    header = ["Layer (type)", "Output Shape", "Param #", "RF", "Jump", "Start", "MACs"]
    rows = [
        [
            layer.name,
            str(layer.output_shape),
            f"{layer.params:,}",
            str(layer.rf),
            str(layer.jump),
            f"{layer.start:g}",
            f"{layer.macs:,}",
        ]
        for layer in s.layers
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))

    rule_width = len(line(header))
    out = ["-" * rule_width, line(header), "=" * rule_width]
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
        f"Receptive field: {s.rf}  jump: {s.jump}",
        "-" * rule_width,
    ]
    return "\n".join(out)


def print_summary(name: str, input_shape: tuple[int, ...], fmt: str = "table") -> None:
    """Print the summary of registered model `name` as a table or as one JSON object."""
    s = _summarize_by_name(name, input_shape)
    if fmt == "json":
        print(json.dumps({"model": name, **asdict(s)}, indent=2))
    else:
        print(format_table(s))


def print_models() -> None:
    """One aligned line per registered model: name, params, MACs, final RF, description."""
    header = ["Model", "Params", "MACs", "RF", "Description"]
    rows = []
    for name in models.list_models():
        stats = model_stats(models.create_model(name))
        rows.append(
            [
                name,
                f"{stats['params']:,}",
                f"{stats['macs']:,}",
                str(stats["rf"]),
                models.model_doc(name),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        name, *numbers, doc = row
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(numbers, widths[1:], strict=True)]
        print("  ".join([*cells, doc]))
