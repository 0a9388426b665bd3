"""Any digit image to a 28x28 MNIST-style input, the way MNIST itself was made.

MNIST digits are white ink on black, scaled so the longer side of the ink's bounding box is
20 pixels (aspect ratio kept, antialiased), then placed in a 28x28 field so that the centre of
mass of the ink falls on pixel (14, 14). `mnist_style` does the same to a grayscale array:

    gray (paper light or dark) -> ink (white on black, 0..1) -> crop -> widen hairlines
    -> scale -> centre

The ink step copes with photos: a desk around the paper, uneven light and hard shadows, frame
lines, ruled and squared paper, speckle, a neighbouring digit cut by the edge, faint pencil
(see `to_ink`). `mnistlab predict` and `mnistlab serve` both use this path.

The image work (morphology, thresholds, connected components, resizing) is OpenCV's
(docs/photos.md says why); this module does not import torch.

Every function here is pure except `read_grayscale`/`decode_grayscale`, which read a file.
Errors name what is wrong with the image but not the file; the caller adds the file name.
"""

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO

import cv2
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
FLAT = 0.05  # a background estimate varying less than this is taken as one level
EDGE_BAND = 0.04  # frame lines lie within this fraction of the image's longer side of an edge
NEAR = 0.3  # a fragment within this fraction of the digit's size of it belongs to it
FRAGMENT = 0.05  # ... when its area is at least this fraction of the digit's largest part
CUT = 0.1  # a part cut by the image's edge is the digit only if no whole part is this large
# Ink this fraction of the digit's strength, joined to it, is part of it; the fraction is
# raised step by step while what it joins spreads past the digit.
FAINT_STEPS = (0.15, 0.3, 0.5)
SPREAD = 0.5  # ... "past the digit": this fraction of the digit's size beyond its box
ADDED = 1.5  # ... or more faint ink than this many times the strong ink
LOCAL_GAIN = 3.0  # faint parts are brightened towards the strokes around them, at most this much
LINE_LENGTH = 0.6  # a paper line spans at least this fraction of the image
LINE_WIDTH = 3  # ... and is at most this many work pixels wide; strokes are wider
LINE_MIN_SIDE = 64  # smaller images are taken to hold no paper lines (a drawn or cut digit)
THIN_STROKE = 0.06  # strokes thinner than this fraction of the digit's longer side are widened
MNIST_STROKE = 0.1  # ... to this fraction, about MNIST's
WORK_SIDE = 384  # larger images are scaled down (by area) to this longer side first

