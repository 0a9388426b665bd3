"""`ml.inspect` and `mnistlab inspect`: what each layer of a network sees of one image.

The network (a registered name, a [net] table or experiment file, your nn.Module, a run or
weights file, "final") runs on one test image of its dataset, or on an image file made
MNIST-style as `predict` makes it. models/inspect.py computes the receptive fields, the
gradients that check them and the feature maps; runs/inspect_figures.py draws them; `out`
gets index.html, kernels.png and one PNG per layer.

torch and matplotlib are imported when a function runs, as elsewhere in inference/, so that
the API module stays quick to import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnistlab.errors import MnistlabError, arg, given

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure
    from torch import nn

    from mnistlab.models.inspect import LayerView, NetworkView
    from mnistlab.models.summary import Summary

INDEX, KERNELS = "index.html", "kernels.png"
# What a killed writer of an older version left inside the folder: `.index.html.<hex>.tmp`.
LEFTOVER = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
INTRO = (
    "Each layer: on the left, the image with the receptive field (RF) of the unit in the "
    "middle of the layer's map{picked}, as the summary computes it from the RF, jump and "
    "start (dashed where it reaches into the padding, grey). In the middle, the pixels that "
    "unit depends on: where its gradient with respect to the image is not zero. Every one "
    "lies inside the box, and in a copy of the network with the activations replaced by the "
    "identity and max-pools by average pools they fill it. On the right, the layer's feature "
    "maps for this image."
)


@dataclass
class Inspection:
    """A network inspected on one image: the numbers of every layer (`layers`), the
    summary, the prediction, and the figures (`figure(...)`, shown inline in Jupyter)."""

    model: str  # the network, as it was named
    image: np.ndarray = field(repr=False)  # [H, W] in [0, 1], white ink on black, as fed
    source: str  # "mnist test image 0 (label 7)", or the image file
    network: NetworkView = field(repr=False)  # the numbers (models/inspect.py)
    classes: tuple[str, ...] = field(repr=False)
    out: Path | None = None  # the folder written, if any
    _figures: dict[str, Figure] | None = field(default=None, init=False, repr=False)

    @property
    def layers(self) -> list[LayerView]:
        return self.network.layers

    @property
    def summary(self) -> Summary:
        return self.network.summary

    @property
    def prediction(self) -> tuple[str, float] | None:
        """(class name, probability) the network gives the image; None when its output is
        not one row of class scores."""
        probs = self.network.probabilities
        if probs is None or len(probs) != len(self.classes):
            return None
        best = int(np.argmax(probs))
        return self.classes[best], float(probs[best])

    @property
    def checked(self) -> bool:
        """Every drawn box holds its unit's non-zero gradient and the linear copy spans it."""
        return all(u.checked for view in self.layers for u in view.units if u.box is not None)

    @property
    def figures(self) -> dict[str, Figure]:
        """The figures by name: "kernels" (when there is a convolution), then each layer."""
        keys = (["kernels"] if self.network.kernels is not None else []) + [
            view.name for view in self.layers
        ]
        return {key: self._figure(key) for key in keys}

    def figure(self, layer: int | str = 1) -> Figure:
        """One figure: "kernels", a layer by its number here (1 is the first), or by the
        summary's name of any of its layers ("Conv2d-5" and "ReLU-6" give the same)."""
        for number, view in enumerate(self.layers, start=1):
            if layer in (number, view.name) or layer in view.names:
                return self._figure(view.name)
        if layer == "kernels" and self.network.kernels is not None:
            return self._figure("kernels")
        names = ", ".join(view.name for view in self.layers)
        raise MnistlabError(
            f"figure({layer!r}): no such layer; give 'kernels', a number from 1 to "
            f"{len(self.layers)} or a layer's name: {names}"
        )

    def _figure(self, key: str) -> Figure:
        """Drawn when first asked for (a notebook shows one or two of them), then kept."""
        if self._figures is None:
            self._figures = {}
        if key not in self._figures:
            import matplotlib.style

            from mnistlab.runs.inspect_figures import kernels_figure, layer_figure

            with matplotlib.style.context("default"):
                if key == "kernels":
                    layer = self.network.kernels_layer or "first layer"
                    self._figures[key] = kernels_figure(self.network.kernels, layer)
                else:
                    view = next(view for view in self.layers if view.name == key)
                    self._figures[key] = layer_figure(self.image, view)
        return self._figures[key]

    def files(self) -> dict[str, bytes]:
        """The page and its PNGs, by file name: what `out` gets."""
        import matplotlib.style

        from mnistlab.models.summary import format_html
        from mnistlab.runs.figures import png_bytes
        from mnistlab.runs.inspect_figures import page_html, view_caption

        pngs, sections = {}, []
        with matplotlib.style.context("default"):
            if "kernels" in self.figures:
                pngs[KERNELS] = png_bytes(self.figures["kernels"])
                sections.append(("The first layer's kernels", self.kernels_words(), KERNELS))
            for view in self.layers:
                name = f"{view.number:02d}-{view.name.lower()}.png"
                pngs[name] = png_bytes(self.figures[view.name])
                sections.append((f"{view.number}. {view.title}", view_caption(view), name))
        picked = any(view.picked for view in self.layers)
        intro = [self.headline(), INTRO.format(picked=" (and of the unit you picked)" * picked)]
        if not self.network.exact:
            intro.append(
                "The network did not run in float64, so its gradients were taken in float32, "
                "where rounding may leave tiny values on pixels without a path."
            )
        page = page_html(
            f"{self.model}: what each layer sees", intro, format_html(self.summary), sections
        )
        return {INDEX: page.encode(), **pngs}

    def kernels_words(self) -> str:
        kernels = self.network.kernels
        if kernels is None:
            return ""
        out, inputs, kh, kw = kernels.shape
        summed = " (summed over its input channels)" if inputs > 1 else ""
        return (
            f"{self.network.kernels_layer}: {out} kernels of {kh}x{kw} weights{summed}, on one "
            "colour scale: where a kernel is red a bright pixel raises its output, where blue "
            "it lowers it."
        )

    def headline(self) -> str:
        prediction = self.prediction
        said = f": predicted {prediction[0]} ({prediction[1]:.1%})" if prediction else ""
        return f"{self.model} on {self.source}{said}."

    def __str__(self) -> str:
        """One line per layer: its output, RF, the centre unit's box and the checks."""
        rows = [["layer", "output", "RF", "centre unit sees", "checked"]]
        for view in self.layers:
            for kind, unit in (("", view.centre), ("picked ", view.picked)):
                if unit is None:
                    continue
                layer = view.layer
                rf = "?" if layer.rf is None else str(layer.rf)
                box = str(unit.image_box) if unit.box is not None else view.note or "-"
                ok = "-" if unit.box is None else ("yes" if unit.checked else "NO")
                name = view.title if not kind else f"  {kind}({unit.unit[0]}, {unit.unit[1]})"
                shape = "x".join(map(str, layer.output_shape[1:])) if not kind else ""
                rows.append([name, shape, rf if not kind else "", box, ok])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [self.headline()]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        if self.out is not None:
            count = len(self.layers) + (self.network.kernels is not None)
            lines.append(f"wrote {self.out / INDEX} and {count} figures")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's text form
        printer.text(str(self))


