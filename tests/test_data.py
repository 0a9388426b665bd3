import gzip
import shutil

import numpy as np
import pytest
import torch

from mnistlab.cli import main
from mnistlab.data import datasets as data
from mnistlab.errors import MnistlabError


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    assert err.startswith("mnistlab: error: ")
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


@pytest.fixture
def root(tmp_path, tiny_mnist):
    """A data root holding the tiny dataset in torchvision's layout."""
    raw = tmp_path / "root" / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    return tmp_path / "root"


def test_raw_and_gz_files_read_the_same(tmp_path, write_idx):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    raw = data.read_idx(write_idx(tmp_path / "a" / "x-idx3-ubyte", images))
    gz = data.read_idx(write_idx(tmp_path / "b" / "x-idx3-ubyte.gz", images))
    np.testing.assert_array_equal(raw, images)
    np.testing.assert_array_equal(gz, images)


def test_find_file_prefers_raw_over_gz(tmp_path, write_idx):
    labels = np.arange(5)
    write_idx(tmp_path / "y.gz", labels)
    assert data.find_file(tmp_path, "y") == tmp_path / "y.gz"
    write_idx(tmp_path / "y", labels)
    assert data.find_file(tmp_path, "y") == tmp_path / "y"
    assert data.find_file(tmp_path, "z") is None


def test_load_split_shapes_and_dtypes(root):
    images, labels = data.load_split("mnist", train=True, root=root)
    assert images.shape == (20, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)] and labels.dtype == torch.int64
    images, labels = data.load_split("mnist", train=False, root=root)
    assert images.shape == (10, 28, 28) and len(labels) == 10


def test_load_split_reads_gz_files(root):
    raw = root / "MNIST" / "raw"
    expected = data.load_split("mnist", train=False, root=root)
    for name in data.split_files(train=False):
        gz = data.read_bytes(raw / name)
        (raw / name).unlink()
        (raw / f"{name}.gz").write_bytes(gzip.compress(gz))
    images, labels = data.load_split("mnist", train=False, root=root)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


def test_missing_data_names_file_and_fetch_command(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(tmp_path))
    assert_one_line_error(
        code, err, "train-images-idx3-ubyte: missing", f"mnistlab data fetch --data-dir {tmp_path}"
    )


def test_missing_fashion_data_names_dataset_in_fetch_command(tmp_path):
    with pytest.raises(MnistlabError, match="fetch --dataset fashion-mnist"):
        data.load_split("fashion-mnist", root=tmp_path)


def test_wrong_magic(capsys, root):
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x04" + path.read_bytes()[4:])
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(root))
    assert_one_line_error(
        code, err, str(path), "wrong magic number 0x00000804", "mnistlab data fetch"
    )


@pytest.mark.parametrize("keep", [3, 10, 16 + 28 * 28 * 5])
def test_truncated_file(capsys, root, keep):
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:keep])
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(root))
    assert_one_line_error(code, err, str(path), "truncated", "mnistlab data fetch")


def test_trailing_bytes(root):
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(MnistlabError, match="has trailing bytes"):
        data.load_split("mnist", train=False, root=root)


def test_image_label_count_mismatch(capsys, root, write_idx):
    write_idx(root / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.arange(19) % 10)
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(root))
    assert_one_line_error(code, err, "train-images-idx3-ubyte", "20 images", "19 labels")


def test_swapped_files(root, write_idx):
    write_idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", np.arange(10))
    with pytest.raises(MnistlabError, match=r"t10k-images-idx3-ubyte: .*expected images"):
        data.load_split("mnist", train=False, root=root)


def test_damaged_gz_file(capsys, root):
    raw = root / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    code, _, err = run_cli(capsys, "data", "info", "--data-dir", str(root))
    assert_one_line_error(
        code, err, "t10k-labels-idx1-ubyte.gz: cannot read", "mnistlab data fetch"
    )


