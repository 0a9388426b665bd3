"""Any digit image to a 28x28 MNIST-style input, the way MNIST itself was made.

MNIST digits are white ink on black, scaled so the longer side of the ink's bounding box is
20 pixels (aspect ratio kept, antialiased), then placed in a 28x28 field so that the centre of
mass of the ink falls on pixel (14, 14). `mnist_style` does the same to a grayscale array:

    gray (paper light or dark) -> ink (white on black, 0..1) -> crop -> widen hairlines
    -> scale -> centre

The ink step copes with photos: a desk around the paper, uneven light, frame lines, ruled
paper, speckle (see `to_ink`). `mnistlab predict` and `mnistlab serve` both use this path.

Every function here is pure except `read_grayscale`/`decode_grayscale`, which read a file.
Errors name what is wrong with the image but not the file; the caller adds the file name.
"""

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO

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
DETAIL = 0.15  # top-hat values above this are structure, not noise
FLAT = 0.05  # a background estimate varying less than this is taken as one level
EDGE_BAND = 0.04  # frame lines lie within this fraction of the image's longer side of an edge
NEAR = 0.3  # a fragment within this fraction of the digit's size of it belongs to it
FRAGMENT = 0.05  # ... when its area is at least this fraction of the digit's largest part
THIN_STROKE = 0.06  # strokes thinner than this fraction of the digit's longer side are widened
MNIST_STROKE = 0.1  # ... to this fraction, about MNIST's
WORK_SIDE = 384  # larger images are scaled down (by area) to this longer side first

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
    return decode_grayscale(path)


