"""`mnistlab predict`: MNIST-style preprocessing, per-file errors, and accuracy on real digits."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnistlab import weights
from mnistlab.cli import main
from mnistlab.data.datasets import Loader, load_split
from mnistlab.errors import MnistlabError
from mnistlab.inference import classify as predict
from mnistlab.inference import preprocess
from mnistlab.models import build, list_models
from mnistlab.models.summary import count_parameters
from mnistlab.runs.checkpoint import save_model
from mnistlab.runs.rundir import load_model
from mnistlab.weights import shipped_record, shipped_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"
EXAMPLE_DIGITS = {"zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7}


def smallest_model_name() -> str:
    return min(list_models(), key=lambda name: count_parameters(build(name)))


@pytest.fixture(scope="module")
def random_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model.pt of the smallest registered model with random weights."""
    torch.manual_seed(0)
    name = smallest_model_name()
    path = tmp_path_factory.mktemp("random-model") / "model.pt"
    save_model(path, name, build(name).state_dict(), config={}, test_acc=10.0)
    return path


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, dict]:
    path = shipped_weights()
    if not path.is_file():
        pytest.skip("the shipped model weights/final.pt is not in this checkout")
    return load_model(path)


def draw_seven(size: tuple[int, int] = (800, 600), box=(430, 120, 230, 400), pen=40) -> Image.Image:
    """A large black-on-white 7 away from the centre of a page: box is (left, top, w, h)."""
    image = Image.new("L", size, 255)
    left, top, width, height = box
    draw = ImageDraw.Draw(image)
    corner = (left + width, top)
    draw.line([(left, top), corner, (left + width * 0.35, top + height)], fill=0, width=pen)
    return image


def ink_bbox(image: np.ndarray, threshold: float = 0.2) -> tuple[int, int]:
    """(height, width) of the box holding the pixels above threshold."""
    rows = np.flatnonzero(image.max(axis=1) > threshold)
    cols = np.flatnonzero(image.max(axis=0) > threshold)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# ----------------------------------------------------------------------------- preprocessing


def test_offcentre_black_on_white_digit_becomes_centred_white_on_black():
    gray = np.asarray(draw_seven(), dtype=np.float32) / 255
    x = preprocess.mnist_style(gray)

    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.max() > 0.95  # ink is bright
    assert np.median(x) < 0.01  # background is black
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    assert border.max() < 0.01  # the digit lies wholly inside the field
    row, col = preprocess.centre_of_mass(x)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    assert max(ink_bbox(x)) in (19, 20)


def test_light_and_dark_paper_give_the_same_input():
    gray = np.asarray(draw_seven(), dtype=np.float32) / 255
    np.testing.assert_allclose(preprocess.mnist_style(1 - gray), preprocess.mnist_style(gray))


def test_grey_paper_and_grey_ink_are_stretched_to_black_and_white():
    gray = np.asarray(draw_seven(), dtype=np.float32) / 255
    faded = 0.35 + 0.4 * gray  # ink at 0.35, paper at 0.75
    np.testing.assert_allclose(
        preprocess.mnist_style(faded), preprocess.mnist_style(gray), atol=1e-5
    )


def test_every_image_mode_gives_the_same_input():
    page = draw_seven(size=(300, 260), box=(40, 30, 120, 200), pen=18)
    pixels = np.asarray(page)
    transparent = Image.new("RGBA", page.size, (0, 0, 0, 0))
    transparent.putalpha(Image.fromarray(255 - pixels))  # black ink, the rest see-through
    variants = {
        "L": page,
        "1": page.convert("1"),
        "RGB": page.convert("RGB"),
        "P": page.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
        "LA": page.convert("LA"),
        "RGBA transparent": transparent,
        "I;16": Image.fromarray(pixels.astype(np.uint16) * 257),
        "I": Image.fromarray(pixels.astype(np.int32) * 257),
        "F": Image.fromarray(pixels.astype(np.float32) / 255),
        "CMYK": page.convert("CMYK"),
        "white on black": Image.fromarray(255 - pixels),
    }
    expected = preprocess.mnist_style(preprocess.to_grayscale(page))
    for mode, image in variants.items():
        got = preprocess.mnist_style(preprocess.to_grayscale(image))
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=mode)


