"""The datasets this tool knows: names, files and digests, class names, normalisation, the
target line and whether photos are preprocessed as digits. No torch here: the command line and
an ONNX runtime read these without loading it."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mnistlab.errors import MnistlabError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
REFETCH = "delete it and run `mnistlab data fetch`"
IMAGE_SIZE = (28, 28)  # every registered model takes 28x28 images


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    dirname: str  # torchvision's folder name under the data root
    mean: float  # training-set pixel mean after /255
    std: float
    classes: tuple[str, ...]
    sha256: dict[str, str]  # raw (decompressed) file name -> SHA-256
    target: float  # the test accuracy (%) a compact network aims for: the line plots draw
    digits: bool  # handwritten digits: photos are cropped, centred, thickened (preprocess)
    package: str = ""  # a system package that installs the files, for the fetch hint


MNIST = DatasetSpec(
    name="mnist",
    dirname="MNIST",
    mean=0.1307,
    std=0.3081,
    classes=tuple(str(d) for d in range(10)),
    sha256=dict(
        zip(
            RAW_FILES,
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            strict=True,
        )
    ),
    target=99.4,  # the drill-down's line, held in each of the last 3 epochs
    digits=True,
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    dirname="FashionMNIST",
    mean=0.2860,
    std=0.3530,
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    sha256=dict(
        zip(
            RAW_FILES,
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            strict=True,
        )
    ),
    target=90.0,  # a round line small CNNs pass; clothing is not preprocessed like ink
    digits=False,
    package="dataset-fashion-mnist",
)

DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise MnistlabError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def recorded_dataset(meta: Mapping[str, Any]) -> DatasetSpec:
    """The dataset a model file or checkpoint records: its "dataset", else its config's (a
    training checkpoint holds only that), else MNIST (files from before datasets existed)."""
    config = meta.get("config")
    name = meta.get("dataset") or (config.get("dataset") if isinstance(config, Mapping) else None)
    return get_spec(name or MNIST.name)


def normalization(meta: Mapping[str, Any]) -> tuple[float, float]:
    """The (mean, std) a model's inputs are normalised with, from its file's metadata: what
    it records, else its dataset's (see recorded_dataset). The one place this is decided."""
    if "mean" in meta and "std" in meta:
        return float(meta["mean"]), float(meta["std"])
    spec = recorded_dataset(meta)
    return float(meta.get("mean", spec.mean)), float(meta.get("std", spec.std))
