"""Any digit image to a 28x28 MNIST-style input, the way MNIST itself was made.

MNIST digits are white ink on black, scaled so the longer side of the ink's bounding box is
20 pixels (aspect ratio kept, antialiased), then placed in a 28x28 field so that the centre of
mass of the ink falls on pixel (14, 14). `mnist_style` does the same to a grayscale array:

    gray (paper light or dark) -> ink (white on black, 0..1) -> crop -> scale -> centre

Every function here is pure except `read_grayscale`, which reads a file. Errors name what is
wrong with the image but not the file; the caller adds the file name.
"""

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistlab.errors import MnistlabError

MAX_PIXELS = (
    50_000_000  # larger images are refused rather than decoded (memory, decompression bombs)
)
SIZE = 28  # MNIST image side
BOX = 20  # MNIST scales the ink's longer side to this many pixels
CENTRE = 14.0  # MNIST puts the centre of mass on this row and column
INK_THRESHOLD = 0.2  # fraction of the ink's full strength that counts as ink for the bounding box
MIN_CONTRAST = 0.1  # ink must differ from the background by this much (of the full range)

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def read_grayscale(path: str | Path) -> np.ndarray:
    """Read an image file as float32 grayscale in [0, 1], transparency composited on white.

    Any format, mode and bit depth Pillow reads; EXIF rotation is applied (phone photos).
    """
    path = Path(path)
    if path.is_dir():
        raise MnistlabError("is a directory, not an image")
    if path.is_file() and path.stat().st_size == 0:
        raise MnistlabError("empty file (0 bytes)")
    try:
        # The size check below refuses large images before decoding; Pillow's own warning for
        # them would only repeat it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise MnistlabError("no such file") from None
    except Image.DecompressionBombError:
        raise MnistlabError(
            f"image too large (over {MAX_PIXELS // 1_000_000} megapixels)"
        ) from None
    except UnidentifiedImageError:
        raise MnistlabError(
            "not a readable image (unknown format, or damaged, or 0x0 pixels)"
        ) from None
    except (OSError, ValueError) as e:
        raise MnistlabError(f"cannot open image ({first_line(e)})") from e
    with image:
        check_size(image.width, image.height)
        try:
            image.load()
            return to_grayscale(ImageOps.exif_transpose(image))
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise MnistlabError(f"damaged or truncated image ({first_line(e)})") from e


def first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


def check_size(width: int, height: int) -> None:
    if width == 0 or height == 0:
        raise MnistlabError(f"empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise MnistlabError(
            f"image too large ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {MAX_PIXELS // 1_000_000}); scale it down first"
        )


def to_grayscale(image: Image.Image) -> np.ndarray:
    """A Pillow image as float32 grayscale in [0, 1] (0 black, 1 white), alpha on white."""
    if image.mode in HIGH_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        return pixels / full_scale(float(pixels.max(initial=0)))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels are paper: composite on white so black ink stays black.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), rgba)
    try:
        gray = image.convert("L")
    except ValueError as e:
        raise MnistlabError(f"cannot convert image mode {image.mode} to grayscale ({e})") from e
    return np.asarray(gray, dtype=np.float32) / 255


def full_scale(peak: float) -> float:
    """White level of a high-bit-depth image: the smallest usual range that holds its peak.

    The bit depths sensors and scanners store in 16-bit files count too: 12-bit data
    (0..4095) divided by 65535 would look blank.
    """
    for white in (1.0, 255.0, 1023.0, 4095.0, 16383.0, 65535.0):
        if peak <= white:
            return white
    return peak


def to_ink(gray: np.ndarray) -> np.ndarray:
    """White ink on black in [0, 1]: inverted if the paper is light, background at 0, ink at 1.

    The paper is what the border shows (its median), so a light border means dark ink.
    """
    if gray.size == 0:
        raise MnistlabError(f"empty image ({gray.shape[1]}x{gray.shape[0]} pixels)")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 1 - gray if np.median(border) > 0.5 else gray
    background = float(np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])))
    contrast = float(ink.max()) - background
    if contrast < MIN_CONTRAST:
        raise MnistlabError("blank image: no ink found (nothing differs from the background)")
    return np.clip((ink - background) / contrast, 0, 1).astype(np.float32)


def crop_to_ink(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> np.ndarray:
    """The smallest rectangle holding every pixel brighter than `threshold`."""
    rows = np.flatnonzero(ink.max(axis=1) > threshold)
    cols = np.flatnonzero(ink.max(axis=0) > threshold)
    if len(rows) == 0:
        raise MnistlabError("blank image: no ink found")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def fit_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio (antialiased)."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return ink
    resized = Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS)
    # Lanczos rings slightly below 0 and above 1 next to sharp edges.
    return np.clip(np.asarray(resized), 0, 1)


def centre_of_mass(ink: np.ndarray) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass."""
    total = float(ink.sum())
    rows = float((ink.sum(axis=1) * np.arange(ink.shape[0])).sum()) / total
    cols = float((ink.sum(axis=0) * np.arange(ink.shape[1])).sum()) / total
    return rows, cols


def place_centred(ink: np.ndarray, size: int = SIZE, centre: float = CENTRE) -> np.ndarray:
    """Paste into a black size x size field, centre of mass on (centre, centre).

    Whole-pixel shifts, as MNIST used, so the ink is not blurred; clamped so nothing falls off.
    """
    height, width = ink.shape
    row, col = centre_of_mass(ink)
    top = min(max(math.floor(centre - row + 0.5), 0), size - height)
    left = min(max(math.floor(centre - col + 0.5), 0), size - width)
    field = np.zeros((size, size), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return field


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """A grayscale image (any size, either polarity) as a 28x28 MNIST-style float32 array."""
    return place_centred(fit_box(crop_to_ink(to_ink(gray))))


def as_28x28(gray: np.ndarray) -> np.ndarray:
    """A grayscale image that already is MNIST-style, unchanged (for --no-preprocess)."""
    if gray.shape != (SIZE, SIZE):
        height, width = gray.shape
        raise MnistlabError(
            f"image is {width}x{height}; without preprocessing it must be {SIZE}x{SIZE} "
            "(white ink on black)"
        )
    return gray.astype(np.float32)
