import pytest
import torch
import torch.nn.functional as F

from mnistlab.config import AugmentConfig
from mnistlab.data.augment import Augment, affine_grid, affine_matrices, erase_masks, make_augment
from mnistlab.data.datasets import Loader

FULL = AugmentConfig(rotation=15, translate=0.1, scale=0.1, shear=10, erasing=0.5)


def apply(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def one(angle=0.0, tx=0.0, ty=0.0, scale=1.0, shear=0.0) -> torch.Tensor:
    """Matrices for a single image."""
    values = [torch.tensor([float(v)]) for v in (angle, tx, ty, scale, shear)]
    return affine_matrices(*values)


def digits(n: int = 8) -> torch.Tensor:
    """A batch of blobs in [0, 1], different per image, with empty borders."""
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 6 + i % 4 : 20, 8 : 18 + i % 3] = torch.linspace(0.2, 1.0, 10 + i % 3)
    return x


def test_vertical_bar_rotated_90_degrees_becomes_horizontal():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 13:15] = 1  # centred: the image centre lies between pixels 13 and 14
    y = apply(one(angle=90), x)
    assert torch.allclose(y[0, 0], x[0, 0].T, atol=1e-5)


def test_positive_angle_turns_counterclockwise_on_screen():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 13:15, 22:24] = 1  # right of the centre
    y = apply(one(angle=90), x)
    rows, cols = torch.nonzero(y[0, 0] > 0.5, as_tuple=True)
    assert rows.tolist() == [4, 4, 5, 5] and cols.tolist() == [13, 14, 13, 14]  # now above it


def test_translation_moves_content_by_a_fraction_of_the_image():
    x = digits(1)
    y = apply(one(tx=0.25, ty=-1 / 28), x)  # 7 pixels right, 1 pixel up
    assert torch.allclose(y[0, 0, :-1, 7:], x[0, 0, 1:, :-7], atol=1e-5)


def test_scale_enlarges_about_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 12:16, 12:16] = 1
    y = apply(one(scale=2), x)
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[10:18, 10:18] = True  # 4 pixels wide -> 8, same centre
    assert torch.equal(y[0, 0] > 0.5, expected)


def test_erase_masks_mark_each_rectangle():
    masks = erase_masks(
        top=torch.tensor([0, 5]),
        left=torch.tensor([2, 0]),
        height=torch.tensor([3, 1]),
        width=torch.tensor([1, 4]),
        size=(8, 6),
    )
    expected = torch.zeros(2, 8, 6, dtype=torch.bool)
    expected[0, 0:3, 2:3] = True
    expected[1, 5:6, 0:4] = True
    assert torch.equal(masks, expected)


def test_zero_strength_is_exactly_the_identity():
    x = digits()
    y = Augment(AugmentConfig())(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, x)
    assert make_augment(AugmentConfig()) is None
    assert isinstance(make_augment(FULL), Augment)


@pytest.mark.parametrize(
    "cfg",
    [FULL, AugmentConfig(rotation=30), AugmentConfig(translate=0.2), AugmentConfig(erasing=1.0)],
)
def test_augment_keeps_shape_and_range_and_changes_pixels(cfg):
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # no background
    y = Augment(cfg)(x.clone(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3
    assert changed.all()  # each sample gets its own non-trivial transform


def test_augment_is_deterministic_for_a_generator_seed():
    augment = Augment(FULL)
    a = augment(digits(), torch.Generator().manual_seed(5))
    b = augment(digits(), torch.Generator().manual_seed(5))
    c = augment(digits(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_parameters_differ_per_sample():
    x = digits(1).expand(16, 1, 28, 28).contiguous()
    y = Augment(AugmentConfig(rotation=30))(x, torch.Generator().manual_seed(0))
    assert len({tuple(img.flatten().tolist()) for img in y}) == 16


def test_erasing_zeroes_one_rectangle_per_selected_sample():
    x = torch.ones(200, 1, 28, 28)
    y = Augment(AugmentConfig(erasing=0.5))(x, torch.Generator().manual_seed(0))
    erased = 0
    for img in y[:, 0]:
        zeros = torch.nonzero(img == 0)
        if len(zeros) == 0:
            continue
        erased += 1
        (top, left), (bottom, right) = zeros.min(0).values, zeros.max(0).values
        area = (bottom - top + 1) * (right - left + 1)
        assert len(zeros) == area  # one filled rectangle
        assert 0.01 * 784 <= area <= 0.4 * 784
    assert 70 <= erased <= 130  # about half of 200


def test_loader_augments_images_and_keeps_labels():
    images = (digits(10)[:, 0] * 255).round().to(torch.uint8)
    labels = torch.arange(10)
    kwargs = dict(batch_size=4, mean=0.0, std=1.0, shuffle=True, seed=1)
    plain = list(Loader(images, labels, **kwargs).batches(3))
    augmented = Loader(images, labels, augment=Augment(FULL), **kwargs)
    first, again = list(augmented.batches(3)), list(augmented.batches(3))
    for (x, y), (ax, ay), (bx, by) in zip(plain, first, again, strict=True):
        assert torch.equal(ay, y) and torch.equal(by, y)
        assert ax.shape == x.shape and not torch.equal(ax, x)
        assert torch.equal(ax, bx)  # the same (seed, epoch) augments the same way


@pytest.mark.parametrize("size", [[128, 1, 28, 28], [5, 1, 28, 28], [3, 2, 17, 9]])
def test_affine_grid_is_torchs(size) -> None:
    # Bit for bit where the BLAS adds in order; some CPUs' BLAS fuses the multiply-adds of
    # F.affine_grid's matmul, which moves the last bit (our grid is the same on every CPU).
    generator = torch.Generator().manual_seed(size[0])
    for scale in (1e-3, 1.0, 30.0):
        theta = torch.randn(size[0], 2, 3, generator=generator) * scale
        expected = F.affine_grid(theta, size, align_corners=False)
        torch.testing.assert_close(affine_grid(theta, size), expected, rtol=1e-5, atol=1e-5)
