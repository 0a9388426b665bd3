import json

import pytest
import torch
import torchinfo
from torch import nn

from mnistlab import cli
from mnistlab.errors import MnistlabError
from mnistlab.models import create_model
from mnistlab.summary import has_linear, model_stats, parse_shape, summarize


def rf_chain(model: nn.Module, input_shape=(1, 28, 28)) -> list[tuple[int, int, float]]:
    """(rf, jump, start) after every leaf layer."""
    return [(layer.rf, layer.jump, layer.start) for layer in summarize(model, input_shape).layers]


# ----------------------------------------------------------------------------- receptive field
# Hand-worked with j_out = j_in*s, r_out = r_in + (k_eff-1)*j_in,
# start_out = start_in + ((k_eff-1)/2 - p)*j_in, k_eff = d*(k-1)+1,
# from (r, j, start) = (1, 1, 0.5).


def test_rf_padded_3x3_convs():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # r = 1 + 2*1 = 3, j = 1, start = 0.5 + (1 - 1)*1 = 0.5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 3 + 2 = 5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 5 + 2 = 7
    )
    assert rf_chain(model) == [(3, 1, 0.5), (5, 1, 0.5), (7, 1, 0.5)]


def test_rf_stride_2_conv():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # r = 3, j = 1*2 = 2, start = 0.5 + 0 = 0.5
        nn.Conv2d(4, 4, 3, padding=1),  # r = 3 + 2*2 = 7, j = 2, start = 0.5 + (1 - 1)*2 = 0.5
        nn.Conv2d(4, 4, 3),  # r = 7 + 2*2 = 11, j = 2, start = 0.5 + (1 - 0)*2 = 2.5
    )
    assert rf_chain(model) == [(3, 2, 0.5), (7, 2, 0.5), (11, 2, 2.5)]


def test_rf_tuple_sizes_count_like_ints():
    model = nn.Sequential(nn.Conv2d(1, 4, (3, 3), stride=(2, 2), padding=(1, 1)))
    assert rf_chain(model) == [(3, 2, 0.5)]


def test_rf_dilated_conv():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, dilation=2),  # k_eff = 2*2 + 1 = 5: r = 5, j = 1, start = 0.5 + 2 = 2.5
        nn.Conv2d(4, 4, 3),  # r = 5 + 2 = 7, start = 2.5 + 1 = 3.5
    )
    assert rf_chain(model) == [(5, 1, 2.5), (7, 1, 3.5)]


def test_rf_max_pooling_and_layers_that_keep_it():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),  # r = 3, j = 1, start = 0.5 + 1 = 1.5
        nn.BatchNorm2d(4),  # unchanged
        nn.ReLU(),  # unchanged
        nn.MaxPool2d(2, 2),  # r = 3 + 1*1 = 4, j = 2, start = 1.5 + 0.5*1 = 2.0
        nn.Dropout(0.1),  # unchanged
        nn.Conv2d(4, 4, 3),  # r = 4 + 2*2 = 8, j = 2, start = 2.0 + 1*2 = 4.0
    )
    assert rf_chain(model) == [
        (3, 1, 1.5),
        (3, 1, 1.5),
        (3, 1, 1.5),
        (4, 2, 2.0),
        (4, 2, 2.0),
        (8, 2, 4.0),
    ]


def test_rf_adaptive_pool_covers_its_whole_input():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),  # 28 -> 26: r = 3, j = 1, start = 1.5
        nn.MaxPool2d(2),  # 26 -> 13: r = 4, j = 2, start = 2.0
        nn.AdaptiveAvgPool2d(1),  # kernel 13: r = 4 + 12*2 = 28, j = 26, start = 2 + 6*2 = 14.0
    )
    assert rf_chain(model) == [(3, 1, 1.5), (4, 2, 2.0), (28, 26, 14.0)]


def test_rf_adaptive_pool_to_2x2_is_a_pool_of_half_the_map():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # 28 -> 14: r = 3, j = 2, start = 0.5
        nn.AdaptiveMaxPool2d(2),  # kernel = stride = 7: r = 3 + 6*2 = 15, j = 14, start = 6.5
    )
    assert rf_chain(model) == [(3, 2, 0.5), (15, 14, 6.5)]


def test_rf_linear_on_a_flattened_map_sees_the_whole_map():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),  # 28 -> 14: r = 3, j = 2, start = 0.5
        nn.Flatten(),  # unchanged
        nn.Linear(2 * 14 * 14, 10),  # kernel 14: r = 3 + 13*2 = 29, j = 28, start = 0.5 + 6.5*2
        nn.Linear(10, 10),  # a 1x1 map now: unchanged
    )
    assert rf_chain(model) == [(3, 2, 0.5), (3, 2, 0.5), (29, 28, 13.5), (29, 28, 13.5)]


# ----------------------------------------------------------------------------- seed model


def test_seed_model_layers_params_and_receptive_field():
    s = summarize(create_model("seed"))
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
    assert model_stats(create_model("seed")) == {
        "params": 258_602,
        "macs": summarize(create_model("seed")).macs,
        "rf": 42,
        "jump": 4,
    }


def test_has_linear():
    assert not has_linear(create_model("seed"))
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


@pytest.mark.parametrize(
    "build", [lambda: create_model("seed"), bn_dropout_gap_net, dilated_grouped_linear_net]
)
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
    assert "Receptive field: 42  jump: 4" in out


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