def test_unknown_dataset():
    with pytest.raises(MnistlabError, match="unknown dataset 'kmnist'"):
        data.get_spec("kmnist")


def labelled_loader(n: int = 100, **kwargs) -> data.Loader:
    """A loader whose labels are the image indices, so batches reveal the order."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    return data.Loader(images, torch.arange(n), batch_size=32, mean=0.5, std=0.25, **kwargs)


def order(loader: data.Loader, epoch: int) -> list[int]:
    return torch.cat([y for _, y in loader.batches(epoch)]).tolist()


def test_loader_batches_shapes_dtypes_and_last_partial_batch():
    loader = labelled_loader()
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    # Normalised from uint8: image i holds the value i everywhere.
    assert torch.allclose(x[:, 0, 0, 0], (y.float() / 255 - 0.5) / 0.25)
    assert order(loader, 0) == list(range(100))


def test_loader_shuffle_is_a_function_of_seed_and_epoch():
    loader = labelled_loader(shuffle=True, seed=3)
    first = order(loader, 1)
    assert sorted(first) == list(range(100)) and first != list(range(100))
    assert order(labelled_loader(shuffle=True, seed=3), 1) == first
    assert order(loader, 2) != first
    assert order(labelled_loader(shuffle=True, seed=4), 1) != first


def test_loader_channels_last_gives_the_same_batches():
    # With one channel, NCHW and NHWC are the same memory (strides differ only on the size-1
    # channel axis, which torch ignores), so the layout cannot be told apart; what can go wrong
    # is the values or their order.
    plain, last = labelled_loader(), labelled_loader(channels_last=True)
    for (x, y), (x_last, y_last) in zip(plain, last, strict=True):
        assert torch.equal(x_last, x) and torch.equal(y_last, y)
        assert x_last.is_contiguous(memory_format=torch.channels_last)


def test_split_validation_sizes_disjoint_and_seeded():
    images, labels = torch.zeros(100, 28, 28, dtype=torch.uint8), torch.arange(100)
    (train_x, train_y), (val_x, val_y) = data.split_validation(images, labels, 15, seed=1)
    assert len(train_x) == len(train_y) == 85 and len(val_x) == len(val_y) == 15
    assert set(train_y.tolist()).isdisjoint(val_y.tolist())
    assert sorted(train_y.tolist() + val_y.tolist()) == list(range(100))
    (_, again), (_, val_again) = data.split_validation(images, labels, 15, seed=1)
    assert torch.equal(val_y, val_again) and torch.equal(train_y, again)
    (_, _), (_, other) = data.split_validation(images, labels, 15, seed=2)
    assert not torch.equal(val_y, other)


def test_split_validation_rejects_bad_size():
    images, labels = torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10)
    with pytest.raises(MnistlabError, match="val_size must be between 0 and 9, got 10"):
        data.split_validation(images, labels, 10)


@pytest.mark.realdata
def test_real_training_split():
    from mnistlab.data.fetch import class_counts, pixel_stats

    images, labels = data.load_split("mnist", train=True)
    assert images.shape == (60000, 28, 28)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert class_counts(labels, 10) == counts
    mean, std = pixel_stats(images)
    assert mean == pytest.approx(0.13066, abs=1e-4)
    assert std == pytest.approx(0.3081, abs=1e-4)


def test_normalization_is_what_the_model_records_else_its_datasets():
    fashion = data.FASHION_MNIST
    assert data.normalization({"mean": 0.5, "std": 0.25, "dataset": "fashion-mnist"}) == (0.5, 0.25)
    assert data.normalization({"dataset": "fashion-mnist"}) == (fashion.mean, fashion.std)
    # A training checkpoint records its dataset in its config only.
    checkpoint = {"config": {"dataset": "fashion-mnist"}}
    assert data.normalization(checkpoint) == (fashion.mean, fashion.std)
    # Files from before datasets were recorded are MNIST's.
    assert data.normalization({}) == (data.MNIST.mean, data.MNIST.std)