def test_every_file_format_is_read(tmp_path):
    page = draw_seven(size=(300, 260), box=(40, 30, 120, 200), pen=18)
    expected = preprocess.mnist_style(preprocess.to_grayscale(page))
    for name in ("a.png", "a.bmp", "a.gif", "a.jpg"):
        page.save(tmp_path / name)
        got = preprocess.mnist_style(preprocess.read_grayscale(tmp_path / name))
        if name.endswith(".jpg"):  # lossy: edges move a little
            assert np.abs(got - expected).mean() < 0.02
        else:
            np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)


def test_centring_never_pushes_ink_out_of_the_field():
    patch = np.zeros((20, 20), dtype=np.float32)
    patch[:3, :3] = 1  # all mass in one corner: centring would shift by about 13 pixels
    field = preprocess.place_centred(patch)
    assert field.sum() == patch.sum()


def test_fit_box_keeps_the_aspect_ratio():
    assert preprocess.fit_box(np.ones((200, 50), dtype=np.float32)).shape == (20, 5)
    assert preprocess.fit_box(np.ones((3, 300), dtype=np.float32)).shape == (1, 20)


@pytest.mark.parametrize(
    "gray, message",
    [
        (np.zeros((0, 0), dtype=np.float32), "empty image"),
        (np.ones((50, 40), dtype=np.float32), "no ink"),
        (np.full((50, 40), 0.5, dtype=np.float32) + np.eye(50, 40) * 0.05, "no ink"),
    ],
)
def test_images_without_a_digit_are_errors(gray, message):
    with pytest.raises(MnistlabError, match=message):
        preprocess.mnist_style(gray)


# ----------------------------------------------------------------------------- the command


def write_digit(path: Path) -> Path:
    draw_seven(size=(200, 160), box=(100, 20, 60, 110), pen=10).save(path)
    return path


def zero_size_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)  # 0x0 pixels, 8-bit gray
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """One file for each way an input can be unusable, with words its error must contain."""
    (folder / "notes.png").write_text("not an image\n")
    (folder / "empty.png").write_bytes(b"")
    Image.new("L", (64, 48), 255).save(folder / "blank.png")
    Image.new("1", (8000, 7000)).save(folder / "huge.png")  # 56 megapixels, tiny on disk
    (folder / "subdir.png").mkdir()
    return {
        "not a readable image": folder / "notes.png",
        "empty file": folder / "empty.png",
        "0x0": zero_size_png(folder / "zero.png"),
        "no ink": folder / "blank.png",
        "too large": folder / "huge.png",
        "directory": folder / "subdir.png",
        "no such file": folder / "missing.png",
    }


def test_bad_files_are_reported_one_line_each_and_the_others_predicted(
    tmp_path, random_model_file, capsys
):
    good = [write_digit(tmp_path / "first.png"), write_digit(tmp_path / "last.jpg")]
    bad = bad_files(tmp_path)
    files = [good[0], *bad.values(), good[1]]

    code = main(["predict", "--checkpoint", str(random_model_file), *map(str, files)])

    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(good[0]), str(good[1])]
    for line in lines:
        digits = [int(d) for d in line.split("(")[1].replace(",", "").split()[::2]]
        assert line.split()[1] == str(digits[0]) and len(set(digits)) == 3
    errors = err.splitlines()
    assert len(errors) == len(bad)
    for (words, path), line in zip(bad.items(), errors, strict=True):
        assert line.startswith(f"mnistlab: error: {path}: ") and words in line, line


def test_json_output_has_one_entry_per_file(tmp_path, random_model_file, capsys):
    good = write_digit(tmp_path / "digit.png")
    blank = tmp_path / "blank.bmp"
    Image.new("RGB", (30, 30), "white").save(blank)

    code = main(
        ["predict", "--json", "--checkpoint", str(random_model_file), str(good), str(blank)]
    )

    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["file"] for r in result] == [str(good), str(blank)]
    assert "no ink" in result[1]["error"] and "prediction" not in result[1]
    top3 = result[0]["top3"]
    assert result[0]["prediction"] == top3[0][0]
    probs = [p for _, p in top3]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_all_good_files_exit_zero(tmp_path, random_model_file, capsys):
    files = [str(write_digit(tmp_path / f"{i}.png")) for i in range(3)]
    assert main(["predict", "--checkpoint", str(random_model_file), *files]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_show_preprocessed_writes_what_the_model_saw(tmp_path, random_model_file, capsys):
    first = tmp_path / "a" / "digit.png"
    second = tmp_path / "b" / "digit.gif"  # same stem: must not overwrite the first
    first.parent.mkdir()
    second.parent.mkdir()
    write_digit(first)
    Image.fromarray(255 - np.asarray(draw_seven())).save(second)
    shown = tmp_path / "shown"

    args = ["predict", "--checkpoint", str(random_model_file), "--show-preprocessed", str(shown)]
    assert main([*args, str(first), str(second)]) == 0

    assert sorted(p.name for p in shown.iterdir()) == ["digit-2.png", "digit.png"]
    for source, written in ((first, "digit.png"), (second, "digit-2.png")):
        image = Image.open(shown / written)
        assert image.size == (28, 28) and image.mode == "L"
        expected = np.round(predict.prepare_file(source) * 255)
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_no_preprocess_feeds_28x28_images_as_they_are(tmp_path, random_model_file, capsys):
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:16] = 255  # a white 1 on black, MNIST style
    Image.fromarray(pixels).save(tmp_path / "one.png")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(tmp_path / "big.png")

    np.testing.assert_array_equal(
        predict.prepare_file(tmp_path / "one.png", preprocess_image=False), pixels / 255
    )
    files = [str(tmp_path / "one.png"), str(tmp_path / "big.png")]
    code = main(["predict", "--no-preprocess", "--checkpoint", str(random_model_file), *files])

    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(files[0])
    assert "40x40" in err and "28x28" in err and len(err.splitlines()) == 1


