"""MNIST digits rendered as photos of paper: the conditions `predict` must survive.

Each condition takes a clean scene (ink on paper, random digit size and position) and adds one
difficulty seen in real photos and scans: a frame line near the edge, paper on a darker desk,
a lighting gradient, speckle, JPEG artefacts, ruled or squared paper, coloured ink, a rotated
digit. Everything is drawn from one seeded generator, so a benchmark run is reproducible.

`render` returns a Pillow image, so the benchmark feeds it through the same code path as a
file given to `mnistlab predict` (grayscale conversion, then `preprocess.mnist_style`).
"""

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import nn

from mnistlab.data.datasets import normalization
from mnistlab.errors import MnistlabError
from mnistlab.inference import preprocess
from mnistlab.inference.classify import classify

PAGE_SIDES = (200, 420)  # page width and height are drawn from this range (pixels)
DIGIT_SCALE = (0.3, 0.65)  # the 28x28 field's side as a fraction of the paper's shorter side
MARGIN = 0.06  # the digit's field keeps this fraction of the paper's shorter side from its edges
GREY_LINE = 0.6  # ruled and squared paper lines are 60% grey
BLUE_INKS = ((0.10, 0.15, 0.55), (0.05, 0.20, 0.70), (0.15, 0.10, 0.45))
RED_INKS = ((0.75, 0.10, 0.12), (0.85, 0.15, 0.15), (0.65, 0.05, 0.20))


@dataclass
class Scene:
    """A page being drawn: RGB floats in [0, 1], and where the paper and digit lie."""

    rgb: np.ndarray  # H x W x 3
    paper: tuple[int, int, int, int]  # left, top, width, height of the paper
    paper_level: float


def blank_page(rng: np.random.Generator) -> Scene:
    width, height = (int(v) for v in rng.integers(*PAGE_SIDES, size=2, endpoint=True))
    level = float(rng.uniform(0.85, 1.0))
    rgb = np.full((height, width, 3), level, dtype=np.float32)
    return Scene(rgb, (0, 0, width, height), level)


def digit_alpha(digit: np.ndarray, side: int, angle: float = 0.0) -> np.ndarray:
    """The 28x28 digit (0..255, white ink) as ink coverage in [0, 1] at side x side pixels."""
    image = Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize(
        (side, side), Image.Resampling.BICUBIC
    )
    if angle:
        image = image.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    return np.clip(np.asarray(image, dtype=np.float32) / 255, 0, 1)


def place_ink(
    scene: Scene, alpha: np.ndarray, ink: tuple[float, float, float], rng: np.random.Generator
) -> None:
    """Blend ink into the page at a random place on the paper, clear of its edges."""
    left, top, width, height = scene.paper
    margin = round(MARGIN * min(width, height))
    h, w = alpha.shape
    x = int(rng.integers(left + margin, max(left + margin, left + width - margin - w) + 1))
    y = int(rng.integers(top + margin, max(top + margin, top + height - margin - h) + 1))
    region = scene.rgb[y : y + h, x : x + w]
    a = alpha[: region.shape[0], : region.shape[1], None]
    region[...] = region * (1 - a) + np.asarray(ink, dtype=np.float32) * a


def draw_digit(
    scene: Scene,
    digit: np.ndarray,
    rng: np.random.Generator,
    ink: tuple[float, float, float] | None = None,
    angle: float = 0.0,
) -> None:
    shorter = min(scene.paper[2], scene.paper[3])
    side = max(28, round(rng.uniform(*DIGIT_SCALE) * shorter))
    if ink is None:
        level = float(rng.uniform(0.0, 0.15))
        ink = (level, level, level)
    place_ink(scene, digit_alpha(digit, side, angle), ink, rng)


# ----------------------------------------------------------------------------- conditions
# Each takes (digit, rng) and returns an RGB uint8 Pillow image.