# ----------------------------------------------------------------------------- inputs


def _network(target: Any, model: nn.Module | None) -> tuple[nn.Module, dict[str, Any], str, bool]:
    """(network, its metadata, its name, whether its code is the user's) for anything
    inspect takes."""
    from torch import nn

    from mnistlab import weights
    from mnistlab.config import load_config
    from mnistlab.models import FINAL, build
    from mnistlab.runs.rundir import is_run_dir, load_model, read_info

    if isinstance(target, nn.Module):
        return target, {}, type(target).__name__, True
    if isinstance(target, type) and issubclass(target, nn.Module):
        return target(), {}, target.__name__, True
    if isinstance(target, Mapping):  # a [net] table
        return build(target), {}, "[net] table", False
    run_dir = getattr(target, "run_dir", None)
    if run_dir is not None and isinstance(getattr(target, "model", None), nn.Module):
        return target.model, read_info(run_dir), Path(run_dir).name, True  # a TrainResult
    if not isinstance(target, str | Path) or not str(target).strip():
        # Only Python passes something else than a string; the command line passes a word.
        what = given("model_or_run", target) if not isinstance(target, str) else "model ''"
        raise MnistlabError(
            f"{what}: pass an nn.Module, a registered model name, 'package.module:Class', an "
            f"experiment .toml, a run directory, a weights file or {FINAL!r}"
        )
    text = str(target)
    if text == FINAL:
        path = weights.shipped_weights()
        if not path.is_file():
            raise MnistlabError(
                f"{path}: the shipped model is missing from this installation; reinstall "
                "mnistlab, or inspect a run directory"
            )
        trained, meta = load_model(path, model)
        return trained, meta, FINAL, False
    if text.endswith(".toml"):
        cfg = load_config(text)
        return build(cfg.model, cfg.net), {"dataset": cfg.dataset}, text, ":" in cfg.model
    if ":" not in text and ("/" in text or text.endswith(".pt") or Path(text).is_dir()):
        trained, meta = load_model(text, model)
        if is_run_dir(text):
            meta = {**meta, "data_dir": read_info(text).get("data_dir")}
        return trained, meta, text, True
    try:
        return build(text), {}, text, ":" in text
    except MnistlabError as e:
        if ":" in text or not str(e).startswith("unknown model"):
            raise
        raise MnistlabError(
            f"{e}; or a run directory, a weights file, an experiment .toml or {FINAL!r}"
        ) from None


def _test_image(digit: Any, dataset: str, data_dir: Any) -> tuple[np.ndarray, int]:
    """Test image `digit` of the dataset in [0, 1], and its label."""
    from mnistlab.data.datasets import load_split

    if isinstance(digit, bool) or not isinstance(digit, int | np.integer):
        raise MnistlabError(
            f"{given('digit', digit)}: must be a whole number, the index of a test image"
        )
    images, labels = load_split(dataset, train=False, root=data_dir)
    if not 0 <= digit < len(images):
        raise MnistlabError(
            f"{given('digit', digit)}: the {dataset} test split has {len(images):,} images; "
            f"give 0 to {len(images) - 1}"
        )
    return images[int(digit)].numpy().astype(np.float32) / 255, int(labels[int(digit)])