def grayscale_from_bytes(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's bytes (an upload) as read_grayscale reads a file."""
    if not data:
        raise MnistlabError("empty file (0 bytes)")
    return decode_grayscale(io.BytesIO(data), max_pixels)


def decode_grayscale(source: Path | BinaryIO, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    try:
        # The size check below refuses large images before decoding; Pillow's own warning for
        # them would only repeat it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except FileNotFoundError:
        raise MnistlabError("no such file") from None
    except Image.DecompressionBombError:
        raise MnistlabError(
            f"image too large (over {max_pixels // 1_000_000} megapixels)"
        ) from None
    except UnidentifiedImageError:
        raise MnistlabError(
            "not a readable image (unknown format, or damaged, or 0x0 pixels)"
        ) from None
    except (OSError, ValueError) as e:
        raise MnistlabError(f"cannot open image ({first_line(e)})") from e
    with image:
        check_size(image.width, image.height, max_pixels)
        try:
            image.load()
            return to_grayscale(ImageOps.exif_transpose(image))
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise MnistlabError(f"damaged or truncated image ({first_line(e)})") from e


def first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width == 0 or height == 0:
        raise MnistlabError(f"empty image ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise MnistlabError(
            f"image too large ({width}x{height} = {width * height / 1e6:.0f} megapixels; "
            f"the limit is {max_pixels // 1_000_000}); scale it down first"
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
    """White ink on black in [0, 1]: the digit only, with paper, frame and speckle at 0.

    Works on photos as well as scans: the paper may be lit unevenly, lie on a darker desk,
    carry ruled lines or a frame, and the picture may be noisy.

    1. Polarity: ink is the thin structure, so compare how much dark-on-light and how much
       light-on-dark detail a morphological top-hat finds (not the border, which may be desk
       or frame), and turn the image so the ink is light.
    2. Background: an opening larger than a stroke removes the ink and keeps paper, desk and
       lighting; the ink is what rises above it, divided by the paper's brightness.
    3. Ink: an Otsu threshold above the noise; connected components that look like frame lines
       or edge strips are dropped, then the largest component and those near it are the digit.
    """
    if gray.size == 0:
        raise MnistlabError(f"empty image ({gray.shape[1]}x{gray.shape[0]} pixels)")
    small = work_size(gray)
    k = stroke_window(small.shape)
    # Inverted before scaling, so light and dark versions of one image give the same input.
    light = work_size(1 - gray) if paper_is_light(small) else small
    rise, ink = flatten_background(light, k)
    if float(rise.max()) < MIN_CONTRAST:
        raise MnistlabError("blank image: no ink found (nothing differs from the background)")
    core = ink > ink_threshold(ink)
    labels, count = label_components(core)
    kept = np.isin(labels, digit_components(labels, count, k))
    if float(np.percentile(rise[kept], 95)) < MIN_CONTRAST:
        raise MnistlabError("blank image: no ink found (nothing differs from the background)")
    reach = max(1, round(max(small.shape) / 150))  # antialiased stroke edges beside the core
    region = dilate(kept, reach) & (ink > noise_floor(ink))
    level = float(np.percentile(ink[kept], 95))
    return np.where(region, np.clip(ink / level, 0, 1), 0).astype(np.float32)


def stroke_window(shape: tuple[int, ...]) -> int:
    """Side of the morphological window: wider than any stroke, so openings remove the ink.

    A digit fits in the shorter side and its strokes are rarely wider than a fifth of it.
    """
    return max(3, round(min(shape) / 4)) | 1


def max_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over a k x k window (k odd) centred on each pixel, with edge padding."""
    return _max_1d(_max_1d(a, k, 0), k, 1)


def min_filter(a: np.ndarray, k: int) -> np.ndarray:
    return -max_filter(-a, k)


def _max_1d(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Running maximum over k along an axis, by doubling: O(log k) array passes."""
    a = np.moveaxis(a, axis, -1)
    n, r = a.shape[-1], k // 2
    run = np.pad(a, [(0, 0), (r, r)], mode="edge")  # run[:, i] will be max of k from i
    width = 1
    while 2 * width <= k:
        run = np.maximum(run[:, :-width], run[:, width:])
        width *= 2
    if width < k:
        run = np.maximum(run[:, : run.shape[1] - (k - width)], run[:, k - width :])
    return np.moveaxis(run[:, :n], -1, axis)


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Removes light structures narrower than k, keeps larger ones and smooth ramps."""
    return max_filter(min_filter(a, k), k)


def closing(a: np.ndarray, k: int) -> np.ndarray:
    return min_filter(max_filter(a, k), k)


def paper_is_light(gray: np.ndarray) -> bool:
    """True when the ink is darker than the paper.

    Ink is the thin structure: a closing (or opening) with a window wider than a stroke
    removes it, and the difference (a top-hat) shows it. At most window sizes up to a sixth
    of the shorter side (strokes are narrower), dark-on-light detail outweighs light-on-dark
    detail when the ink is dark: the gaps between strokes are wider than the strokes, and
    paper, desk and lighting are wider still. Each size that finds enough detail votes, so
    the one size at which the squares of squared paper count as light detail does not decide,
    nor do sizes that find only the odd pixel. A 3x3 median first removes
    salt-and-pepper specks, which would count on both sides. A band along the edges is left
    out: a frame line there makes the paper outside it a thin light strip.
    """
    g = median3(gray) if min(gray.shape) >= 32 else gray
    largest = max(5, min(gray.shape) // 6)
    band = edge_band(gray.shape)
    inside = (slice(band, -band), slice(band, -band))
    masses, k = [], 3
    while k <= largest:
        dark, light = closing(g, k) - g, g - opening(g, k)
        masses.append((detail(dark[inside]), detail(light[inside])))
        k = 2 * k - 1
    enough = 0.002 * g[inside].size  # a structure covering 0.2% of the image at full contrast
    votes = sum(np.sign(d - li) for d, li in masses if max(d, li) >= enough)
    return bool(votes > 0 or (votes == 0 and sum(d - li for d, li in masses) >= 0))


def edge_band(shape: tuple[int, ...]) -> int:
    """Width of the band along the image's edges where frame lines lie."""
    return max(2, round(EDGE_BAND * max(shape)))


def detail(tophat: np.ndarray) -> float:
    """The mass of a top-hat's values above what noise reaches."""
    return float(tophat[tophat > DETAIL].sum())


def median3(a: np.ndarray) -> np.ndarray:
    """3x3 median with edge padding."""
    height, width = a.shape
    padded = np.pad(a, 1, mode="edge")
    stack = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.median(np.stack(stack), axis=0).astype(a.dtype)


def flatten_background(light: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rise, ink): how far each pixel rises above the background, raw and per paper brightness.

    On a uniform page the background is one number, so strokes wider than the window survive.
    Dividing by the paper's brightness undoes uneven lighting; it is capped at 2x so a dark
    desk's noise is not blown up.
    """
    background = opening(light, k)
    low, high = np.percentile(background, [2, 98])
    if high - low < FLAT:
        background = np.full_like(background, np.median(background))
    rise = light - background
    paper = 1 - background
    paper = np.maximum(paper, 0.5 * float(np.percentile(paper, 95)), dtype=np.float32)
    return rise, rise / np.maximum(paper, 1e-3)


def noise_floor(ink: np.ndarray) -> float:
    """A level that noise on the paper rarely reaches: 4 robust standard deviations.

    At least 2% of the strongest ink, so a noiseless image's rounding dust is not ink; both
    terms scale with the ink, so faint ink on grey paper is cut as strong ink on white is.
    """
    mad = float(np.median(np.abs(ink - np.median(ink))))
    return max(4 * 1.4826 * mad, 0.02 * float(ink.max()))


def ink_threshold(ink: np.ndarray) -> float:
    """Otsu's threshold over the pixels above the noise floor: ink against fainter lines."""
    floor = noise_floor(ink)
    values = ink[ink > floor]
    if values.size < 2 or float(values.max() - values.min()) < 1e-6:
        return floor
    return max(floor, otsu(values))


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of `values`."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mass = np.cumsum(counts * centres)
    below, above = weight[:-1], total - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below / total - mass[:-1]) ** 2 / (below * above)
    between = np.nan_to_num(between)
    return float(edges[int(np.argmax(between)) + 1])


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return max_filter(mask.astype(np.uint8), 2 * radius + 1).astype(bool)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: labels 1..count on the mask, 0 elsewhere.

    Each pixel takes the smallest index among its neighbours, then follows its label's own label
    (pointer jumping), so long components converge in a few dozen array passes.
    """
    height, width = mask.shape
    none = height * width
    labels = np.where(mask, np.arange(none).reshape(height, width), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        smallest = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(smallest, padded[dy : dy + height, dx : dx + width], out=smallest)
        smallest = np.where(mask, smallest, none)
        flat = smallest.ravel()
        inside = flat < none
        while True:
            jumped = flat[flat[inside]]
            if np.array_equal(jumped, flat[inside]):
                break
            flat[inside] = jumped
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    roots, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(height, width)
    if roots[-1] == none:  # background sorts last; give it 0 and the components 1..count
        dense = np.where(labels == none, 0, dense + 1)
        return dense, len(roots) - 1
    return dense + 1, len(roots)


def edge_contact(labels: np.ndarray, count: int) -> np.ndarray:
    """For each label, the largest fraction of one image side that it touches."""
    sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    contact = [np.bincount(side, minlength=count + 1) / len(side) for side in sides]
    return np.max(contact, axis=0)


def component_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """[count + 1, 5]: area, top, bottom, left, right of each label (row 0 unused)."""
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols]
    boxes = np.zeros((count + 1, 5), dtype=np.int64)
    boxes[:, 1] = boxes[:, 3] = np.iinfo(np.int64).max
    np.add.at(boxes[:, 0], which, 1)
    np.minimum.at(boxes[:, 1], which, rows)
    np.maximum.at(boxes[:, 2], which, rows)
    np.minimum.at(boxes[:, 3], which, cols)
    np.maximum.at(boxes[:, 4], which, cols)
    return boxes


def digit_components(labels: np.ndarray, count: int, window: int) -> list[int]:
    """The labels that make up the digit: the largest plausible component and its neighbours.

    Not the digit: frame lines (almost all of the component in a band along the image's edge,
    and long) and edge strips: a desk seen as a strip narrower than the background window
    escapes the opening, so it shows up as "ink" lying along an edge for half of it or more,
    and almost all within a window's width of the edges. Fragments of the digit (a detached
    bar, a broken stroke) are kept when they are not specks and lie close to the largest part.
    """
    height, width = labels.shape
    boxes = component_boxes(labels, count)
    band = edge_band(labels.shape)
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols]
    distance = np.minimum.reduce([rows, height - 1 - rows, cols, width - 1 - cols])
    in_band = np.bincount(which, weights=distance < band, minlength=count + 1)
    near_edge = np.bincount(which, weights=distance < window, minlength=count + 1)
    along = edge_contact(labels, count)
    candidates = []
    for number in range(1, count + 1):
        area, top, bottom, left, right = boxes[number]
        long = bottom - top + 1 >= 0.5 * height or right - left + 1 >= 0.5 * width
        if long and in_band[number] >= 0.9 * area:
            continue  # a frame line
        if along[number] >= 0.5 and near_edge[number] >= 0.9 * area:
            continue  # a strip of desk
        candidates.append(number)
    if not candidates:
        raise MnistlabError("blank image: no ink found (only lines along the edges)")
    main = max(candidates, key=lambda n: boxes[n, 0])
    area, top, bottom, left, right = boxes[main]
    reach = NEAR * max(bottom - top + 1, right - left + 1)
    kept = [main]
    for number in candidates:
        a, t, b, lft, rgt = boxes[number]
        gap = max(t - bottom, top - b, lft - right, left - rgt, 0)
        if number != main and a >= FRAGMENT * area and gap <= reach:
            kept.append(number)
    return kept


def crop_to_ink(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> np.ndarray:
    """The smallest rectangle holding every pixel brighter than `threshold`."""
    rows = np.flatnonzero(ink.max(axis=1) > threshold)
    cols = np.flatnonzero(ink.max(axis=0) > threshold)
    if len(rows) == 0:
        raise MnistlabError("blank image: no ink found")
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink's area over its outline (a strip of width w
    and length L has area wL and an outline of about 2L)."""
    mask = ink > 0.5
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    outline = int((mask & ~inside).sum())
    return 2 * float(mask.sum()) / outline if outline else 0.0


def thicken(ink: np.ndarray) -> np.ndarray:
    """Widen strokes much thinner than MNIST's (a ballpoint on a large photo) to its width.

    MNIST's pen is about a tenth of the digit's height; a hairline, scaled to 20 pixels,
    would be a faint trace the model never saw. Strokes of usual width are left alone.
    """
    longer = max(ink.shape)
    width = stroke_width(ink)
    if width >= THIN_STROKE * longer:
        return ink
    k = max(1, round(MNIST_STROKE * longer - width)) | 1
    return max_filter(np.pad(ink, k // 2), k)


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
    return place_centred(fit_box(thicken(crop_to_ink(to_ink(gray)))))


def work_size(gray: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Scaled down by area averaging so the longer side is at most `side` (photos are large)."""
    height, width = gray.shape
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.asarray(gray, dtype=np.float32), "F")
    return np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)


def as_28x28(gray: np.ndarray) -> np.ndarray:
    """A grayscale image that already is MNIST-style, unchanged (for --no-preprocess)."""
    if gray.shape != (SIZE, SIZE):
        height, width = gray.shape
        raise MnistlabError(
            f"image is {width}x{height}; without preprocessing it must be {SIZE}x{SIZE} "
            "(white ink on black)"
        )
    return gray.astype(np.float32)
