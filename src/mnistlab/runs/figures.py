"""Figures without pyplot: bare matplotlib Figures (nothing registered globally, nothing to
close), shown inline in Jupyter, written as PNGs together with the report they belong to;
and what makes any of them readable: plain numbers on log axes, point labels that collide
with nothing."""

import io
import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import LogFormatter
from matplotlib.transforms import Bbox

DPI = 100  # at DPI dots per inch a (10, 4) figure is a 1000x400 PNG


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


class InlineFigure(Figure):
    """A Figure that Jupyter shows as its PNG, with no pyplot needed."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def new_figure(size: tuple[float, float], layout: str | None = "constrained") -> Figure:
    # Not made through pyplot: it is never registered globally, so nothing needs closing.
    return InlineFigure(figsize=size, dpi=DPI, layout=layout)


class FigureWriter:
    """Renders PNGs for one folder under unique file names and returns their Markdown links.

    The files are kept in `files` and written together with the report, all or nothing.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[Path, bytes] = {}

    def write(self, fig: Figure, stem: str, alt: str) -> str:
        name, n = f"{stem}.png", 2
        while self.folder / name in self.files:  # two runs with the same directory name
            name, n = f"{stem}-{n}.png", n + 1
        self.files[self.folder / name] = png_bytes(fig)
        return f"![{alt}]({self.folder.name}/{name})"


# ----------------------------------------------------------------------------- log axes


def plain_number(value: float) -> str:
    """A tick value as people write it: "0.01", "2.308", "10,000" (no 2.308x10^0, no 1e+04):
    the fewest decimals (up to 6) that keep it exact."""
    decimals = next((d for d in range(7) if math.isclose(round(value, d), value, rel_tol=1e-9)), 6)
    return f"{value:,.{decimals}f}"


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers; which ticks get one is LogFormatter's choice
    (decades, and the ticks between them on a short axis)."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return plain_number(x)


def plain_log_axis(axis: Axis, between: bool = True) -> None:
    """Put plain tick labels on a log-scale axis. `between`: on an axis of up to two decades,
    label some ticks between the powers of ten too (2, 3, 4 and 6 times one); off where wide
    labels ("200,000") would crowd each other."""
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    thresholds = (2, 0.5) if between else (0, 0)
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=thresholds))


# ----------------------------------------------------------------------------- point labels


def renderer_of(fig: Figure) -> RendererBase:
    """The Agg renderer the figure's PNG will be drawn with, its layout done and then frozen,
    so that text measured now sits where it is measured when the PNG is written."""
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")  # labels added from here on move no axes
    return canvas.get_renderer()


# Distances (pixels) and directions tried around a point: nearest first, then above first.
LABEL_RADII = (3, 8, 14, 22, 32, 44, 58, 76, 96)
LABEL_DIRECTIONS = tuple(
    (math.cos(math.radians(a)), math.sin(math.radians(a)))
    for a in (90, 60, 120, 30, 150, 0, 180, 270, 300, 240, 330, 210)
)
MARKER_RADIUS = 4.0  # pixels around a plotted point that a label must not cover


def place_labels(
    ax: Axes,
    labels: list[tuple[str, float, float]],
    renderer: RendererBase,
    taken: list[Bbox],
    fontsize: float = 8,
) -> list[Text]:
    """Write each (text, x, y) beside its data point, where its box overlaps no box in `taken`
    (labels placed before, legends), no plotted point, and stays inside the axes; a label
    that had to move away gets a thin line to its point. Each placed box joins `taken`.

    The figure's layout must be frozen first (renderer_of): a label is placed by pixels.
    """
    points = [
        ax.transData.transform(offsets)
        for collection in ax.collections
        for offsets in [collection.get_offsets()]
        if len(offsets)
    ]
    markers = [
        Bbox.from_extents(
            px - MARKER_RADIUS, py - MARKER_RADIUS, px + MARKER_RADIUS, py + MARKER_RADIUS
        )
        for block in points
        for px, py in block
    ]
    inside = ax.get_window_extent(renderer).padded(-2)
    scale = 72 / fig_dpi(ax)
    placed = []
    for text, x, y in labels:
        probe = ax.text(0, 0, text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        width, height = extent.width + 2, extent.height + 2  # a pixel of air around it
        px, py = ax.transData.transform((x, y))
        spot = _free_spot(px, py, width, height, inside, taken + markers)
        near = spot is None or spot[2] <= LABEL_RADII[1]
        cx, cy = (px + LABEL_RADII[0], py + height) if spot is None else spot[:2]
        label = ax.annotate(
            text,
            (x, y),
            xytext=((cx - px) * scale, (cy - py) * scale),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=fontsize,
            arrowprops=None if near else {"arrowstyle": "-", "color": "0.45", "lw": 0.6,
                                          "shrinkA": 0, "shrinkB": 2},
        )  # fmt: skip
        taken.append(label.get_window_extent(renderer).padded(1))
        placed.append(label)
    return placed


def _free_spot(
    px: float, py: float, width: float, height: float, inside: Bbox, taken: list[Bbox]
) -> tuple[float, float, float] | None:
    """The centre (and distance) of the first box of width x height around (px, py) that
    lies inside `inside` and overlaps nothing in `taken`; None when there is none."""
    for radius in LABEL_RADII:
        for dx, dy in LABEL_DIRECTIONS:
            cx = px + dx * (radius + width / 2)
            cy = py + dy * (radius + height / 2)
            box = Bbox.from_extents(
                cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2
            )
            if not _holds(inside, box):
                continue
            if not any(box.overlaps(other) for other in taken):
                return cx, cy, radius
    return None


def _holds(outer: Bbox, inner: Bbox) -> bool:
    return (
        outer.x0 <= inner.x0
        and inner.x1 <= outer.x1
        and outer.y0 <= inner.y0
        and inner.y1 <= outer.y1
    )


def fig_dpi(ax: Axes) -> float:
    return ax.get_figure(root=True).dpi