def _image_file(image: Any, digits: bool) -> np.ndarray:
    """An image file as the model's 28x28 input in [0, 1], prepared as predict does."""
    from mnistlab.inference.classify import file_kind_problem, prepare_file

    if not isinstance(image, str | Path) or not str(image).strip():
        raise MnistlabError(f"{given('image', image)}: give the path of an image file")
    problem = file_kind_problem(image)
    if problem is not None:
        raise MnistlabError(f"{given('image', image)}: {problem}; give an image file")
    try:
        return prepare_file(image, preprocess_image=digits)
    except MnistlabError as e:
        reason = str(e).removeprefix(f"{image}: ")
        raise MnistlabError(f"{given('image', image)}: {reason}") from None


def check_folder(out: Path) -> None:
    """Inspect replaces its whole folder: refuse one holding anything but an inspection
    (index.html and PNGs), so that no file of the user's is lost."""
    try:
        if not out.is_dir():
            return
        for entry in out.iterdir():
            ours = entry.name == INDEX or entry.suffix == ".png"
            if ours and entry.is_file() or LEFTOVER.fullmatch(entry.name):
                continue
            raise MnistlabError(
                f"{out}: holds {entry.name}, which is not part of an inspection (index.html "
                f"and PNGs); inspect replaces its whole folder: give {arg('out')} a new folder "
                "or one holding only an inspection"
            )
    except OSError as e:
        raise MnistlabError(
            f"{out}: cannot read the folder ({e.strerror or e}); give {arg('out')} a readable "
            "folder"
        ) from None


# ----------------------------------------------------------------------------- the function


def inspect(
    model_or_run: Any = "final",
    *,
    digit: int | None = None,
    image: str | Path | None = None,
    unit: tuple[str | int, int, int] | str | None = None,
    out: str | Path | None = None,
    model: nn.Module | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    data_dir: str | Path | None = None,
) -> Inspection:
    """What each layer of a network sees of one image: per layer, the receptive field of the
    unit in the middle of its map drawn as a box on the image, checked against that unit's
    gradient; the pixels the gradient reaches; the feature maps; and the first layer's
    kernels. Returns an Inspection (print it for a table; `.figure("Conv2d-5")` or
    `.figures` for the matplotlib Figures; `.layers` for the numbers).

    `model_or_run`: an nn.Module (its weights as they are) or class, a registered name
    ("seed"), "package.module:Class" or "path/file.py:Class", a [net] table or experiment
    .toml (untrained), a run directory, a weights file, a TrainResult, or "final" (the
    shipped model). `digit`: the index of a test image of the network's dataset (default 0);
    or `image`: an image file, made MNIST-style as `predict` does. `unit`: also draw this
    unit's receptive field: (layer, y, x) or "layer,y,x", the layer by its name in the
    summary ("Conv2d-5"), its number there (5) or its path in the model. `out`: a folder to
    write index.html, kernels.png and one PNG per layer into (replaced as a whole). `model`:
    an untrained instance to load a run's weights into (a class defined in a notebook).
    `device`: where the network runs (default CUDA when present); `threads`: torch CPU
    threads (sets torch.set_num_threads); `data_dir`: where the dataset is (default: the
    run's, else the data cache).
    """
    import torch

    from mnistlab.data.datasets import normalization, recorded_dataset
    from mnistlab.device import pick_device, use_threads
    from mnistlab.fileio import replace_folder
    from mnistlab.models.inspect import inspect_network

    if digit is not None and image is not None:
        raise MnistlabError(f"give {arg('digit')} or {arg('image')}, not both")
    if out is not None:
        if not isinstance(out, str | Path) or not str(out).strip():
            raise MnistlabError(f"{given('out', out)}: give a folder to write the figures into")
        check_folder(Path(out))  # before any work
    if model is not None and not isinstance(model, _module_type()):
        raise MnistlabError(
            f"{arg('model')} got a {type(model).__name__}; pass an untrained nn.Module to load "
            "the weights into"
        )
    torch_device = pick_device(device)
    use_threads(threads)
    network, meta, name, user = _network(model_or_run, model)
    spec = recorded_dataset(meta)
    if image is not None:
        pixels, source = _image_file(image, spec.digits), str(image)
    else:
        index = 0 if digit is None else digit
        pixels, label = _test_image(index, spec.name, data_dir or meta.get("data_dir"))
        source = f"{spec.name} test image {index} (label {spec.classes[label]})"
    mean, std = normalization(meta)
    x = ((torch.from_numpy(pixels) - mean) / std)[None, None].to(torch_device)
    view = inspect_network(network, x, unit, name, user)
    result = Inspection(name, pixels, source, view, spec.classes)
    if out is not None:
        folder = Path(out)
        files = {folder / file: data for file, data in result.files().items()}
        replace_folder(folder, files, check=check_folder)
        result.out = folder
    return result


def _module_type() -> type:
    from torch import nn

    return nn.Module
