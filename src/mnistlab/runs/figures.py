"""Figures without pyplot: bare matplotlib Figures (nothing registered globally, nothing to
close), shown inline in Jupyter, written as PNGs together with the report they belong to."""

import io
from pathlib import Path

from matplotlib.figure import Figure

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
