"""MNIST-style data as plain tensors: IDX parsing, the on-disk layout, and an in-memory loader.

Files live in torchvision's layout, ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``, raw
or gzipped, so an existing torchvision cache works as a data directory.
"""

import gzip
import math
import os
import shlex
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from mnistlab.data.specs import (  # noqa: F401  (their home; imported from here too)
    DATASETS,
    FASHION_MNIST,
    IMAGE_SIZE,
    MNIST,
    RAW_FILES,
    REFETCH,
    DatasetSpec,
    get_spec,
    normalization,
    recorded_dataset,
)
from mnistlab.errors import MnistlabError, arg

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def fetch_command(spec: DatasetSpec, root: str | os.PathLike | None = None) -> str:
    """The command that fetches a dataset, as users should type it."""
    command = "mnistlab data fetch"
    if spec.name != MNIST.name:
        command += f" --dataset {spec.name}"
    if root:
        command += f" --data-dir {shlex.quote(str(root))}"
    return command


def install_note(spec: DatasetSpec) -> str:
    """Where the files come from when the download mirrors cannot be reached ('' for none)."""
    if not spec.package:
        return ""
    return f" (Debian's {spec.package} package has its files: `apt-get install {spec.package}`)"


def refetch(spec: DatasetSpec, root: str | os.PathLike | None = None) -> str:
    """The fix for a damaged data file, naming the data_dir it was read from."""
    return f"delete it and run `{fetch_command(spec, root)}`{install_note(spec)}"


def split_files(train: bool) -> tuple[str, str]:
    """Raw file names (images, labels) of a split."""
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: --data-dir, else $MNISTLAB_DATA, else ~/.cache/mnistlab."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("MNISTLAB_DATA"):
        return Path(os.environ["MNISTLAB_DATA"]).expanduser()
    return Path.home() / ".cache" / "mnistlab"


def raw_dir(spec: DatasetSpec, root: Path) -> Path:
    return root / spec.dirname / "raw"


def find_file(directory: Path, name: str) -> Path | None:
    """The raw file or its .gz twin in a directory, raw first."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        try:
            if candidate.is_file():
                return candidate
        except OSError as e:  # e.g. a name too long; is_file() only hides "no such file"
            raise MnistlabError(
                f"{candidate}: cannot look for the data file ({e.strerror}); "
                f"pass {arg('data_dir')} with a usable folder"
            ) from None
    return None


def read_bytes(path: Path, fix: str = REFETCH) -> bytes:
    """A file's bytes, decompressed when it ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise MnistlabError(f"{path}: cannot read ({reason}); {fix}") from None


def parse_idx(data: bytes, source: str = "<bytes>", fix: str = REFETCH) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 2049 labels or 2051 images), checking lengths.

    A malformed file raises MnistlabError("<source>: <problem>; <fix>").
    """

    def bad(problem: str) -> MnistlabError:
        return MnistlabError(f"{source}: {problem}; {fix}" if fix else f"{source}: {problem}")

    if len(data) < 8:
        raise bad(f"truncated: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[0:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise bad(
            f"wrong magic number {magic:#010x} (expected 0x00000803 for images or "
            "0x00000801 for labels), not an MNIST IDX file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"truncated: {len(data)} bytes, the IDX header needs {header}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python ints: a garbage header cannot overflow
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise bad(f"{what}: {len(data)} bytes, header {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, fix: str = REFETCH) -> np.ndarray:
    return parse_idx(read_bytes(path, fix), str(path), fix)


def content_problem(array: np.ndarray, labels: bool, num_classes: int = 10) -> str | None:
    """What makes a parsed IDX array unusable as images or labels (None: nothing)."""
    what = "labels" if labels else "images"
    if array.ndim != (1 if labels else 3):
        return f"holds {array.ndim}-dimensional data, expected {what}"
    if len(array) == 0:
        return f"holds no {what}"
    if labels:
        bad = np.flatnonzero(array >= num_classes)
        if len(bad):
            return (
                f"label {int(array[bad[0]])} at index {int(bad[0])} is outside 0-{num_classes - 1}"
                f" ({len(bad)} such labels)"
            )
    elif array.shape[1:] != IMAGE_SIZE:
        height, width = array.shape[1:]
        return f"images are {width}x{height} pixels, the models take 28x28"
    return None


def split_paths(spec: DatasetSpec, train: bool, root: Path | None = None) -> list[Path]:
    """The split's image and label files (raw or .gz); a missing one is an error saying how
    to fetch it."""
    directory = raw_dir(spec, data_root(root))
    paths = []
    for name in split_files(train):
        path = find_file(directory, name)
        if path is None:
            raise MnistlabError(
                f"{directory / name}: missing; run `{fetch_command(spec, root)}`"
                f"{install_note(spec)} (or pass {arg('data_dir')} to a folder that has it)"
            )
        paths.append(path)
    return paths


def load_split(
    dataset: str = "mnist", train: bool = True, root: Path | None = None, limit: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (uint8 images [N, 28, 28], int64 labels [N]) on the CPU; with `limit`,
    only its first images (0 or None: all)."""
    spec = get_spec(dataset)
    paths = split_paths(spec, train, root)
    fix = refetch(spec, root)
    images, labels = (read_idx(path, fix) for path in paths)
    for path, array, is_labels in ((paths[0], images, False), (paths[1], labels, True)):
        problem = content_problem(array, is_labels, len(spec.classes))
        if problem:
            raise MnistlabError(f"{path}: {problem}; {fix}")
    if len(images) != len(labels):
        raise MnistlabError(
            f"{paths[0]}: {len(images)} images but {paths[1].name} has {len(labels)} labels; "
            f"the files belong to different sets, delete them and run `{fetch_command(spec, root)}`"
        )
    if limit:
        images, labels = images[:limit], labels[:limit]
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split_validation(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Hold out `val_size` training images, chosen with a fixed seed: (train, val)."""
    if not 0 <= val_size < len(images):
        raise MnistlabError(
            f"val_size must be between 0 and {len(images) - 1}, got {val_size}; "
            "choose a smaller --val-size"
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (images[train], labels[train]), (images[val], labels[val])


class Loader:
    """Batches of a whole split held as one uint8 tensor on the device.

    Normalises to float32 on the fly, shuffles with a generator seeded by (seed, epoch) so an
    epoch's order never depends on what ran before it (which makes resume exact), and does
    no per-sample Python work.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: float,
        std: float,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        channels_last: bool = False,
        reshuffle: bool = True,
        clean_from: int = 0,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.shuffle, self.seed = shuffle, seed
        self.reshuffle = reshuffle  # False: epoch 0's order, every epoch
        self.device = torch.device(device)
        self.augment = augment
        self.clean_from = clean_from  # from this epoch on, no augmentation (0: never)
        self.channels_last = channels_last

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def batches(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        # Not reshuffled: epoch 0's order every epoch; augmentation still draws per epoch.
        orderer = generator
        if not self.reshuffle:
            orderer = torch.Generator().manual_seed(self.seed * 100_003)
        order = torch.randperm(n, generator=orderer) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        augment = self.augment
        if self.clean_from and epoch >= self.clean_from:
            augment = None  # the order above is drawn first, so it is the same either way
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx].unsqueeze(1).float().div_(255)
            if augment is not None:
                x = augment(x, generator)
            x = x.sub_(self.mean).div_(self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)
