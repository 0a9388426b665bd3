"""`ml.inspect` and `mnistlab inspect`: the receptive field drawn for each layer is checked
against the gradient of that unit, computed here independently of the tool, for the seed
network, the shipped final, a [net] network and a user's own module."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mnistlab.api as api
from mnistlab.cli import main
from mnistlab.data import datasets as data
from mnistlab.errors import MnistlabError
from mnistlab.inference.inspection import Inspection, inspect
from mnistlab.models.inspect import Box, UnitField, linear_copy
from mnistlab.runs.inspect_figures import drawn_box

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
SEVEN = DIGITS / "seven.png"

# A [net] table with a gap: the first layer's dilated kernel skips every other pixel.
NET_TABLE = {
    "layers": [
        {"type": "conv", "out": 4, "dilation": 2},
        {"type": "conv", "out": 8, "padding": 1},
        {"type": "maxpool", "kernel": 3, "stride": 2, "padding": 1},
        {"type": "conv", "out": 8, "stride": 2},
        {"type": "gap"},
        {"type": "conv", "out": 10, "kernel": 1, "relu": False, "bn": False},
    ]
}


class OwnNet(nn.Module):
    """A user's network: a strided padded conv, a dilated ceil-mode max-pool, 'same' padding,
    an in-place activation, and a linear head on the flattened map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 5, stride=2, padding=2)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)
        self.body = nn.Sequential(nn.Conv2d(4, 6, 3, padding="same"), nn.LeakyReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 7 * 7, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.pool(self.act(self.stem(x)))))


