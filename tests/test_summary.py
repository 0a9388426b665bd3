import json

import pytest
import torch
import torchinfo
from torch import nn

from mnistlab import cli
from mnistlab.errors import MnistlabError
from mnistlab.models import build
from mnistlab.models.summary import (
    Axis,
    format_table,
    has_linear,
    model_stats,
    parse_shape,
    summarize,
    transposed_axis,
    window_axis,
)


def rf_chain(model: nn.Module, input_shape=(1, 28, 28)) -> list[tuple[int, int, float]]:
    """(rf, jump, start) after every leaf layer."""
    return [(layer.rf, layer.jump, layer.start) for layer in summarize(model, input_shape).layers]


# ----------------------------------------------------------------------------- receptive field
# Hand-worked with j_out = j_in*s, r_out = r_in + (k_eff-1)*j_in,
# start_out = start_in + ((k_eff-1)/2 - p)*j_in, k_eff = d*(k-1)+1,
# from (r, j, start) = (1, 1, 0.5).


def case_padded_3x3_convs() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # r = 1 + 2*1 = 3, j = 1, start = 0.5 + (1 - 1)*1 = 0.5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 3 + 2 = 5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 5 + 2 = 7
    )


def test_rf_padded_3x3_convs():
    model = case_padded_3x3_convs()
    assert rf_chain(model) == [(3, 1, 0.5), (5, 1, 0.5), (7, 1, 0.5)]


def case_stride_2_conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # r = 3, j = 1*2 = 2, start = 0.5 + 0 = 0.5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 3 + 2*2 = 7, j = 2, start = 0.5 + (1 - 1)*2 = 0.5
        nn.Conv2d(4, 4, 3),  # r = 7 + 2*2 = 11, j = 2, start = 0.5 + (1 - 0)*2 = 2.5
    )


def test_rf_stride_2_conv():
    model = case_stride_2_conv()
    assert rf_chain(model) == [(3, 2, 0.5), (7, 2, 0.5), (11, 2, 2.5)]


def case_tuple_sizes_count_like_ints() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, (3, 3), stride=(2, 2), padding=(1, 1)))


def test_rf_tuple_sizes_count_like_ints():
    assert rf_chain(case_tuple_sizes_count_like_ints()) == [(3, 2, 0.5)]


def case_dilated_conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, dilation=2),  # k_eff = 2*2 + 1 = 5: r = 5, j = 1, start = 0.5 + 2 = 2.5
        nn.Conv2d(4, 4, 3),  # r = 5 + 2 = 7, start = 2.5 + 1 = 3.5
    )


def test_rf_dilated_conv():
    assert rf_chain(case_dilated_conv()) == [(5, 1, 2.5), (7, 1, 3.5)]


def case_max_pooling_and_layers_that_keep_it() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),  # r = 3, j = 1, start = 0.5 + 1 = 1.5
        nn.BatchNorm2d(4),  # unchanged
        nn.ReLU(),  # unchanged
        nn.MaxPool2d(2, 2),  # r = 3 + 1*1 = 4, j = 2, start = 1.5 + 0.5*1 = 2.0
        nn.Dropout(0.1),  # unchanged
        nn.Conv2d(4, 4, 3),  # r = 4 + 2*2 = 8, j = 2, start = 2.0 + 1*2 = 4.0
    )


def test_rf_max_pooling_and_layers_that_keep_it():
    model = case_max_pooling_and_layers_that_keep_it()
    assert rf_chain(model) == [
        (3, 1, 1.5),
        (3, 1, 1.5),
        (3, 1, 1.5),
        (4, 2, 2.0),
        (4, 2, 2.0),
        (8, 2, 4.0),
    ]


def case_adaptive_pool_to_1x1_is_global_and_keeps_the_last_maps_jump() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),  # 28 -> 26: r = 3, j = 1, start = 1.5; unit c sees [c, c+3)
        nn.MaxPool2d(2),  # 26 -> 13: r = 4, j = 2, start = 2.0; unit u sees [2u, 2u+4)
        nn.AdaptiveAvgPool2d(1),  # units 0..12: [0, 28): r = 28, start 14, jump stays 2
    )


