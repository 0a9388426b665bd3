"""MNIST digits rendered as photos of paper: the conditions `predict` must survive.

Each condition takes a clean scene (ink on paper, random digit size and position) and adds one
difficulty seen in real photos and scans: a frame line near the edge, paper on a darker desk,
a lighting gradient, speckle, JPEG artefacts, ruled or squared paper, coloured ink, a rotated
digit, dense squared (graph) paper on photos of any size, a photo taken at an angle, a hard
shadow, a neighbouring digit cut by the edge, thin faint pencil strokes. Everything is drawn
from one seeded generator, so a benchmark run is reproducible.

`render` returns a Pillow image, so the benchmark feeds it through the same code path as a
file given to `mnistlab predict` (grayscale conversion, then `preprocess.mnist_style`).
"""

import io
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw
from torch import nn

from mnistlab.data.datasets import normalization
from mnistlab.errors import MnistlabError
from mnistlab.inference import preprocess
from mnistlab.inference.classify import classify

HANDWRITING = Path(__file__).resolve().parent / "fixtures" / "handwriting"
PAGE_SIDES = (200, 420)  # page width and height are drawn from this range (pixels)
DIGIT_SCALE = (0.3, 0.65)  # the 28x28 field's side as a fraction of the paper's shorter side
MARGIN = 0.06  # the digit's field keeps this fraction of the paper's shorter side from its edges
GREY_LINE = 0.6  # ruled and squared paper lines are 60% grey
BLUE_INKS = ((0.10, 0.15, 0.55), (0.05, 0.20, 0.70), (0.15, 0.10, 0.45))
RED_INKS = ((0.75, 0.10, 0.12), (0.85, 0.15, 0.15), (0.65, 0.05, 0.20))
PHOTO_WIDTHS = (200, 1200)  # squared paper: photos of any size a phone or scanner gives
GRID_SPACING = (9, 80)  # squared paper: pixels between lines
GRID_GREY = (0.55, 0.75)  # squared paper: line brightness, a fraction of the paper's
KEYSTONE = 0.4  # perspective: the far edge of the page is up to this much shorter
TILT = 8.0  # perspective: the camera turned up to this many degrees either way
SHADOW = (0.35, 0.55)  # hard shadow: light left under it, a fraction of the light outside
VISIBLE = (0.3, 0.5)  # neighbouring digit: the fraction of its ink inside the photo
GAP = (0.06, 0.3)  # neighbouring digit: space between the two, a fraction of the digit's field
FAINT_GREY = (0.4, 0.6)  # thin faint strokes: ink brightness (0 black, 1 white)
FAINT_WIDTH = (1.0, 2.0)  # thin faint strokes: pen width in pixels


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
    blend(scene.rgb, alpha, ink, x, y)


def blend(
    rgb: np.ndarray, alpha: np.ndarray, ink: tuple[float, float, float], x: int, y: int
) -> None:
    """Ink of coverage `alpha` laid on the page with its top left at (x, y); what falls
    outside the page is cut off."""
    h, w = alpha.shape
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + h, rgb.shape[0]), min(x + w, rgb.shape[1])
    if bottom <= top or right <= left:
        return
    region = rgb[top:bottom, left:right]
    a = alpha[top - y : bottom - y, left - x : right - x, None]
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