def clean(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    return to_image(scene.rgb)


def frame(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A dark line 1-3 px wide at the edge or up to 5 px in, on all four sides or some."""
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    image = to_image(scene.rgb)
    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = int(rng.integers(1, 4))
    level = int(rng.integers(0, 80))
    sides = ["top", "bottom", "left", "right"]
    chosen = sides if rng.random() < 0.5 else list(rng.choice(sides, rng.integers(1, 4), False))
    for side in chosen:
        inset = int(rng.integers(0, 6))
        for k in range(line):
            d = inset + k
            box = {
                "top": [(0, d), (width - 1, d)],
                "bottom": [(0, height - 1 - d), (width - 1, height - 1 - d)],
                "left": [(d, 0), (d, height - 1)],
                "right": [(width - 1 - d, 0), (width - 1 - d, height - 1)],
            }[side]
            draw.line(box, fill=(level, level, level))
    return image


def desk(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Paper covering 40-80% of the photo on a desk 20-60% as bright as the paper."""
    scene = blank_page(rng)
    height, width = scene.rgb.shape[:2]
    area = rng.uniform(0.4, 0.8) * width * height
    aspect = rng.uniform(0.7, 1.4)
    paper_w = min(width, round(math.sqrt(area * aspect)))
    paper_h = min(height, round(area / paper_w))
    left = int(rng.integers(0, width - paper_w + 1))
    top = int(rng.integers(0, height - paper_h + 1))
    tint = rng.uniform(0.85, 1.1, size=3)  # desks are rarely grey
    desk_level = scene.paper_level * rng.uniform(0.2, 0.6)
    rgb = np.clip(desk_level * tint, 0, 1).astype(np.float32)
    texture = rng.normal(0, 0.02, size=(height, width, 1)).astype(np.float32)
    page = np.broadcast_to(rgb, scene.rgb.shape) + texture
    page[top : top + paper_h, left : left + paper_w] = scene.paper_level
    scene.rgb = np.clip(page, 0, 1).astype(np.float32)
    scene.paper = (left, top, paper_w, paper_h)
    draw_digit(scene, digit, rng)
    return to_image(scene.rgb)


def gradient(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Light falling to 50% across the page, in any direction."""
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    height, width = scene.rgb.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    t = cols * math.cos(angle) + rows * math.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    light = 1 - 0.5 * t
    return to_image(scene.rgb * light[..., None])


def speckle(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """0.5-2% salt-and-pepper pixels plus Gaussian noise of sigma 10/255."""
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    rgb = scene.rgb + rng.normal(0, 10 / 255, size=scene.rgb.shape[:2] + (1,)).astype(np.float32)
    hit = rng.random(rgb.shape[:2]) < rng.uniform(0.005, 0.02)
    salt = rng.random(rgb.shape[:2]) < 0.5
    rgb[hit & salt] = 1.0
    rgb[hit & ~salt] = 0.0
    return to_image(rgb)


def jpeg(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Saved as JPEG at quality 30-70."""
    buffer = io.BytesIO()
    clean(digit, rng).save(buffer, "JPEG", quality=int(rng.integers(30, 71)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def ruled(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Ruled (horizontal lines) or squared paper: lines 1-2 px at 60% grey every 20-30 px."""
    scene = blank_page(rng)
    height, width = scene.rgb.shape[:2]
    spacing = int(rng.integers(20, 31))
    line = int(rng.integers(1, 3))
    offset = int(rng.integers(0, spacing))
    level = GREY_LINE * scene.paper_level
    for y in range(offset, height, spacing):
        scene.rgb[y : y + line] = level
    if rng.random() < 0.5:  # squared
        for x in range(int(rng.integers(0, spacing)), width, spacing):
            scene.rgb[:, x : x + line] = level
    draw_digit(scene, digit, rng)
    return to_image(scene.rgb)


def coloured_ink(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Blue or red ink."""
    scene = blank_page(rng)
    inks = BLUE_INKS if rng.random() < 0.5 else RED_INKS
    draw_digit(scene, digit, rng, ink=inks[int(rng.integers(len(inks)))])
    return to_image(scene.rgb)


def rotation(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The digit turned by 5 to 15 degrees either way."""
    scene = blank_page(rng)
    angle = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
    draw_digit(scene, digit, rng, angle=angle)
    return to_image(scene.rgb)


CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], Image.Image]] = {
    "clean": clean,
    "frame": frame,
    "desk": desk,
    "gradient": gradient,
    "speckle": speckle,
    "jpeg": jpeg,
    "ruled": ruled,
    "ink": coloured_ink,
    "rotation": rotation,
}


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def render(digit: np.ndarray, condition: str, seed: int | Sequence[int]) -> Image.Image:
    """One MNIST digit (28x28, 0..255) as a photo under `condition`, reproducible by seed."""
    return CONDITIONS[condition](digit, np.random.default_rng(seed))


def score(
    model: nn.Module,
    meta: dict[str, Any],
    digits: np.ndarray,
    labels: np.ndarray,
    conditions: Sequence[str] = tuple(CONDITIONS),
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Accuracy per condition; an image `mnist_style` refuses counts as wrong.

    Digit i under condition c is drawn from the seed (seed, c's index, i), so every condition
    sees the same digits and each image can be re-rendered on its own.
    """
    mean, std = normalization(meta)
    labels = np.asarray(labels)
    results = {}
    for condition in conditions:
        number = list(CONDITIONS).index(condition)
        inputs, ok = [], []
        for i, digit in enumerate(digits):
            image = render(digit, condition, (seed, number, i))
            try:
                inputs.append(preprocess.mnist_style(preprocess.to_grayscale(image)))
                ok.append(True)
            except MnistlabError:
                inputs.append(np.zeros((28, 28), dtype=np.float32))
                ok.append(False)
        predicted = classify(model, np.stack(inputs), mean, std).argmax(1).numpy()
        correct = int(((predicted == labels) & np.asarray(ok)).sum())
        results[condition] = {
            "n": len(digits),
            "correct": correct,
            "refused": len(ok) - sum(ok),
            "accuracy": round(100 * correct / len(digits), 2),
        }
    return results