# One image is a few hundred pixels a side: OpenCV's worker threads cost more than they save
# on it (more so while other requests or processes use the cores), so it runs on the caller's.
cv2.setNumThreads(1)

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
    """White ink on black in [0, 1]: the digit only, with paper, lines, frame and speckle at 0.

    Works on photos as well as scans: the paper may be lit unevenly or lie half in a shadow, lie
    on a darker desk, carry ruled or squared lines or a frame, have a neighbouring digit cut by
    the edge, and the picture may be noisy.

    1. Polarity (`paper_is_light`): paper is what most of a window shows, and what a closing
       (or an opening) leaves where thin things were; ink departs from both. The side (darker
       or lighter) with more departure is the ink, and the image is turned so the ink is light.
    2. Background (`flatten_background`): an opening larger than a stroke removes the ink and
       keeps paper, desk, lighting and shadow edges; the ink is what rises above it, divided
       by the paper's brightness.
    3. Lines (`paper_lines`): long, thin, straight runs across the image are ruled or squared
       paper and are set aside, except where a stroke crosses them.
    4. Ink (`ink_threshold`, `digit_components`): an Otsu threshold above the noise finds the
       strong ink; connected components that are frame lines, desk strips or parts cut by the
       image's edge are dropped, then the largest component and the fragments near it are the
       digit.
    5. Faint ink (`grow_faint`): fainter ink connected to the digit is part of it (a pencil
       line pressed lightly, the far side of a zero), as long as what it connects does not
       spread past the digit (a shadow's edge, a line). Faint parts are then brightened towards
       the strokes around them and the whole stretched so the ink is 1.
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
    floor = noise_floor(ink)
    lines = paper_lines(ink > floor)
    core = ink > ink_threshold(ink, floor)
    if lines.any():
        ink = np.where(lines, 0, ink).astype(np.float32)
        core = without_line_specks(core & ~lines, lines)
    count, labels, stats = components(core)
    kept = among(labels, count, digit_components(labels, count, stats, k))
    if not kept.any() or float(np.percentile(rise[kept], 95)) < MIN_CONTRAST:
        raise MnistlabError("blank image: no ink found (nothing differs from the background)")
    level = float(np.percentile(ink[kept], 95))
    reach = max(1, round(max(small.shape) / 150))  # antialiased stroke edges beside the core
    # The rest looks no further from the digit than faint ink may reach: a crop, for speed.
    area = digit_area(kept, reach)
    ink, kept = ink[area], kept[area]
    region = grow_faint(ink, kept, level) | (dilate(kept, reach) & (ink > floor))
    digit = np.zeros(small.shape, dtype=np.float32)
    digit[area] = brighten_faint(ink, region, level)
    return digit


def digit_area(kept: np.ndarray, reach: int) -> tuple[slice, slice]:
    """The digit's box widened by as far as `grow_faint` may let it spread, and a bit."""
    rows = np.flatnonzero(kept.any(axis=1))
    cols = np.flatnonzero(kept.any(axis=0))
    size = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    margin = math.ceil(SPREAD * size) + reach + 2
    height, width = kept.shape
    return (
        slice(max(0, rows[0] - margin), min(height, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(width, cols[-1] + margin + 1)),
    )


def work_size(gray: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Scaled down by area averaging so the longer side is at most `side` (photos are large)."""
    height, width = gray.shape
    gray = np.asarray(gray, dtype=np.float32)
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    whole = int(1 / scale)
    if whole >= 2:  # whole blocks first (the last few rows or columns dropped to fit them):
        # OpenCV's fast path, half the time of one step
        gray = gray[: height - height % whole, : width - width % whole]
        blocks = (gray.shape[1] // whole, gray.shape[0] // whole)
        gray = cv2.resize(gray, blocks, interpolation=cv2.INTER_AREA)
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def stroke_window(shape: tuple[int, ...]) -> int:
    """Side of the morphological window: wider than any stroke, so openings remove the ink.

    A digit fits in the shorter side and its strokes are rarely wider than a fifth of it.
    """
    return max(3, round(min(shape) / 4)) | 1


def box(k: int, height: int | None = None) -> np.ndarray:
    """A k wide, `height` (default k) high rectangle, as OpenCV's morphology takes it."""
    return cv2.getStructuringElement(cv2.MORPH_RECT, (k, k if height is None else height))


def max_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum over a k x k window (k odd) centred on each pixel; the window is cut at the
    image's edges (the same as repeating the edge)."""
    return cv2.dilate(a, box(k), borderType=cv2.BORDER_REPLICATE)


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Removes light structures narrower than k, keeps larger ones and smooth ramps."""
    return cv2.morphologyEx(a, cv2.MORPH_OPEN, box(k), borderType=cv2.BORDER_REPLICATE)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return max_filter(mask.astype(np.uint8), 2 * radius + 1).astype(bool)


def paper_is_light(gray: np.ndarray) -> bool:
    """True when the ink is darker than the paper.

    Two views of "paper" in a window a sixth of the shorter side wide (wider than strokes):

    - its median: most of the window is paper, so the median is the paper there (the desk on
      a desk, the shadowed paper in a shadow, the paper between squared paper's lines);
    - a closing (for dark ink) or an opening (for light ink): the ink's side of the image with
      everything thinner than the window filled in.

    Ink departs from both: what departs darker from both is dark ink, what departs lighter
    from both light ink, and the side with more is the ink. Each view alone is fooled: the
    median by a sheet's corners on a desk (it rounds them off), the opening by the light
    squares between squared paper's lines or a loop inside thin strokes.

    A 3x3 median first removes salt-and-pepper specks (they would count on both sides), on
    images large enough that it leaves 1 px strokes; large images are looked at halved (the
    decision is global, and cheaper so); rows and columns that are one paper line are evened
    out (`without_straight_lines`: dense lines would move the median); a band along the
    edges, where a frame line makes the paper outside it a thin strip, is left out.
    """
    small = np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    if min(small.shape) >= 64:
        small = cv2.medianBlur(small, 3)
    if min(small.shape) >= 256:
        small = cv2.resize(small, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    if min(small.shape) >= LINE_MIN_SIDE:
        small = without_straight_lines(small)
    window = min(max(9, round(min(small.shape) / 6) | 1), 255)
    pixels = small.astype(np.int16)
    median = cv2.medianBlur(small, window).astype(np.int16)
    filled = cv2.morphologyEx(small, cv2.MORPH_CLOSE, box(window)).astype(np.int16)
    emptied = cv2.morphologyEx(small, cv2.MORPH_OPEN, box(window)).astype(np.int16)
    dark = np.minimum(median - pixels, filled - pixels)
    light = np.minimum(pixels - median, pixels - emptied)
    band = edge_band(small.shape)
    if min(small.shape) > 4 * band:
        dark, light = dark[band:-band, band:-band], light[band:-band, band:-band]
    significant = round(0.1 * 255)  # less is noise, paper texture or JPEG ringing
    return int(dark[dark > significant].sum()) >= int(light[light > significant].sum())


def without_straight_lines(image: np.ndarray) -> np.ndarray:
    """`image` (uint8) with rows and columns that are mostly one thin line raised or lowered
    to the level of the rows (columns) around them, whatever the lines' polarity.

    Dense ruled or squared paper moves a window's median off the paper; a line across the
    image makes its row's median the line's level, a narrow dip (or peak) in the profile of row
    medians that a desk's or a shadow's broad steps are not.
    """
    result = image.astype(np.int16)
    for axis in (1, 0):  # rows, then columns
        profile = np.median(result, axis=axis).astype(np.float32).reshape(-1, 1)
        kernel = box(1, 3)  # a line is a row or two here; the paper between lines wider
        filled = cv2.morphologyEx(profile, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
        emptied = cv2.morphologyEx(profile, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
        shift = np.round((filled - profile) - (profile - emptied)).astype(np.int16)[:, 0]
        result += shift[:, None] if axis == 1 else shift[None, :]
    return np.clip(result, 0, 255).astype(np.uint8)


def edge_band(shape: tuple[int, ...]) -> int:
    """Width of the band along the image's edges where frame lines lie."""
    return max(2, round(EDGE_BAND * max(shape)))


def flatten_background(light: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rise, ink): how far each pixel rises above the background, raw and per paper brightness.

    The opening reproduces ramps and straight steps (a shadow's edge) exactly; it is taken in
    8 bits (half the time, and 1/255 is below any noise). On a uniform page the background is
    one number, the paper's level, so strokes wider than the window survive. Dividing by the
    paper's brightness undoes uneven lighting and shadows; it is capped at 3x so a dark desk's
    noise is not blown up.
    """
    levels = np.clip(light * 255 + 0.5, 0, 255).astype(np.uint8)
    opened = cv2.morphologyEx(levels, cv2.MORPH_OPEN, box(k), borderType=cv2.BORDER_REPLICATE)
    low, fifth, middle, high = level_percentiles(opened, (2, 5, 50, 98))
    if high - low < FLAT * 255:  # one level: the paper's own, not its 8-bit step
        paper_pixels = light[levels <= middle]
        background = np.full_like(light, float(np.median(paper_pixels)))
        paper = 1 - background
    else:
        background = opened.astype(np.float32) / 255
        # The brightest paper (95th percentile of 1 - background) divided by 3 at most
        paper = np.maximum(1 - background, (255 - fifth) / 255 / 3, dtype=np.float32)
    rise = light - background
    return rise, rise / np.maximum(paper, 1e-3)


def level_percentiles(levels: np.ndarray, q: tuple[float, ...]) -> list[int]:
    """Percentiles of an 8-bit image from its histogram (a sort would cost more than the rest)."""
    cumulative = np.cumsum(np.bincount(levels.ravel(), minlength=256))
    return [int(np.searchsorted(cumulative, v / 100 * cumulative[-1])) for v in q]


def noise_floor(ink: np.ndarray) -> float:
    """A level that noise on the paper rarely reaches: 6 standard deviations of the noise.

    The noise is measured from neighbouring pixels' differences (their median, a robust
    estimate), which large smooth structures (a desk, a strip of it the opening let through)
    do not move as they move the image's own spread. Above 0 the ink rises from the opening's
    minimum, a few deviations below the noise's middle, hence 6 rather than the usual 4. At
    least 2% of the strongest ink, so a noiseless image's rounding dust is not ink; both terms
    scale with the ink, so faint ink on grey paper is cut as strong ink on white is.
    """
    sample = ink[::2] if ink.size > 20_000 else ink
    steps = np.abs(np.diff(sample, axis=1))
    sigma = 1.4826 * float(np.median(steps)) / math.sqrt(2)
    return max(6 * sigma, 0.02 * float(ink.max()))


def ink_threshold(ink: np.ndarray, floor: float | None = None) -> float:
    """Otsu's threshold over the pixels above the noise floor: ink against fainter lines."""
    floor = noise_floor(ink) if floor is None else floor
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


def paper_lines(detail: np.ndarray) -> np.ndarray:
    """The pixels of ruled or squared paper's lines among `detail` (ink and lines).

    A line runs straight across most of the image and is a few pixels thin. A run of detail at
    least LINE_LENGTH of the image long along a row (or column) is a line, except its pixels
    where the detail is thicker across it than a line: there a stroke crosses or lies along
    it, and the stroke keeps them. Where a horizontal and a vertical line cross, each is thick
    for the other: those specks stay here and are dropped with `without_line_specks`. Only
    horizontal and vertical lines (within the tilt a run three pixels thick allows) are found.
    """
    height, width = detail.shape
    lines = np.zeros_like(detail)
    if min(height, width) < LINE_MIN_SIDE or not detail.any():
        return lines
    mask = detail.astype(np.uint8)
    for horizontal in (True, False):
        length = round(LINE_LENGTH * (width if horizontal else height))
        # Three rows (columns) as one: a slightly tilted line steps by a pixel now and then.
        band = cv2.dilate(mask, box(1, 3) if horizontal else box(3, 1))
        if band.sum(axis=1 if horizontal else 0, dtype=np.int32).max() < length:
            continue  # nothing runs that far: no line, and the costly steps are skipped
        runs = cv2.morphologyEx(
            band, cv2.MORPH_OPEN, box(length, 1) if horizontal else box(1, length)
        )
        if not runs.any():
            continue
        across = box(1, LINE_WIDTH + 1) if horizontal else box(LINE_WIDTH + 1, 1)
        thick = cv2.morphologyEx(mask, cv2.MORPH_OPEN, across)
        lines |= (runs > 0) & (mask > 0) & (thick == 0)
    return lines


def without_line_specks(core: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """`core` less the specks left where lines cross: parts lying wholly beside the lines."""
    count, labels, _ = components(core)
    if count == 0:
        return core
    away = labels[core & ~dilate(lines, 1)]
    return among(labels, count, away[away > 0])


def components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components: (count, labels 1..count on the mask and 0 elsewhere, stats).

    stats[n] is OpenCV's left, top, width, height, area of label n (row 0 is the background).
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    return count - 1, labels, stats


def among(labels: np.ndarray, count: int, chosen) -> np.ndarray:
    """The mask of the pixels whose label is one of `chosen` (a lookup, faster than isin)."""
    chosen = np.asarray(chosen, dtype=np.int64).ravel()
    if chosen.size == 1:  # the usual case: one comparison is cheaper still
        return labels == chosen[0] if chosen[0] > 0 else np.zeros(labels.shape, dtype=bool)
    table = np.zeros(count + 1, dtype=bool)
    table[chosen] = True
    table[0] = False
    return table[labels]


def digit_components(labels: np.ndarray, count: int, stats: np.ndarray, window: int) -> list[int]:
    """The labels that make up the digit: the largest plausible component and its neighbours.

    Not the digit: frame lines (almost all of the component in a band along the image's edge,
    and long) and edge strips: a desk seen as a strip narrower than the background window
    escapes the opening, so it shows up as "ink" lying along an edge for half of it or more,
    and almost all within a window's width of the edges. A part cut by the image's edge is a
    neighbouring digit when a whole part of some size is in the image: then that is the digit.
    Fragments of the digit (a detached bar, a broken stroke) are kept when they are not specks,
    lie close to the largest part and are not cut by the edge unless it is.
    """
    if count == 0:
        raise MnistlabError("blank image: no ink found (nothing differs from the background)")
    height, width = labels.shape
    band = edge_band(labels.shape)
    rows, cols = np.nonzero(labels)
    which = labels[rows, cols]
    distance = np.minimum.reduce([rows, height - 1 - rows, cols, width - 1 - cols])
    in_band = np.bincount(which, weights=distance < band, minlength=count + 1)
    near_edge = np.bincount(which, weights=distance < window, minlength=count + 1)
    along = edge_contact(labels, count)
    left, top, w, h, area = (stats[:, i] for i in range(5))
    cut = (left == 0) | (top == 0) | (left + w == width) | (top + h == height)
    candidates = []
    for number in range(1, count + 1):
        long = h[number] >= 0.5 * height or w[number] >= 0.5 * width
        if long and in_band[number] >= 0.9 * area[number]:
            continue  # a frame line
        if along[number] >= 0.5 and near_edge[number] >= 0.9 * area[number]:
            continue  # a strip of desk
        candidates.append(number)
    if not candidates:
        raise MnistlabError("blank image: no ink found (only lines along the edges)")
    largest = max(area[n] for n in candidates)
    whole = [n for n in candidates if not cut[n] and area[n] >= CUT * largest]
    main = max(whole or candidates, key=lambda n: area[n])
    reach = NEAR * max(h[main], w[main])
    bottom, right = top[main] + h[main] - 1, left[main] + w[main] - 1
    kept = [main]
    for n in candidates:
        gap = max(
            top[n] - bottom, top[main] - (top[n] + h[n] - 1),
            left[n] - right, left[main] - (left[n] + w[n] - 1), 0,
        )  # fmt: skip
        if n == main or area[n] < FRAGMENT * area[main] or gap > reach:
            continue
        if cut[n] and not cut[main]:
            continue  # the neighbouring digit, not a piece of this one
        kept.append(n)
    return kept


def edge_contact(labels: np.ndarray, count: int) -> np.ndarray:
    """For each label, the largest fraction of one image side that it touches."""
    sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
    contact = [np.bincount(side, minlength=count + 1) / len(side) for side in sides]
    return np.max(contact, axis=0)


def grow_faint(ink: np.ndarray, kept: np.ndarray, level: float) -> np.ndarray:
    """The digit's pixels with the fainter ink connected to them (hysteresis thresholding).

    The strong-ink threshold misses the lightly pressed parts of a stroke; a plain crop keeps
    them, so they must stay. Every component of the ink above the first of FAINT_STEPS of the
    digit's strength that touches the digit joins it. When that spreads more than SPREAD of
    the digit's size past its box or adds more than ADDED times its ink (it reached a line, a
    smudge, a neighbour), the next step is tried; when every step spreads, the strong ink
    alone is the digit. The far half of a zero drawn lightly adds about as much as the strong
    half and widens it by half its height at most.
    """
    rows = np.flatnonzero(kept.any(axis=1))
    cols = np.flatnonzero(kept.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    slack = SPREAD * max(bottom - top + 1, right - left + 1)
    for step in FAINT_STEPS:
        count, labels, stats = components(ink > step * level)
        joined = np.unique(labels[kept])
        joined = joined[joined > 0]
        if joined.size == 0:
            continue
        x, y, w, h = (stats[joined, i] for i in range(4))
        spread = max(
            top - y.min(), (y + h - 1).max() - bottom, left - x.min(), (x + w - 1).max() - right
        )
        grown = among(labels, count, joined) | kept
        if spread <= slack and grown.sum() <= (1 + ADDED) * kept.sum():
            return grown
    return kept


def brighten_faint(ink: np.ndarray, region: np.ndarray, level: float) -> np.ndarray:
    """The ink in `region` stretched so the digit's strokes are 1.

    Each pixel is divided by the strongest ink within a stroke's reach, so a faint part of a
    stroke (a pencil pressed lightly) comes up like the rest, by at most LOCAL_GAIN; the
    antialiased edges of a stroke stay softer than its middle, as in MNIST.
    """
    inside = np.where(region, ink, 0).astype(np.float32)
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    size = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    k = max(3, round(0.15 * size)) | 1  # wider than a stroke, narrower than a loop
    local = np.maximum(max_filter(inside, k), level / LOCAL_GAIN)
    return np.clip(inside / np.minimum(local, level), 0, 1).astype(np.float32)


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
    pen = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))  # a round pen, as MNIST's
    return cv2.dilate(np.pad(ink, k // 2).astype(np.float32), pen)


def fit_box(ink: np.ndarray, box: int = BOX) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio (antialiased).

    Shrinking averages over each output pixel's area, as MNIST's antialiasing did; a crop
    smaller than the box is enlarged smoothly.
    """
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return ink
    how = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(np.asarray(ink, dtype=np.float32), size, interpolation=how)
    # Cubic interpolation rings slightly below 0 and above 1 next to sharp edges.
    return np.clip(resized, 0, 1)


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


def as_28x28(gray: np.ndarray) -> np.ndarray:
    """A grayscale image that already is MNIST-style, unchanged (for --no-preprocess)."""
    if gray.shape != (SIZE, SIZE):
        height, width = gray.shape
        raise MnistlabError(
            f"image is {width}x{height}; without preprocessing it must be {SIZE}x{SIZE} "
            "(white ink on black)"
        )
    return gray.astype(np.float32)