@pytest.fixture(autouse=True)
def one_thread():
    """One image at a time: one thread is as quick, and fights no other test for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit_gradients(model: nn.Module, x: torch.Tensor, units: list[tuple[str, tuple[int, int]]]):
    """d(sum over channels of each unit) / d(input), [H, W] each, for (module path, (y, x))
    pairs, from hooks on those modules: the test's own reckoning, not the tool's."""
    net = copy.deepcopy(model).double().eval()
    seen = {}
    handles = [
        net.get_submodule(path).register_forward_hook(
            lambda m, a, out, path=path: seen.setdefault(path, out.clone())
        )
        for path in {path for path, _ in units}
    ]
    x = x.double().clone().requires_grad_(True)
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    grads = []
    for path, (y, col) in units:
        out = seen[path]
        value = out[0, :, y, col] if out.dim() == 4 else out[0]
        (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
        grads.append(grad[0].sum(0).numpy())
    return grads


def box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    top, left, bottom, right = box
    mask = np.zeros(shape, dtype=bool)
    mask[max(top, 0) : bottom, max(left, 0) : right] = True
    return mask


def bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def check_drawn_boxes(result: Inspection, model: nn.Module, gaps: bool = False) -> int:
    """Every layer's drawn box holds every pixel its unit's gradient reaches; in the linear
    copy those pixels reach each edge of it, and fill it unless the network has gaps.
    Returns how many boxes were checked."""
    mean, std = data.MNIST.mean, data.MNIST.std
    x = ((torch.from_numpy(result.image) - mean) / std)[None, None]
    drawn, units = [], []
    for view in result.layers:
        fig = result.figure(view.number)
        for kind, unit in (("centre", view.centre), ("picked", view.picked)):
            if unit is not None and unit.box is not None:
                box = drawn_box(fig, kind)
                assert box is not None, f"{view.title}: no {kind} box drawn"
                drawn.append((view.title, box))
                units.append((view.layer.path, unit.unit))
    grads = unit_gradients(model, x, units)
    linear_grads = unit_gradients(linear_copy(model), x, units)
    for (title, box), grad, lin in zip(drawn, grads, linear_grads, strict=True):
        inside = box_mask(box, result.image.shape)
        assert not ((grad != 0) & ~inside).any(), f"{title}: gradient outside the box"
        assert bounds(lin != 0) == box, f"{title}: the linear copy's reach differs"
        if not gaps:
            assert (lin != 0)[inside].all(), f"{title}: holes in the box"
    assert result.checked  # and the tool's own verdict agrees
    return len(drawn)


@pytest.fixture(scope="module")
def final() -> Inspection:
    return inspect("final", image=SEVEN, device="cpu")


@pytest.fixture
def net_toml(tmp_path: Path) -> Path:
    """An experiment file whose [net] table is a three-view network: quick to draw."""
    path = tmp_path / "tiny-net.toml"
    path.write_text(
        'model = "net"\n[net]\nlayers = [\n  { type = "conv", out = 4 },\n'
        '  { type = "maxpool" },\n  { type = "conv", out = 10, kernel = 13, relu = false, '
        "bn = false },\n]\n"
    )
    return path


# ----------------------------------------------------------------------------- the four networks


def test_seed_network_boxes_match_the_gradients():
    from mnistlab.models import build

    seed = build("seed")  # untrained: a receptive field is the architecture's
    result = inspect(seed, image=SEVEN, unit=("Conv2d-12", 2, 3), device="cpu")
    assert [v.layer.rf for v in result.layers][-1] == 42  # the summary's, padding counted
    assert check_drawn_boxes(result, seed) == len(result.layers) + 1  # and the picked unit
    last = result.layers[-1].centre
    assert last.box == Box(-7, -7, 35, 35) and last.image_box == Box(0, 0, 28, 28)


def test_shipped_final_boxes_match_the_gradients(final):
    result, model = final, api.load("final", device="cpu")
    assert result.prediction is not None and result.prediction[0] == "7"
    assert check_drawn_boxes(result, model) == len(result.layers)
    assert result.checked and result.network.exact


def test_net_table_boxes_match_the_gradients_with_a_dilated_first_layer():
    from mnistlab.models import build

    torch.manual_seed(0)
    result = inspect(NET_TABLE, image=SEVEN, device="cpu")
    torch.manual_seed(0)
    model = build(NET_TABLE)  # the same weights: built after the same seed
    assert check_drawn_boxes(result, model, gaps=True) == len(result.layers)
    first = result.layers[0].centre
    # A 3x3 kernel of dilation 2 sees every other pixel of a 5x5 box: 16 holes in it.
    assert first.box.height == 5 and first.holes == 25 - 9 and first.spans


def test_own_module_boxes_match_the_gradients():
    torch.manual_seed(0)
    model = OwnNet()
    result = inspect(model, image=SEVEN, unit="stem,5,9", device="cpu")
    assert check_drawn_boxes(result, model, gaps=True) == len(result.layers) + 1
    names = [view.title for view in result.layers]
    assert names == ["Conv2d-1 + ReLU-2", "MaxPool2d-3", "Conv2d-4 + LeakyReLU-5 + Flatten-6",
                     "Linear-7"]  # fmt: skip
    head = result.layers[-1]
    assert head.maps is None and head.centre.image_box == Box(0, 0, 28, 28)  # global
    assert result.layers[0].picked.unit == (5, 9)


def test_the_model_passed_is_left_as_it_was():
    model = OwnNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inspect(model, image=SEVEN, device="cpu")
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- the numbers


def test_a_unit_field_reports_what_lies_outside_and_the_holes():
    gradient = np.zeros((6, 6))
    gradient[1, 1] = gradient[4, 4] = 1.0
    linear = np.zeros((6, 6))
    linear[1:4, 1:4] = 1.0
    linear[2, 2] = 0.0
    unit = UnitField((0, 0), Box(1, 1, 4, 4), gradient, linear)
    assert unit.outside == 1 and not unit.checked
    assert unit.spans and unit.holes == 1
    assert Box(-2, -2, 3, 3).clip(6, 6) == Box(0, 0, 3, 3)
    assert Box(-5, -5, -1, -1).clip(6, 6) is None


def test_a_network_whose_rf_summary_cannot_follow_gets_no_box():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 10, 26)

        def forward(self, x):
            # a functional pool between: summary cannot follow it
            return self.b(nn.functional.max_pool2d(self.a(x), 1)).flatten(1)

    result = inspect(Functional(), image=SEVEN, device="cpu")
    first, second = result.layers
    assert first.centre.box is not None and first.centre.checked
    assert second.centre.box is None and "RF unknown" in second.note
    assert second.note in str(result)  # the table says why instead of a box


# ----------------------------------------------------------------------------- the figures


def test_figures_are_returned_for_notebooks_by_number_and_name(final):
    result = final
    assert list(result.figures)[0] == "kernels"
    assert result.figure("Conv2d-4") is result.figure(2)
    assert result.figure("ReLU-2") is result.figure("Conv2d-1")  # any layer of the view
    assert "4 kernels 3x3" in result.figure("kernels").axes[0].get_title()
    with pytest.raises(MnistlabError, match="no such layer; give 'kernels', a number from 1"):
        result.figure("Conv2d-99")
    text = str(result)
    assert text.startswith(f"final on {SEVEN}: predicted 7 (")
    assert re.search(r"^Conv2d-4 +16x24x24 +5 +rows 12-16, columns 12-16 +yes$", text, re.M)


def test_the_cli_writes_a_page_and_a_png_per_layer(tmp_path, capsys, net_toml):
    out = tmp_path / "net"
    argv = ["inspect", str(net_toml), "--image", str(SEVEN), "--unit", "MaxPool2d-4,1,8"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'index.html'} and 4 figures" in printed
    assert "  picked (1, 8)" in printed
    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["01-conv2d-1.png", "02-maxpool2d-4.png", "03-conv2d-5.png", "kernels.png"]
    assert all(f'src="{name}"' in page for name in pngs)
    assert "Picked unit (1, 8) sees rows 2-5, columns 16-19 (4x4)" in page
    # Again into the same folder: replaced, not refused.
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0


def test_the_cli_takes_a_test_digit(tmp_path, capsys, data_dir, net_toml):
    out = tmp_path / "digit"
    argv = ["inspect", str(net_toml), "--digit", "7", "--out", str(out)]
    assert main([*argv, "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    assert "on mnist test image 7 (label 7)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--digit", "100"], "--digit 100: the mnist test split has 100 images; give 0 to 99"),
        (["--digit", "-1"], "--digit -1: the mnist test split has 100 images; give 0 to 99"),
        (["--image", "missing.png"], "--image missing.png: no such file; give an image file"),
        (["--unit", "Conv2d-4,24,0"], "--unit Conv2d-4,24,0: Conv2d-4's map is 24x24; give a row"),
        (["--unit", "Conv2d-99,1,1"], "--unit Conv2d-99,1,1: no layer 'Conv2d-99'; give a name"),
        (["--unit", "Conv2d-4,1"], "--unit Conv2d-4,1: expected LAYER,Y,X"),
        (["--unit", "Conv2d-4,a,1"], "--unit Conv2d-4,a,1: the row and column must be whole"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(argv, message, tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    code = main(["inspect", "final", *argv, "--out", str(out), "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"mnistlab: error: {message}"), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_an_unknown_model_names_what_can_be_given(tmp_path, capsys):
    assert main(["inspect", "no_such_model", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'; registered models:" in err
    assert "a run directory, a weights file, an experiment .toml or 'final'" in err


def test_a_folder_holding_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["inspect", "final", "--image", str(SEVEN), "--out", str(tmp_path)]) == 1
    assert "holds notes.txt, which is not part of an inspection" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_python_callers_see_keywords():
    with pytest.raises(MnistlabError, match=r"^unit=\('Conv2d-4', 30, 0\): Conv2d-4's map"):
        inspect("final", image=SEVEN, unit=("Conv2d-4", 30, 0), device="cpu")
    with pytest.raises(MnistlabError, match="^give digit= or image=, not both$"):
        inspect("final", digit=1, image=SEVEN)
    with pytest.raises(MnistlabError, match=r"^digit='3': must be a whole number"):
        inspect("final", digit="3")


def test_the_same_boxes_and_maps_on_each_device(device, final):
    result = inspect("final", image=SEVEN, device=device)
    assert result.checked and result.network.exact
    for here, on_cpu in zip(result.layers, final.layers, strict=True):
        assert here.centre.reach == on_cpu.centre.reach
        assert here.centre.linear_reach == on_cpu.centre.linear_reach
        np.testing.assert_allclose(here.maps, on_cpu.maps, rtol=1e-4, atol=1e-5)