def test_rf_adaptive_pool_to_1x1_is_global_and_keeps_the_last_maps_jump():
    model = case_adaptive_pool_to_1x1_is_global_and_keeps_the_last_maps_jump()
    assert rf_chain(model) == [(3, 1, 1.5), (4, 2, 2.0), (28, 2, 14.0)]
    assert [layer.is_global for layer in summarize(model).layers] == [False, False, True]


def case_global_max_pool_counts_padding_and_reports_the_last_jump() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # 28 -> 14: unit u sees [2u-1, 2u+2)
        nn.AdaptiveMaxPool2d((1, 1)),  # units 0..13: [-1, 28): r = 29, start 13.5, jump 2
        nn.Conv2d(4, 10, 1),  # a 1x1 map after a global pool: unchanged, still global
    )


def test_rf_global_max_pool_counts_padding_and_reports_the_last_jump():
    model = case_global_max_pool_counts_padding_and_reports_the_last_jump()
    s = summarize(model)
    assert rf_chain(model) == [(3, 2, 0.5), (29, 2, 13.5), (29, 2, 13.5)]
    assert (s.rf, s.jump, s.is_global) == (29, 2, True)  # not 28, the pool's own stride


def case_adaptive_pool_to_2x2_is_a_pool_of_half_the_map() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # 28 -> 14: r = 3, j = 2, start = 0.5
        nn.AdaptiveMaxPool2d(2),  # kernel = stride = 7: r = 3 + 6*2 = 15, j = 14, start = 6.5
    )


def test_rf_adaptive_pool_to_2x2_is_a_pool_of_half_the_map():
    model = case_adaptive_pool_to_2x2_is_a_pool_of_half_the_map()
    assert rf_chain(model) == [(3, 2, 0.5), (15, 14, 6.5)]


def case_adaptive_pool_with_uneven_windows_is_unknown() -> nn.Module:
    # 14 -> 3: windows [0, 5), [4, 10), [9, 14) differ in size; no single RF describes them.
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(3))


def test_rf_adaptive_pool_with_uneven_windows_is_unknown():
    model = case_adaptive_pool_with_uneven_windows_is_unknown()
    s = summarize(model)
    assert rf_chain(model) == [(3, 2, 0.5), (None, None, None)]
    assert s.rf is None
    assert s.rf_note.startswith("RF unknown past layer 1: AdaptiveAvgPool2d-2")


def case_linear_on_a_flattened_map_is_global() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),  # 28 -> 14: unit u sees [2u-1, 2u+2)
        nn.Flatten(),  # unchanged
        nn.Linear(2 * 14 * 14, 10),  # all 14 units: [-1, 28): r = 29, start 13.5, jump 2
        nn.Linear(10, 10),  # unchanged
    )


def test_rf_linear_on_a_flattened_map_is_global():
    model = case_linear_on_a_flattened_map_is_global()
    assert rf_chain(model) == [(3, 2, 0.5), (3, 2, 0.5), (29, 2, 13.5), (29, 2, 13.5)]


