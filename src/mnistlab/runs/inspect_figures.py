"""Drawings of a network inspected on one image (models/inspect.py holds the numbers): per
view, the receptive fields as boxes on the image, the pixels the unit's gradient reaches, and
the feature maps; the first layer's kernels; and the HTML page that shows them in order.

Figures are bare matplotlib Figures (runs/figures.py): no pyplot, shown inline in Jupyter.
"""

import html
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mnistlab.models.inspect import LayerView, UnitField
from mnistlab.runs.figures import new_figure

LAYER_SIZE, KERNELS_WIDTH = (10, 4), 6  # inches
KERNEL_COLUMNS = 8
UNIT_COLORS = {"centre": "C1", "picked": "C0"}  # orange and blue, both clear on grey ink
PADDING_GREY = "0.85"  # the axes' colour around the image: pixels that are padding
MAX_BARS = 32  # 1x1 maps as bars, labelled by channel up to this many


# ----------------------------------------------------------------------------- pieces


def mosaic(maps: np.ndarray, columns: int, own_range: bool = True) -> np.ndarray:
    """[N, h, w] arrays tiled in rows of `columns`, a NaN pixel between tiles; each scaled
    to [0, 1] by its own range (`own_range`) or left as it is."""
    count, height, width = maps.shape
    rows = -(-count // columns)
    tiled = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for k, tile in enumerate(maps.astype(np.float64)):
        if own_range:
            low, high = tile.min(), tile.max()
            # A constant map (a ReLU that is off everywhere) is drawn as nothing, not as noise.
            tile = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        r, c = divmod(k, columns)
        tiled[r * (height + 1) : r * (height + 1) + height, c * (width + 1) :][:, :width] = tile
    return tiled


def mosaic_columns(count: int, aspect: float = 1.35) -> int:
    """Tiles per row for a mosaic about `aspect` times wider than tall, its last row as full
    as the row count allows."""
    columns = max(1, min(count, int(np.ceil(np.sqrt(count * aspect)))))
    rows = -(-count // columns)
    return -(-count // rows)


def with_bad(name: str, bad: str = "white") -> Colormap:
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=bad)


def unit_limits(shape: tuple[int, int], units: Sequence[UnitField]) -> tuple[float, float]:
    """Axis limits (low, high) in pixel coordinates that hold the image and every full box,
    so that a box reaching into the padding is drawn whole."""
    low, high = -0.5, max(shape) - 0.5
    for unit in units:
        if unit.box is not None:
            low = min(low, unit.box.top - 0.5, unit.box.left - 0.5)
            high = max(high, unit.box.bottom - 0.5, unit.box.right - 0.5)
    margin = 0.5 if (low, high) == (-0.5, max(shape) - 0.5) else 1.0
    return low - margin + 0.5, high + margin - 0.5


def show_pixels(ax: Axes, values: np.ndarray, limits: tuple[float, float], **style) -> object:
    """An [H, W] array with pixel p centred on coordinate p, on a grey ground (padding)."""
    height, width = values.shape
    image = ax.imshow(values, extent=(-0.5, width - 0.5, height - 0.5, -0.5), **style)
    ax.set_facecolor(PADDING_GREY)
    ax.set_xlim(limits)
    ax.set_ylim(limits[1], limits[0])  # row 0 at the top, as in the image
    return image


def draw_box(ax: Axes, unit: UnitField, kind: str, label: str | None = None) -> None:
    """The unit's receptive field: solid where it covers the image (gid "rf-KIND"), dashed
    where it reaches into the padding (gid "rf-KIND-padding")."""
    color = UNIT_COLORS[kind]
    box, inside = unit.box, unit.image_box
    if box is None:
        return
    if box != inside:
        full = Rectangle(
            (box.left - 0.5, box.top - 0.5), box.width, box.height,
            fill=False, edgecolor=color, linewidth=1.2, linestyle="--",
        )  # fmt: skip
        full.set_gid(f"rf-{kind}-padding")
        ax.add_patch(full)
    if inside is not None:
        solid = Rectangle(
            (inside.left - 0.5, inside.top - 0.5), inside.width, inside.height,
            fill=False, edgecolor=color, linewidth=2, label=label,
        )  # fmt: skip
        solid.set_gid(f"rf-{kind}")
        ax.add_patch(solid)
    # The centre of the box: where the unit sits over the input.
    ax.plot(
        [(box.left + box.right) / 2 - 0.5],
        [(box.top + box.bottom) / 2 - 0.5],
        marker="+", color=color, markersize=9, markeredgewidth=1.5,
    )  # fmt: skip


def drawn_box(fig: Figure, kind: str = "centre") -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the box drawn on the image in `fig` (the first panel),
    read back from the figure: what a reader sees, for checking against the gradient."""
    for patch in fig.axes[0].patches:
        if patch.get_gid() == f"rf-{kind}":
            x, y = patch.get_xy()
            top, left = round(y + 0.5), round(x + 0.5)
            return top, left, top + round(patch.get_height()), left + round(patch.get_width())
    return None


# ----------------------------------------------------------------------------- words


def unit_name(view: LayerView, unit: UnitField) -> str:
    """ "unit (14, 14)", or "every output" of a layer without a map (a linear layer)."""
    return f"unit ({unit.unit[0]}, {unit.unit[1]})" if view.maps is not None else "every output"


def unit_words(view: LayerView, unit: UnitField) -> str:
    """ "unit (14, 14) sees rows 13-15, columns 13-15 (3x3)" """
    where = unit_name(view, unit)
    if unit.box is None:
        return f"{where}: no box"
    size = f"{unit.box.height}x{unit.box.width}"
    if unit.box != unit.image_box:
        size += ", clipped at the image's edge"
    return f"{where} sees {unit.image_box or 'only padding'} ({size})"


def check_words(unit: UnitField) -> str:
    """What the gradients say about the box, in a sentence."""
    nonzero = int((unit.gradient != 0).sum())
    if unit.box is None:
        reach = unit.reach
        return f"the gradient reaches {nonzero} pixels" + (f" ({reach})" if reach else "")
    inside = (
        f"all {nonzero} pixels with a non-zero gradient lie inside it"
        if unit.outside == 0
        else f"{unit.outside} of {nonzero} pixels with a non-zero gradient lie OUTSIDE it"
    )
    if unit.spans and unit.holes == 0:
        linear = "the linear copy's gradient fills it"
    elif unit.spans:
        linear = f"the linear copy's gradient reaches each edge ({unit.holes} gaps inside)"
    else:
        linear = f"the linear copy's gradient reaches {unit.linear_reach}, NOT the box"
    return f"{inside}; {linear}"


def view_caption(view: LayerView) -> str:
    """The view's numbers and checks, for the page under its figure."""
    layer = view.layer
    shape = "x".join(map(str, layer.output_shape[1:]))
    parts = [f"output {shape}"]
    if layer.rf is not None:
        rf = f"RF {layer.rf}" if layer.rf == layer.rf_min else f"RF {layer.rf_min}-{layer.rf}"
        parts.append(f"{rf}, jump {layer.jump:g}, start {layer.start:g}")
    lines = ["; ".join(parts) + "."]
    if view.note:
        lines.append(view.note[0].upper() + view.note[1:] + ".")
    for kind, unit in (("Centre", view.centre), ("Picked", view.picked)):
        if unit is not None:
            lines.append(f"{kind} {unit_words(view, unit)}: {check_words(unit)}.")
    return " ".join(lines)


# ----------------------------------------------------------------------------- figures


def layer_figure(image: np.ndarray, view: LayerView) -> Figure:
    """One view: the receptive fields on the image, the pixels the unit's gradient reaches
    (the picked unit's when the view has one, else the centre's), and the feature maps."""
    fig = new_figure(LAYER_SIZE)
    digit_ax, grad_ax, maps_ax = fig.subplots(1, 3, width_ratios=(1, 1, 1.35))
    limits = unit_limits(image.shape, view.units)
    fig.suptitle(f"{view.number}. {view.title} ({view.paths[0]})", fontsize=11)

    show_pixels(digit_ax, image, limits, cmap="gray_r", vmin=0, vmax=1)
    for kind, unit in (("centre", view.centre), ("picked", view.picked)):
        if unit is not None:
            size = f"{unit.box.height}x{unit.box.width}" if unit.box else "no box"
            draw_box(digit_ax, unit, kind, f"{unit_name(view, unit)}: {size}")
    rf = view.layer.rf
    digit_ax.set_title("receptive field" if rf is not None else "receptive field unknown")
    if digit_ax.patches:
        digit_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncols=1)

    shown, kind = (view.picked, "picked") if view.picked else (view.centre, "centre")
    if shown is not None:
        magnitude = np.abs(shown.gradient)
        # Zero means "no path": left blank, not drawn as the smallest colour.
        logged = np.ma.masked_array(
            np.log10(np.where(magnitude > 0, magnitude, 1.0)), mask=magnitude == 0
        )
        pixels = show_pixels(grad_ax, logged, limits, cmap=with_bad("viridis", "white"))
        fig.colorbar(pixels, ax=grad_ax, shrink=0.7, label="log10 |gradient|")
        draw_box(grad_ax, shown, kind)
        whose = "the outputs depend" if view.maps is None else f"{unit_name(view, shown)} depends"
        grad_ax.set_title(f"pixels {whose} on")
        grad_ax.set_xlabel(
            f"{int((shown.gradient != 0).sum())} non-zero, "
            + ("none outside the box" if shown.outside == 0 else f"{shown.outside} outside!")
            if shown.box is not None
            else "no box to check",
            fontsize=9,
        )
    maps_panel(maps_ax, view)
    return fig


def maps_panel(ax: Axes, view: LayerView) -> None:
    """The view's feature maps for the image: tiles, or bars for 1x1 maps."""
    maps = view.maps
    if maps is None and view.values is None:
        ax.axis("off")
        ax.text(0.5, 0.5, f"no maps: output {view.layer.output_shape}", ha="center")
        return
    if maps is None or maps.shape[1:] == (1, 1):  # a value per channel: bars, not squares
        values = view.values if maps is None else maps[:, 0, 0]
        count = len(values)
        ax.bar(range(count), values, color="C2")
        ax.axhline(0, color="0.3", linewidth=0.8)
        if count <= MAX_BARS:
            ax.set_xticks(range(count))
            ax.tick_params(axis="x", labelsize=7 if count > 12 else 9)
        what = "1x1 maps" if maps is not None else "no map"
        ax.set(title=f"{count} values ({what})", xlabel="channel" if maps is not None else "output")
        return
    count, height, width = maps.shape
    ax.imshow(mosaic(maps, mosaic_columns(count)), cmap=with_bad("magma", "white"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{count} feature maps, {height}x{width}")
    ax.set_xlabel("each scaled to its own range", fontsize=9)


def kernels_figure(kernels: np.ndarray, layer: str) -> Figure:
    """The first convolution's kernels [out, in, kh, kw] (summed over input channels: one
    for a grayscale image) on one colour scale, red positive and blue negative."""
    weights = kernels.sum(axis=1)
    count, kh, kw = weights.shape
    columns = min(count, KERNEL_COLUMNS)
    tiles = mosaic(weights, columns, own_range=False)
    # As tall as the tiles need: one row of four kernels is a strip, not a square.
    height = KERNELS_WIDTH * tiles.shape[0] / tiles.shape[1] * 0.8 + 1.0
    fig = new_figure((KERNELS_WIDTH, min(max(height, 2.2), 6.0)))
    ax = fig.subplots()
    peak = float(np.abs(weights).max()) or 1.0
    image = ax.imshow(tiles, cmap=with_bad("RdBu_r", "white"), vmin=-peak, vmax=peak)
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{layer}: {count} kernels {kh}x{kw}, in rows of {columns}")
    return fig


# ----------------------------------------------------------------------------- the page


def page_html(
    title: str, intro: Sequence[str], summary_html: str, sections: Sequence[tuple[str, str, str]]
) -> str:
    """A self-contained HTML page: a title, paragraphs, the summary table, then each section
    (heading, text, PNG file name beside the page)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:62em;margin:1em auto;padding:0 1em}"
        "img{max-width:100%}table{border-collapse:collapse;font-size:90%}"
        "td,th{padding:0 .6em;text-align:right}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p>{html.escape(line)}</p>" for line in intro),
        summary_html,
    ]
    for heading, text, png in sections:
        anchor = html.escape(png.removesuffix(".png"), quote=True)
        out += [
            f'<h2 id="{anchor}">{html.escape(heading)}</h2>',
            f"<p>{html.escape(text)}</p>",
            f'<img src="{html.escape(png, quote=True)}" alt="{html.escape(heading, quote=True)}">',
        ]
    return "\n".join([*out, "</body></html>", ""])