def test_missing_or_foreign_checkpoint_is_one_line_error(tmp_path, capsys):
    image = str(write_digit(tmp_path / "digit.png"))
    (tmp_path / "foreign.pt").write_bytes(b"\x00" * 100)

    assert main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), image]) == 1
    assert main(["predict", "--checkpoint", str(tmp_path / "foreign.pt"), image]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("mnistlab: error: ") for line in errors)


def test_missing_shipped_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, "shipped_weights", lambda: tmp_path / "weights" / "final.pt")
    assert main(["predict", str(write_digit(tmp_path / "digit.png"))]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "shipped model is missing" in err
    assert "--checkpoint" in err


def test_classify_gives_probabilities_and_leaves_its_input_alone(random_model_file):
    model, meta = load_model(random_model_file)
    images = np.random.default_rng(0).random((300, 28, 28), dtype=np.float32)
    before = images.copy()
    probs = predict.classify(model, images, meta["mean"], meta["std"], batch_size=128)
    assert probs.shape == (300, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(300))
    np.testing.assert_array_equal(images, before)


def test_the_shipped_weights_are_the_model_that_final_json_describes(shipped):
    # The two shipped files must agree: the weights predict uses by default, and the numbers
    # weights/final.json publishes for them.
    model, meta = shipped
    info = shipped_record()
    assert meta["model_name"] == info["model"]
    assert count_parameters(model) == info["params"]
    assert meta["test_acc"] == info["last_test_acc"]


# ----------------------------------------------------------------------------- shipped model


def test_shipped_model_reads_a_drawn_digit(shipped):
    model, meta = shipped
    x = preprocess.mnist_style(np.asarray(draw_seven(), dtype=np.float32) / 255)
    probs = predict.classify(model, x[None], meta["mean"], meta["std"])
    assert probs.argmax().item() == 7


def test_shipped_model_reads_the_example_images(shipped):
    model, meta = shipped
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix != ".py")
    assert {p.stem for p in files} == set(EXAMPLE_DIGITS)
    results = predict.predict_files(model, files, mean=meta["mean"], std=meta["std"])
    assert {Path(r.file).stem: r.prediction for r in results} == EXAMPLE_DIGITS


@pytest.mark.realdata
def test_preprocessing_keeps_mnist_accuracy(shipped, tmp_path):
    """1,000 test digits written as PNG files score as they do as tensors."""
    model, meta = shipped
    images, labels = load_split("mnist", train=False)
    images, labels = images[:1000], labels[:1000]
    files = []
    for i, pixels in enumerate(images.numpy()):
        files.append(tmp_path / f"{i:04d}.png")
        Image.fromarray(pixels).save(files[-1])

    with torch.inference_mode():
        loader = Loader(images, labels, 1000, mean=meta["mean"], std=meta["std"])
        direct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader) / 10
    kwargs = {"mean": meta["mean"], "std": meta["std"]}
    raw = predict.predict_files(model, files, preprocess_image=False, **kwargs)
    processed = predict.predict_files(model, files, **kwargs)

    def accuracy(results: list[predict.Prediction]) -> float:
        return sum(r.prediction == y for r, y in zip(results, labels.tolist(), strict=True)) / 10

    assert accuracy(raw) == direct
    assert abs(accuracy(processed) - direct) <= 0.3
    assert direct > 95  # the shipped model is a trained one