class ViewThenLinear(nn.Module):
    """The classic pattern: the flatten is a view in forward(), not a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_rf_a_view_in_forward_counts_as_a_flatten():
    assert rf_chain(ViewThenLinear()) == [(3, 2, 0.5), (29, 2, 13.5)]


# ----------------------------------------------------------------------------- string paddings


def case_same_and_valid_padding_with_odd_kernels() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"),  # pads 1 each side: r = 3, j = 1, start = 0.5
        nn.Conv2d(4, 4, 3, padding="valid"),  # pads 0: r = 5, start = 0.5 + 1 = 1.5
        nn.Conv2d(4, 4, 3, dilation=2, padding="same"),  # k_eff 5 pads 2: r = 9, start = 1.5
    )


def test_rf_same_and_valid_padding_with_odd_kernels():
    model = case_same_and_valid_padding_with_odd_kernels()
    assert rf_chain(model) == [(3, 1, 0.5), (5, 1, 1.5), (9, 1, 1.5)]
    assert [layer.output_shape[2] for layer in summarize(model).layers] == [28, 26, 26]


def case_same_padding_with_an_even_kernel_pads_the_odd_pixel_after() -> nn.Module:
    # torch pads d*(k-1) in all, total // 2 before the first pixel and the rest after the last
    # (torch/nn/modules/conv.py; checked below by probing which pixels reach unit 0).
    return nn.Sequential(
        nn.Conv2d(1, 1, 2, padding="same"),  # pads 0 before, 1 after: unit 0 reads pixels 0, 1
        # r = 2, start = 0.5 + (1/2 - 0)*1 = 1.0
        nn.Conv2d(1, 1, 4, padding="same"),  # pads 1 before, 2 after: unit 0 reads units -1..2
        # r = 2 + 3 = 5, start = 1.0 + (3/2 - 1)*1 = 1.5: pixels [-1, 4)
    )


def test_rf_same_padding_with_an_even_kernel_pads_the_odd_pixel_after():
    model = case_same_padding_with_an_even_kernel_pads_the_odd_pixel_after()
    assert rf_chain(model) == [(2, 1, 1.0), (5, 1, 1.5)]
    first = model[0]
    nn.init.ones_(first.weight)
    nn.init.zeros_(first.bias)
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 1, 1] = 1.0  # pixel 1 reaches units 0 and 1: unit 0 reads pixels 0 and 1
    with torch.no_grad():
        out = first(x)[0, 0]
    assert out[:2, :2].eq(1).all() and out.sum() == 4


# ----------------------------------------------------------------------------- transposed convs


def case_transposed_conv_with_stride_1_is_a_padded_conv() -> nn.Module:
    # Output u reads input u + p - m for taps m = 0, 1, 2: units u-2..u, pixels [u-2, u+1).
    return nn.Sequential(nn.ConvTranspose2d(1, 1, 3))  # 28 -> 30


def test_rf_transposed_conv_with_stride_1_is_a_padded_conv():
    assert rf_chain(case_transposed_conv_with_stride_1_is_a_padded_conv()) == [(3, 1, -0.5)]


def case_transposed_conv_k2_s2_undoes_a_stride_2_conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 2, stride=2),  # 28 -> 14: unit i sees [2i, 2i+2): r 2, j 2, start 1
        nn.ConvTranspose2d(4, 1, 2, stride=2),  # 14 -> 28: u reads unit u // 2 only
        # units 0, 1 see [0, 2), units 2, 3 see [2, 4): r = 2, centres 1, 1, 3, 3: the mean
        # jump is 2 / 2 = 1, unevenly spaced; start 1.0
    )


def test_rf_transposed_conv_k2_s2_undoes_a_stride_2_conv():
    model = case_transposed_conv_k2_s2_undoes_a_stride_2_conv()
    layer = summarize(model).layers[-1]
    assert (layer.rf, layer.rf_min, layer.jump, layer.uneven, layer.start) == (2, 2, 1, True, 1.0)


def case_transposed_conv_k3_s2_gives_units_of_two_sizes() -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1),  # 28 -> 55
        # u reads i = (u + 1 - m) / 2 for whole numbers: u = 0 reads pixel 0 (m = 1), u = 1
        # reads pixels 1 and 0 (m = 0, 2): RFs 1 and 2 by turns, centres 0.5, 1.0, 1.5, ...:
        # evenly spaced, jump 1/2, start 0.5
        nn.Conv2d(1, 1, 3, padding=1),
        # u = 0 reads units -1, 0, 1: [-1, 1), [0, 1), [0, 2) -> [-1, 2), r 3, centre 0.5;
        # u = 1 reads units 0, 1, 2: [0, 1), [0, 2), [1, 2) -> [0, 2), r 2, centre 1.0
        nn.Conv2d(1, 1, 1, stride=2),  # keeps every other unit: [-1, 2), [0, 3), ...: r 3, j 1
    )


def test_rf_transposed_conv_k3_s2_gives_units_of_two_sizes():
    model = case_transposed_conv_k3_s2_gives_units_of_two_sizes()
    cells = [
        (layer.rf_min, layer.rf, layer.jump, layer.uneven, layer.start)
        for layer in summarize(model).layers
    ]
    assert cells == [(1, 2, 0.5, False, 0.5), (2, 3, 0.5, False, 0.5), (3, 3, 1, False, 0.5)]
    lines = format_table(summarize(model)).splitlines()
    row = next(line for line in lines if "ConvTranspose2d-1" in line)
    assert " 1-2 " in row and " 0.5 " in row
    assert any(line.startswith("RF a-b:") for line in lines)


def case_transposed_conv_whose_outputs_read_nothing_is_unknown() -> nn.Module:
    # Dilation 2, stride 2: taps land on 2i and 2i + 2, so odd outputs get the bias only.
    return nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 2, stride=2, dilation=2))


def test_rf_transposed_conv_whose_outputs_read_nothing_is_unknown():
    model = case_transposed_conv_whose_outputs_read_nothing_is_unknown()
    s = summarize(model)
    assert rf_chain(model) == [(3, 1, 1.5), (None, None, None)]
    assert s.rf_note == (
        "RF unknown past layer 1: ConvTranspose2d-2 (some of its outputs read no input)"
    )


def probed_span(model: nn.Module, unit: int, size: int = 40) -> tuple[int, int]:
    """[lo, hi) of the input rows that reach output unit (unit, unit), found by backprop."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.ones_(module.weight)  # no cancellation: every path adds
    x = torch.ones(1, 1, size, size, requires_grad=True)
    model(x)[0, 0, unit, unit].backward()
    rows = x.grad[0, 0].abs().sum(dim=1).nonzero().flatten()
    return int(rows.min()), int(rows.max()) + 1


