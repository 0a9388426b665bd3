"""Draw the example digit images in this folder (not taken from MNIST).

Each digit is a few pen strokes through hand-placed points, smoothed into curves with a
slightly wobbly hand and drawn with a round pen, black-ish ink on light paper, off-centre and
at different sizes, in the formats and modes `mnistlab predict` must handle:

    two.png    8-bit grayscale, wide page, digit in the upper left
    three.jpg  RGB JPEG, blue ballpoint on cream paper
    four.png   RGBA with a transparent background
    five.gif   palette image
    seven.png  16-bit grayscale, small
    zero.bmp   8-bit grayscale bitmap, tall digit

Run from anywhere: python examples/digits/make_examples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).parent

# Strokes in a unit box (x right, y down); each stroke is one pen-down movement.
STROKES = {
    "zero": [
        [
            (0.50, 0.02),
            (0.18, 0.20),
            (0.08, 0.55),
            (0.28, 0.92),
            (0.62, 0.96),
            (0.86, 0.62),
            (0.82, 0.22),
            (0.55, 0.03),
            (0.45, 0.06),
        ],
    ],
    "two": [
        [
            (0.12, 0.28),
            (0.35, 0.05),
            (0.70, 0.06),
            (0.85, 0.30),
            (0.62, 0.60),
            (0.30, 0.84),
            (0.10, 0.96),
            (0.50, 0.93),
            (0.92, 0.95),
        ],
    ],
    "three": [
        [(0.15, 0.15), (0.45, 0.02), (0.78, 0.12), (0.72, 0.38), (0.42, 0.48)],
        [(0.42, 0.48), (0.80, 0.58), (0.85, 0.82), (0.55, 0.98), (0.12, 0.88)],
    ],
    "four": [
        [(0.38, 0.02), (0.22, 0.38), (0.08, 0.62), (0.50, 0.62), (0.92, 0.60)],
        [(0.68, 0.22), (0.66, 0.60), (0.64, 0.98)],
    ],
    "five": [
        [(0.85, 0.04), (0.50, 0.05), (0.22, 0.06)],
        [
            (0.24, 0.06),
            (0.18, 0.45),
            (0.50, 0.38),
            (0.82, 0.55),
            (0.80, 0.85),
            (0.45, 0.98),
            (0.12, 0.85),
        ],
    ],
    "seven": [
        [(0.08, 0.10), (0.50, 0.06), (0.92, 0.08), (0.60, 0.50), (0.40, 0.98)],
        [(0.35, 0.52), (0.78, 0.50)],
    ],
}


def catmull_rom(points: list[tuple[float, float]], steps: int = 24) -> np.ndarray:
    """A smooth curve through the points."""
    p = np.array(points, dtype=float)
    p = np.vstack([p[0], p, p[-1]])  # repeat the ends so the curve reaches them
    t = np.linspace(0, 1, steps, endpoint=False)[:, None]
    curve = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        curve.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    curve.append(p[-2][None])
    return np.vstack(curve)


def draw_digit(
    canvas: Image.Image,
    digit: str,
    box: tuple[int, int, int, int],
    ink: int | tuple[int, ...],
    pen: float,
    seed: int,
) -> None:
    """Draw a digit's strokes into box (left, top, width, height) with a round pen."""
    rng = np.random.default_rng(seed)
    left, top, width, height = box
    draw = ImageDraw.Draw(canvas)
    for stroke in STROKES[digit]:
        wobbly = np.array(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        for x, y in catmull_rom(wobbly):
            cx, cy = left + x * width, top + y * height
            r = pen / 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=ink)


def main() -> None:
    image = Image.new("L", (480, 320), 255)
    draw_digit(image, "two", (40, 30, 120, 170), 20, pen=17, seed=2)
    image.save(HERE / "two.png")

    image = Image.new("RGB", (640, 480), (246, 240, 222))
    draw_digit(image, "three", (330, 120, 210, 300), (25, 35, 110), pen=26, seed=3)
    image.save(HERE / "three.jpg", quality=85)

    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    draw_digit(image, "four", (150, 140, 110, 140), (10, 10, 10, 255), pen=14, seed=4)
    image.save(HERE / "four.png")

    image = Image.new("RGB", (200, 260), (255, 255, 255))
    draw_digit(image, "five", (30, 80, 100, 150), (0, 0, 0), pen=15, seed=5)
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(HERE / "five.gif")

    image = Image.new("L", (72, 96), 255)
    draw_digit(image, "seven", (8, 22, 40, 60), 0, pen=6, seed=7)
    pixels = np.asarray(image, dtype=np.uint16) * 257  # 8-bit to 16-bit range
    Image.fromarray(pixels).save(HERE / "seven.png")

    image = Image.new("L", (160, 260), 255)
    draw_digit(image, "zero", (55, 40, 85, 145), 30, pen=15, seed=0)
    image.save(HERE / "zero.bmp")


if __name__ == "__main__":
    main()