def squared(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Squared (graph) paper on photos 200-1,200 px wide: lines 1-2 px at 55-75% grey every
    9-80 px, both ways."""
    width = int(rng.integers(*PHOTO_WIDTHS, endpoint=True))
    spacing = int(rng.integers(*GRID_SPACING, endpoint=True))
    line = int(rng.integers(1, 3))
    grey = float(rng.uniform(*GRID_GREY))
    return squared_page(digit, rng, width, spacing, line, grey)


def squared_page(
    digit: np.ndarray,
    rng: np.random.Generator,
    width: int,
    spacing: int,
    line: int = 1,
    grey: float = 0.6,
) -> Image.Image:
    """A photo `width` px wide of squared paper: lines `line` px wide every `spacing` px, at
    `grey` of the paper's brightness; the rest (height, offsets, the digit) from `rng`."""
    height = int(np.clip(round(width * rng.uniform(0.7, 1.4)), *PHOTO_WIDTHS))
    level = float(rng.uniform(0.85, 1.0))
    rgb = np.full((height, width, 3), level, dtype=np.float32)
    scene = Scene(rgb, (0, 0, width, height), level)
    for y in range(int(rng.integers(0, spacing)), height, spacing):
        scene.rgb[y : y + line] = grey * level
    for x in range(int(rng.integers(0, spacing)), width, spacing):
        scene.rgb[:, x : x + line] = grey * level
    draw_digit(scene, digit, rng)
    return to_image(scene.rgb)


def perspective(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A photo taken at an angle: one edge of the page up to 40% shorter than the opposite one
    (keystone), the camera turned up to 8 degrees either way."""
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    height, width = scene.rgb.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    squeeze = rng.uniform(0, KEYSTONE) / 2
    target = corners.copy()
    side = int(rng.integers(4))  # which edge is the far one
    if side in (0, 2):  # top or bottom: its two corners move towards each other
        target[[0, 1] if side == 0 else [3, 2], 0] += np.float32([1, -1]) * squeeze * width
    else:  # left or right
        target[[0, 3] if side == 3 else [1, 2], 1] += np.float32([1, -1]) * squeeze * height
    angle = np.radians(rng.uniform(-TILT, TILT))
    centre = np.float32([width / 2, height / 2])
    turn = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = (target - centre) @ turn.T
    # Zoom out so the whole page stays in the photo: the digit is never cut.
    fit = min(width / np.ptp(target[:, 0]), height / np.ptp(target[:, 1]), 1.0)
    target = target * fit + centre
    matrix = cv2.getPerspectiveTransform(corners, np.float32(target))
    warped = cv2.warpPerspective(
        scene.rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return to_image(warped)


def shadow(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A hard shadow (a hand or a phone) over half the photo: 35-55% of the light is left
    under it, its edge a straight line at any angle through the middle, 1-3 px soft."""
    scene = blank_page(rng)
    draw_digit(scene, digit, rng)
    height, width = scene.rgb.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    through = (rng.uniform(0.4, 0.6) * width, rng.uniform(0.4, 0.6) * height)
    distance = (cols - through[0]) * np.cos(angle) + (rows - through[1]) * np.sin(angle)
    inside = np.clip(0.5 + distance / rng.uniform(1, 3), 0, 1)
    light = 1 - (1 - rng.uniform(*SHADOW)) * inside
    return to_image(scene.rgb * light[..., None])


def neighbour(
    digit: np.ndarray, rng: np.random.Generator, others: np.ndarray | None = None
) -> Image.Image:
    """Another digit of the same hand beside this one, cut by the photo's edge: 30-50% of its
    ink is in the photo. It is drawn from `others` (without them, the digit turned over)."""
    scene = blank_page(rng)
    height, width = scene.rgb.shape[:2]
    other = others[int(rng.integers(len(others)))] if others is not None else digit[::-1, ::-1]
    side = max(28, round(rng.uniform(0.3, 0.5) * min(width, height)))
    alpha_main, alpha_other = digit_alpha(digit, side), digit_alpha(other, side)
    edge = str(rng.choice(["left", "right", "top", "bottom"], p=[0.375, 0.375, 0.125, 0.125]))
    across_axis = 0 if edge in ("left", "right") else 1  # alpha.max over it gives the profile
    across = width if across_axis == 0 else height  # the photo's side across the cut
    along = height if across_axis == 0 else width

    def ink_span(alpha: np.ndarray) -> tuple[int, int]:
        inked = np.flatnonzero(alpha.max(axis=across_axis) > 0.1)
        return int(inked[0]), int(inked[-1])

    first, last = ink_span(alpha_other)
    main_first, main_last = ink_span(alpha_main)
    seen = max(1, round(rng.uniform(*VISIBLE) * (last - first + 1)))
    gap, margin = round(rng.uniform(*GAP) * side), round(MARGIN * across)
    if edge in ("left", "top"):  # its last `seen` ink columns (or rows) are inside
        other_at = seen - 1 - last
        low, high = seen + gap - main_first, across - margin - 1 - main_last
    else:  # its first `seen` are inside
        other_at = across - seen - first
        low, high = margin - main_first, across - seen - gap - 1 - main_last
    main_at = int(rng.integers(low, max(low, high) + 1))
    edge_room = round(MARGIN * along)
    main_along = int(rng.integers(edge_room, max(edge_room, along - side - edge_room) + 1))
    other_along = main_along + int(rng.integers(-side // 8, side // 8 + 1))
    level = float(rng.uniform(0.0, 0.15))
    for alpha, at, at_along in (
        (alpha_other, other_at, other_along),
        (alpha_main, main_at, main_along),
    ):
        x, y = (at, at_along) if across_axis == 0 else (at_along, at)
        blend(scene.rgb, alpha, (level, level, level), x, y)
    return to_image(scene.rgb)


def faint(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Thin faint strokes (a hard pencil): the digit's centre line drawn 1-2 px wide in ink at
    40-60% grey."""
    scene = blank_page(rng)
    shorter = min(scene.paper[2], scene.paper[3])
    side = max(28, round(rng.uniform(*DIGIT_SCALE) * shorter))
    alpha = thin_alpha(digit, side, float(rng.uniform(*FAINT_WIDTH)))
    level = float(rng.uniform(*FAINT_GREY))
    place_ink(scene, alpha, (level, level, level), rng)
    return to_image(scene.rgb)


def thin_alpha(digit: np.ndarray, side: int, width: float) -> np.ndarray:
    """The digit's skeleton as antialiased strokes `width` px wide on a side x side field."""
    scale = 4  # the skeleton is found at 4x MNIST resolution, then drawn at the page's
    big = np.asarray(
        Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize(
            (28 * scale, 28 * scale), Image.Resampling.BICUBIC
        )
    )
    skeleton = zhang_suen(big > 127)
    shift = 4  # cv2 takes points in 1/16 px: 4 fractional bits
    canvas = np.zeros((side, side), dtype=np.uint8)
    factor = side / (28 * scale) * (1 << shift)
    rows, cols = np.nonzero(skeleton)
    points = {(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}
    # Each skeleton pixel joined to its right and lower neighbours: a polyline at any scale.
    for r, c in points:
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            if (r + dr, c + dc) in points:
                start = (round((c + 0.5) * factor), round((r + 0.5) * factor))
                end = (round((c + dc + 0.5) * factor), round((r + dr + 0.5) * factor))
                cv2.line(canvas, start, end, 255, max(1, round(width)), cv2.LINE_AA, shift)
    coverage = canvas.astype(np.float32) / 255
    if width < 1.5:  # a 1 px pen: cv2's thinnest antialiased line is about 1.5 px
        coverage = np.clip(coverage * 0.8, 0, 1)
    return coverage


def zhang_suen(mask: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning: the mask worn down to 8-connected lines 1 px wide."""
    image = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = image
            n = [
                p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:],
                p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2],
            ]  # fmt: skip
            count = sum(n)
            ring = n + n[:1]
            transitions = sum((ring[i] == 0) & (ring[i + 1] == 1) for i in range(8))
            if step == 0:
                a, b = n[0] * n[2] * n[4], n[2] * n[4] * n[6]
            else:
                a, b = n[0] * n[2] * n[6], n[0] * n[4] * n[6]
            remove = (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6)
            remove &= (transitions == 1) & (a == 0) & (b == 0)
            if remove.any():
                image = image.copy()
                image[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


CONDITIONS: dict[str, Callable[..., Image.Image]] = {
    "clean": clean,
    "frame": frame,
    "desk": desk,
    "gradient": gradient,
    "speckle": speckle,
    "jpeg": jpeg,
    "ruled": ruled,
    "ink": coloured_ink,
    "rotation": rotation,
    # Added later, so the seeds of the conditions above (their index) are unchanged.
    "squared": squared,
    "perspective": perspective,
    "shadow": shadow,
    "neighbour": neighbour,
    "faint": faint,
}
NEEDS_OTHERS = ("neighbour",)  # conditions that draw a second digit


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def render(
    digit: np.ndarray,
    condition: str,
    seed: int | Sequence[int],
    others: np.ndarray | None = None,
) -> Image.Image:
    """One MNIST digit (28x28, 0..255) as a photo under `condition`, reproducible by seed.

    `others` (digits [N, 28, 28]) are where a condition that draws a second digit takes it from.
    """
    rng = np.random.default_rng(seed)
    if condition in NEEDS_OTHERS:
        return CONDITIONS[condition](digit, rng, others)
    return CONDITIONS[condition](digit, rng)


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
    sees the same digits and each image can be re-rendered on its own. A neighbouring digit is
    one of the other digits given.
    """
    labels = np.asarray(labels)
    results = {}
    for condition in conditions:
        number = list(CONDITIONS).index(condition)
        grays = []
        for i, digit in enumerate(digits):
            others = np.delete(digits, i, axis=0) if len(digits) > 1 else None
            grays.append(
                preprocess.to_grayscale(render(digit, condition, (seed, number, i), others))
            )
        results[condition] = score_grays(model, meta, grays, labels)
    return results


def score_grays(
    model: nn.Module,
    meta: dict[str, Any],
    grays: Sequence[np.ndarray],
    labels: np.ndarray,
    prepare: Callable[[np.ndarray], np.ndarray] = preprocess.mnist_style,
) -> dict[str, Any]:
    """Accuracy of the model on grayscale images through `prepare`, and the time it took per
    image (ms); an image `prepare` refuses counts as wrong."""
    mean, std = normalization(meta)
    inputs, ok, times = [], [], []
    for gray in grays:
        start = time.perf_counter()
        try:
            inputs.append(prepare(gray))
            ok.append(True)
        except MnistlabError:
            inputs.append(np.zeros((28, 28), dtype=np.float32))
            ok.append(False)
        times.append(1000 * (time.perf_counter() - start))
    predicted = classify(model, np.stack(inputs), mean, std).argmax(1).numpy()
    hits = (predicted == np.asarray(labels)) & np.asarray(ok)
    return {
        "n": len(grays),
        "correct": int(hits.sum()),
        "refused": len(ok) - sum(ok),
        "accuracy": round(100 * float(hits.sum()) / len(grays), 2),
        "ms_per_image": {
            "median": round(float(np.median(times)), 2),
            "p90": round(float(np.percentile(times, 90)), 2),
        },
        # (index, what it was read as; -1 when refused)
        "wrong": [(int(i), int(predicted[i]) if ok[i] else -1) for i in np.flatnonzero(~hits)],
    }


def handwriting(part: str = "all") -> tuple[list[Path], np.ndarray]:
    """The real handwritten digits in fixtures/handwriting (not from MNIST) and their labels.

    Files are Digit_<label>_Sample<nn>.png, 25 per digit. `part` "tune" is the odd-numbered
    samples (tuning looked at these), "report" the even-numbered ones, "all" both.
    """
    files, labels = [], []
    for path in sorted(HANDWRITING.glob("Digit_*_Sample*.png")):
        label, number = (int(v) for v in re.findall(r"\d+", path.name))
        if part == "all" or (number % 2 == 1) == (part == "tune"):
            files.append(path)
            labels.append(label)
    return files, np.asarray(labels)