@pytest.mark.parametrize(
    ("layers", "walk"),
    [
        ([(2, 2, 0, 1)], lambda a: transposed_axis(a, 2, 2, 0, 1)),
        ([(3, 2, 1, 1)], lambda a: transposed_axis(a, 3, 2, 1, 1)),
        ([(4, 2, 1, 1)], lambda a: transposed_axis(a, 4, 2, 1, 1)),
        ([(3, 3, 0, 2)], lambda a: transposed_axis(a, 3, 3, 0, 2)),
        ([(3, 2, 1, 1), "c3"], lambda a: window_axis(transposed_axis(a, 3, 2, 1, 1), 3, 1, 0, 1)),
    ],
)
def test_transposed_axis_spans_match_backprop(layers, walk):
    # An independent check of the span arithmetic: which input rows reach each output unit.
    modules = [
        nn.Conv2d(1, 1, 3, bias=False)
        if spec == "c3"
        else nn.ConvTranspose2d(1, 1, spec[0], stride=spec[1], padding=spec[2], dilation=spec[3],
                                bias=False)
        for spec in layers
    ]  # fmt: skip
    model = nn.Sequential(*modules)
    axis = walk(Axis())
    for unit in range(20, 26):  # well inside the map, away from its edges
        assert probed_span(model, unit) == axis.span(unit), unit


# ----------------------------------------------------------------------------- pooling variants


def case_avg_pool_with_ceil_mode() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),  # 28 -> 26: r = 3, j = 1, start = 1.5
        nn.AvgPool2d(3, stride=2, ceil_mode=True),  # ceil((26 - 3)/2) + 1 = 13 (12 floored)
        # r = 3 + 2*1 = 5, j = 2, start = 1.5 + 1*1 = 2.5; the extra last window is clipped,
        # not wider
    )


