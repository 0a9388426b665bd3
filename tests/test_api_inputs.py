"""`ml.predict` takes what a PyTorch user has in hand: paths, PIL images, arrays and tensors in
the usual layouts, grayscale or colour; anything else is one clear exception naming it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mnistlab as ml
from mnistlab.errors import MnistlabError
from mnistlab.inference.classify import prepare

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
FIVE = DIGITS / "five.gif"


@pytest.fixture(scope="module")
def final():
    return ml.load("final", device="cpu")


@pytest.fixture(scope="module")
def seven() -> np.ndarray:
    """A 28x28 MNIST-style seven (white ink on black), uint8."""
    return np.round(prepare(DIGITS / "seven.png") * 255).astype(np.uint8)


def test_a_pil_image_is_read_like_its_file(final) -> None:
    from_file = ml.predict(FIVE, final, device="cpu")[0]
    with Image.open(FIVE) as image:
        from_pil = ml.predict(image, final, device="cpu")[0]
    assert from_pil.prediction == from_file.prediction == 5
    np.testing.assert_allclose(from_pil.probabilities, from_file.probabilities, atol=1e-6)


def test_every_layout_of_the_same_pixels_gives_the_same_answer(final, seven) -> None:
    gray = seven.astype(np.float32) / 255
    rgb = np.repeat(seven[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 255, np.uint8)], axis=2)
    layouts = {
        "[H, W] uint8": seven,
        "[H, W] float": gray,
        "[N, H, W]": seven[None],
        "[N, 1, H, W]": seven[None, None],
        "[N, 1, H, W] tensor": torch.from_numpy(gray)[None, None],
        "[H, W, 3]": rgb,
        "[H, W, 4]": rgba,
        "[N, H, W, 3]": rgb[None],
        "[N, 3, H, W]": np.moveaxis(rgb, 2, 0)[None],
        "list of PIL": [Image.fromarray(seven)],
    }
    answers = {
        name: ml.predict(images, final, preprocess=False, device="cpu")
        for name, images in layouts.items()
    }
    for name, results in answers.items():
        assert len(results) == 1, name
        assert results.labels.tolist() == [7], name
        np.testing.assert_allclose(
            results.probabilities, answers["[H, W] uint8"].probabilities, atol=1e-5, err_msg=name
        )


def test_results_stack_for_a_batch_and_name_their_classes(final, seven) -> None:
    results = ml.predict(np.stack([seven, seven[:, ::-1]]), final, preprocess=False)
    assert results.probabilities.shape == (2, 10) and results.labels.shape == (2,)
    np.testing.assert_allclose(results.probabilities.sum(axis=1), 1, atol=1e-5)
    assert results.names == [str(label) for label in results.labels]
    assert results[0].name == "7" and results[0].as_dict()["name"] == "7"


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (np.zeros((2, 3, 4, 5, 6), np.uint8), ["shape (2, 3, 4, 5, 6)"]),
        (np.zeros((0, 28, 28), np.uint8), ["no pixels"]),
        (np.zeros((28, 28), bool), ["dtype bool"]),
        (np.zeros((28, 28), np.complex64), ["dtype complex64"]),
        (np.full((28, 28), 300, np.int64), ["0 to 300"]),
        (np.full((28, 28), np.nan, np.float32), ["NaN"]),
        # a loader's batch is normalised: say so, and how to get pixels back
        (np.full((1, 1, 28, 28), -0.4242, np.float32), ["-0.424", "normalised"]),
        ({"not": "an image"}, ["a dict"]),
        ([], ["is empty"]),
        ([Path("a.png"), 3], ["int at index 1"]),
        ("no/such/file.png", ["no/such/file.png", "no such file"]),
    ],
)
def test_bad_input_is_one_exception_naming_it(final, images, words) -> None:
    with pytest.raises(MnistlabError) as raised:
        ml.predict(images, final, preprocess=False)
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_missing_file_raises_before_any_model_is_loaded(monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("mnistlab.api._resolve", never)
    with pytest.raises(MnistlabError, match="missing.png: no such file"):
        ml.predict([FIVE, "missing.png"])
    with pytest.raises(MnistlabError, match="images_or_paths="):
        ml.predict(np.zeros((2, 3, 4, 5, 6)))


def test_errors_keep_answers_the_rest(final) -> None:
    results = ml.predict([FIVE, "missing.png"], final, errors="keep")
    assert results[0].prediction == 5 and "no such file" in results[1].error
    assert results.labels.tolist() == [5, -1] and np.isnan(results.probabilities[1]).all()
    with pytest.raises(MnistlabError, match="errors='ignore'"):
        ml.predict(FIVE, final, errors="ignore")


def test_summary_takes_every_spec_load_takes(tmp_path, data_dir) -> None:
    result = ml.train(
        "gap_tiny",
        epochs=1,
        out=tmp_path / "run",
        device="cpu",
        progress=False,
        console=False,
        data_dir=data_dir,
        limit_train=64,
        limit_test=50,
    )
    expected = ml.summary("gap_tiny").to_dict()
    for spec in (
        result,
        result.run_dir,
        str(result.run_dir / "model.pt"),
        result.run_dir / "checkpoint.pt",
    ):
        assert ml.summary(spec).to_dict() == expected, spec
    shipped = ml.summary("final")
    assert shipped.to_dict() == ml.summary(ml.load("final")).to_dict()


def test_a_partial_trains_and_its_run_asks_for_the_model_to_load(tmp_path, data_dir) -> None:
    import functools

    from torch import nn

    class Net(nn.Module):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3)
            self.head = nn.Conv2d(width, 10, 1)

        def forward(self, x):
            return self.head(self.conv(x).relu()).mean((2, 3)).log_softmax(1)

    result = ml.train(
        functools.partial(Net, width=6),
        epochs=1,
        out=tmp_path / "run",
        device="cpu",
        progress=False,
        console=False,
        data_dir=data_dir,
    )
    assert result.model.conv.out_channels == 6 and result.config.name == "Net"
    with pytest.raises(MnistlabError, match="pass the model"):
        ml.load(result.run_dir)
    assert ml.load(result.run_dir, model=Net(width=6)).conv.out_channels == 6