def test_rf_avg_pool_with_ceil_mode():
    model = case_avg_pool_with_ceil_mode()
    assert rf_chain(model) == [(3, 1, 1.5), (5, 2, 2.5)]
    assert summarize(model).layers[-1].output_shape == [-1, 4, 13, 13]


def case_dilated_max_pool() -> nn.Module:
    # kernel 2, dilation 2: k_eff = 3; r = 1 + 2 = 3, j = 2, start = 0.5 + 1 = 1.5;
    # floor((28 - 2*(2-1) - 1) / 2) + 1 = 13 outputs
    return nn.Sequential(nn.MaxPool2d(2, stride=2, dilation=2))


def test_rf_dilated_max_pool():
    model = case_dilated_max_pool()
    assert rf_chain(model) == [(3, 2, 1.5)]
    assert summarize(model).layers[-1].output_shape == [-1, 1, 13, 13]


# ----------------------------------------------------------------------------- unknown layers


def test_rf_of_an_unknown_layer_ends_the_column_with_a_mark():
    model = unknown_layer_net()
    s = summarize(model)
    assert rf_chain(model) == [(3, 1, 1.5), (None, None, None), (None, None, None)]
    assert s.rf is None and s.jump is None
    assert s.rf_note.startswith("RF unknown past layer 1: Upsample-2 (")
    lines = format_table(s).splitlines()
    assert any(
        line.startswith("Receptive field: unknown; RF unknown past layer 1") for line in lines
    )
    upsample_row = next(line for line in lines if "Upsample-2" in line)
    assert upsample_row.split()[-4:-1] == ["?", "?", "?"]


class Residual(nn.Module):
    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.inplace:
            out += x  # the sum is the same tensor as the conv's output
        else:
            out = out + x
        return self.relu(out)


@pytest.mark.parametrize("inplace", [False, True])
def test_rf_follows_a_residual_sum_in_forward_and_the_larger_path_wins(inplace):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Residual(inplace))
    s = summarize(model)
    # conv 3x3: [u, u+3); padded conv on it: [u-1, u+4), RF 5; the sum with the identity
    # [u, u+3) is the box around both: RF 5, start 1.5, whether `out + x` or `out += x`.
    assert rf_chain(model) == [(3, 1, 1.5), (5, 1, 1.5), (5, 1, 1.5)]
    assert s.rf_note is None


class FunctionalPool(nn.Module):
    """A pool as a call in forward(): no module to read its window from."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(nn.functional.max_pool2d(self.a(x), 2)))


def test_rf_is_unknown_past_an_operation_it_does_not_follow():
    s = summarize(FunctionalPool())
    assert rf_chain(FunctionalPool()) == [(3, 1, 1.5), (None, None, None)]
    assert s.rf_note == (
        "RF unknown past layer 1: Conv2d-2 (it reads max_pool2d() in forward(), which this "
        "tool does not follow)"
    )


def test_rf_follows_elementwise_calls_and_flattening_views_in_forward():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)
            self.fc = nn.Linear(2 * 24 * 24, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b(torch.relu(self.a(x * 2 - 1)))
            return self.fc(y.view(y.shape[0], -1))

    assert rf_chain(Functional()) == [(3, 1, 1.5), (5, 1, 2.5), (28, 1, 14.0)]


def test_rf_in_place_activation_keeps_the_chain():
    model = in_place_relu_net()
    assert rf_chain(model) == [(3, 1, 1.5), (3, 1, 1.5), (5, 1, 2.5)]


def test_rf_of_non_square_layers_is_height_by_width():
    model = non_square_net()
    s = summarize(model)
    # (3, 1): rows [u, u+3), columns [u, u+1); then (1, 3): both 3, square again.
    assert rf_chain(model) == [(None, None, None), (3, 1, 1.5)]
    first = s.layers[0]
    assert [(a.rf, a.jump, a.start) for a in first.axes] == [(3, 1, 1.5), (1, 1, 0.5)]
    assert s.rf_note is None
    row = next(line for line in format_table(s).splitlines() if "Conv2d-1" in line)
    assert row.split()[-4:-1] == ["3x1", "1", "1.5x0.5"]
    assert "hxw: height, then width, where the two differ" in str(s)
    last = summarize(nn.Sequential(nn.Conv2d(1, 4, (3, 1), stride=(1, 2))))
    assert (last.rf, last.rf_hw, last.jump_hw) == (None, [3, 1], [1, 2])
    assert "Receptive field: 3x1  jump: 1x2" in str(last)


# ----------------------------------------------------------------------------- seed model


def test_seed_model_layers_params_and_receptive_field():
    s = summarize(build("seed"))
    assert s.total_params == 258_602
    assert s.trainable_params == 258_602
    assert s.non_trainable_params == 0
    conv_params = [layer.params for layer in s.layers if layer.name.startswith("Conv2d")]
    assert conv_params == [320, 18_496, 73_856, 4_128, 18_496, 73_856, 4_128, 9_248, 18_496,
                           36_928, 650]  # fmt: skip
    assert [layer.name for layer in s.layers[:3]] == ["Conv2d-1", "ReLU-2", "Conv2d-3"]
    pool1 = s.layers[6]
    assert pool1.name == "MaxPool2d-7"
    assert (pool1.rf, pool1.jump) == (8, 2)  # 3x3 convs give 3, 5, 7; the 2x2 pool adds 1
    assert s.layers[-1].output_shape == [-1, 10, 1, 1]
    assert (s.rf, s.jump) == (42, 4)


def test_model_stats_of_seed():
    assert model_stats(build("seed")) == {
        "params": 258_602,
        "macs": summarize(build("seed")).macs,
        "rf": 42,
        "jump": 4,
    }


def test_has_linear():
    assert not has_linear(build("seed"))
    assert has_linear(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))


# ----------------------------------------------------------------------------- torchinfo


def bn_dropout_gap_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.05),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 10, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def dilated_grouped_linear_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, dilation=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, groups=4),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 13 * 13, 10),
    )


def unknown_layer_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3))


def residual_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), Residual(inplace=True))


def in_place_relu_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3))


def non_square_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, (3, 1)), nn.Conv2d(4, 4, (1, 3)))


# Every model the tests above work by hand, the seed, and a few mixed stacks.
CASES = {
    **{name[5:]: build for name, build in dict(globals()).items() if name.startswith("case_")},
    "seed": lambda: build("seed"),
    "view_then_linear": ViewThenLinear,
    "bn_dropout_gap": bn_dropout_gap_net,
    "dilated_grouped_linear": dilated_grouped_linear_net,
    "unknown_layer": unknown_layer_net,
    "residual": residual_net,
    "in_place_relu": in_place_relu_net,
    "non_square": non_square_net,
    "richer_net": lambda: build(
        {
            "blocks": [[4, 8], [8, 8]],
            "squeeze": [4],
            "kind": ["separable", "grouped"],
            "bottleneck": [0, 4],
            "residual": [False, True],
            "se": [2, 2],
        }
    ),
}


def test_cases_cover_every_hand_worked_stack():
    assert len(CASES) >= 26 and "transposed_conv_k3_s2_gives_units_of_two_sizes" in CASES


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_shapes_and_params_agree_with_torchinfo(build):
    model = build()
    ours = summarize(model).layers
    theirs = [
        layer
        for layer in torchinfo.summary(model, input_size=(1, 1, 28, 28), verbose=0).summary_list
        if layer.is_leaf_layer
    ]
    assert [layer.name.split("-")[0] for layer in ours] == [layer.class_name for layer in theirs]
    assert [layer.output_shape[1:] for layer in ours] == [layer.output_size[1:] for layer in theirs]
    assert [layer.params for layer in ours] == [layer.num_params for layer in theirs]


def test_macs_agree_with_torchinfo_without_biases():
    # torchinfo counts a bias as one more multiply-add per output; without biases both agree.
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, bias=False),
        nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False),
        nn.Flatten(),
        nn.Linear(8 * 12 * 12, 10, bias=False),
    )
    info = torchinfo.summary(model, input_size=(1, 1, 28, 28), verbose=0)
    assert summarize(model).macs == info.total_mult_adds


def test_macs_of_single_layers_by_hand():
    # 3 -> 8 channels, 3x3, padding 1 on 10x10: 8*10*10 outputs, each 3*3*3 multiply-adds.
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    assert summarize(conv, (3, 10, 10)).macs == 8 * 10 * 10 * 27 == 21_600
    # groups=2: each output sees 4/2 = 2 input channels; 6x6 -> 4x4: 8*4*4 * 2*3*3.
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    assert summarize(grouped, (4, 6, 6)).macs == 8 * 4 * 4 * 18 == 2_304
    linear = nn.Sequential(nn.Flatten(), nn.Linear(20, 5), nn.ReLU())
    assert [layer.macs for layer in summarize(linear, (1, 4, 5)).layers] == [0, 100, 0]


# ----------------------------------------------------------------------------- totals and state


def test_totals_follow_torchsummary_formulas():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    s = summarize(model)
    assert s.input_mb == pytest.approx(28 * 28 * 4 / 1024**2)
    # two layers of 2*28*28 outputs, values and gradients, 4 bytes each
    assert s.forward_backward_mb == pytest.approx(2 * (2 * 2 * 28 * 28) * 4 / 1024**2)
    assert s.params_mb == pytest.approx(20 * 4 / 1024**2)
    assert s.total_mb == pytest.approx(s.input_mb + s.forward_backward_mb + s.params_mb)


def test_frozen_parameters_are_non_trainable():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    for p in model[0].parameters():
        p.requires_grad = False
    s = summarize(model)
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (24, 4, 20)
    assert [layer.trainable_params for layer in s.layers] == [0, 4]


def test_summarize_keeps_mode_and_state():
    model = bn_dropout_gap_net()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks for m in model.modules())


def test_parse_shape():
    assert parse_shape("1,28,28") == (1, 28, 28)
    for bad in ["1,28", "a,b,c", "1,0,28", ""]:
        with pytest.raises(MnistlabError, match="--input"):
            parse_shape(bad)


# ----------------------------------------------------------------------------- command line


def test_cli_summary_table(capsys):
    assert cli.main(["summary", "seed"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 258,602" in out
    assert "Conv2d-23" in out
    # Conv2d-21 is a 3x3 conv on the last 3x3 map: its 1x1 output sees all of it, a global
    # layer; the last map's units are 4 px apart (two 2x2 pools).
    assert "Receptive field: 42, global (the whole input)  jump: 4 (last map)" in out


def test_cli_summary_json(capsys):
    assert cli.main(["summary", "seed", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "seed"
    assert doc["total_params"] == 258_602
    assert (doc["rf"], doc["jump"]) == (42, 4)
    assert len(doc["layers"]) == 23
    assert doc["layers"][0]["output_shape"] == [-1, 32, 28, 28]


def test_cli_summary_unknown_model(capsys):
    assert cli.main(["summary", "nosuchmodel"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "nosuchmodel" in lines[0]


def test_cli_summary_input_too_small(capsys):
    assert cli.main(["summary", "seed", "--input", "1,8,8"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "1,8,8" in err


def test_cli_models_lists_seed(capsys):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    seed_line = next(line for line in lines if line.startswith("seed "))
    assert "258,602" in seed_line and " 42 " in seed_line
    assert "The seed notebook's" in seed_line


# ----------------------------------------------------------------------------- any model


USER_MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding="same")
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x))


def needs_width(width):
    return Net(width)


def not_a_model():
    return 3


def broken():
    raise ValueError("no weights here")


COUNT = 7
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(USER_MODEL)
    return path


def test_cli_summary_of_a_class_in_a_file(user_file, capsys):
    assert cli.main(["summary", f"{user_file}:Net", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # conv 'same' 3x3: 4*9 + 4 = 40 params, 28x28 kept; the pool over 28 units of RF 3
    # ([u-1, u+2)) covers [-1, 29): RF 30, jump 1, global
    assert [layer["output_shape"] for layer in doc["layers"]] == [[-1, 4, 28, 28], [-1, 4, 1, 1]]
    assert doc["total_params"] == 40
    assert (doc["rf"], doc["jump"], doc["is_global"]) == (30, 1, True)


def test_cli_summary_of_a_factory_in_a_module(capsys):
    assert cli.main(["summary", "mnistlab.models.compact:gap_tiny"]) == 0
    assert "Total params: 4,736" in capsys.readouterr().out  # as `mnistlab models` lists it


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no_such_package.models:Net", "no module 'no_such_package.models'"),
        ("mnistlab.models.compact:no_such_model", "has no attribute 'no_such_model'"),
        ("mnistlab.models.summary:BYTES_PER_VALUE", "'BYTES_PER_VALUE' is a int, not a class"),
        ("mnistlab.models.summary:parse_shape", "calling it raised TypeError"),
        ("mnistlab.models:list_models", "returned a list, not an nn.Module"),
        ("mnistlab.models:", "no callable named after ':'"),
        ("{dir}/missing.py:Net", "no file"),
        ("{file}:needs_width", "calling it raised TypeError"),
        ("{file}:not_a_model", "returned a int, not an nn.Module"),
        ("{file}:broken", "calling it raised ValueError: no weights here"),
        ("{file}:COUNT", "is a int, not a class or function"),
    ],
)
def test_cli_summary_bad_spec_is_one_line(spec, problem, user_file, capsys):
    spec = spec.format(file=user_file, dir=user_file.parent)
    assert cli.main(["summary", spec]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mnistlab: error: model {spec!r}: ")
    assert problem in lines[0]
    assert "package.module:callable or path/to/file.py:callable" in lines[0]


def test_cli_summary_of_a_file_that_fails_to_import(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text("import no_such_package_here\n")
    assert cli.main(["summary", f"{path}:Net"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "raised ModuleNotFoundError" in err


def test_summary_object_prints_renders_and_serialises():
    s = summarize(case_global_max_pool_counts_padding_and_reports_the_last_jump())
    assert str(s) == format_table(s)
    assert "Receptive field: 29, global (the whole input)  jump: 2 (last map)" in str(s)
    page = s._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 1 + 3
    assert "<td>29 global</td>" in page
    doc = s.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert [row["name"] for row in s.rows] == ["Conv2d-1", "AdaptiveMaxPool2d-2", "Conv2d-3"]
    assert s.rows[1]["rf"] == 29 and s.rows[1]["is_global"] is True


def test_macs_of_a_transposed_conv_by_hand():
    # Groups 2: each of the 2*5*5 input values is scattered to 6/2 = 3 channels * 3*3 taps:
    # 50 * 3 * 9 = 1,350 multiply-adds. (Counting per output value, as for Conv2d, would give
    # 6*11*11 outputs * (2/2) * 9 = 6,534, which overcounts the taps that land on nothing.)
    model = nn.Sequential(nn.ConvTranspose2d(2, 6, 3, stride=2, groups=2, bias=False))
    s = summarize(model, (2, 5, 5))
    assert s.layers[0].output_shape == [-1, 6, 11, 11]  # (5 - 1)*2 + 3 = 11
    assert s.macs == 1_350


def test_cli_summary_of_a_user_model_whose_forward_fails(capsys):
    assert cli.main(["summary", "torch.nn:Upsample"]) == 1  # neither size nor scale_factor
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "model 'torch.nn:Upsample' fails on input shape 1,28,28 (ValueError: " in err
