"""Compact models of the drill-down, from the seed's 258,602 parameters to under 8,000.

Each model is one step of experiments/0N-*.toml; the experiment file says why the step was
taken and what its run showed. All are plain chains of convolutions (no Linear layer), so
`mnistlab summary` computes their receptive field layer by layer.
"""

from torch import nn

from mnistlab.models.layers import Chain
from mnistlab.models.registry import register_model


def conv_block(
    cin: int,
    cout: int,
    kernel: int = 3,
    padding: int = 0,
    bn: bool = True,
    dropout: float = 0.0,
    stride: int = 1,
) -> nn.Sequential:
    """Conv -> ReLU -> BatchNorm -> Dropout; the bias is dropped when BN follows (BN has one)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=not bn),
        nn.ReLU(),
    ]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@register_model
def skeleton() -> nn.Module:
    """Step 1: the seed's shape, ~13k params, no BN; a 5x5 head kernel takes RF to 28."""
    return Chain(
        conv_block(1, 8, bn=False),  # 26x26, RF 3
        conv_block(8, 16, bn=False),  # 24x24, RF 5
        conv_block(16, 16, bn=False),  # 22x22, RF 7
        nn.MaxPool2d(2, 2),  # 11x11, RF 8, jump 2
        conv_block(16, 8, kernel=1, bn=False),  # squeeze channels before expanding again
        conv_block(8, 16, bn=False),  # 9x9, RF 12
        conv_block(16, 16, bn=False),  # 7x7, RF 16
        conv_block(16, 16, bn=False),  # 5x5, RF 20
        nn.Conv2d(16, 10, 5),  # 1x1, RF 28
    )


@register_model
def skeleton_bn() -> nn.Module:
    """Step 2: the skeleton with batch normalisation after every hidden convolution."""
    return Chain(
        conv_block(1, 8),
        conv_block(8, 16),
        conv_block(16, 16),
        nn.MaxPool2d(2, 2),
        conv_block(16, 8, kernel=1),
        conv_block(8, 16),
        conv_block(16, 16),
        conv_block(16, 16),
        nn.Conv2d(16, 10, 5),
    )


def _stem(c1: int, c2: int, squeeze: int, dropout: float = 0.0) -> list[nn.Module]:
    """The GAP networks' start: two 3x3 convs at full size, max-pool at RF 6, 1x1 squeeze."""
    return [
        conv_block(1, c1, dropout=dropout),  # 26x26, RF 3
        conv_block(c1, c2, dropout=dropout),  # 24x24, RF 5
        nn.MaxPool2d(2, 2),  # 12x12, RF 6, jump 2
        conv_block(c2, squeeze, kernel=1, dropout=dropout),
    ]


def _gap_net(width: tuple[int, int, int, int, int, int], dropout: float) -> nn.Module:
    """The stem, three 3x3 convs, global average pool, 1x1 head."""
    c1, c2, t, c3, c4, c5 = width
    return Chain(
        *_stem(c1, c2, t, dropout),
        conv_block(t, c3, dropout=dropout),  # 10x10, RF 10
        conv_block(c3, c4, dropout=dropout),  # 8x8, RF 14
        conv_block(c4, c5, dropout=dropout),  # 6x6, RF 18
        nn.AdaptiveAvgPool2d(1),  # 1x1, RF 28: the average sees the whole 6x6 map
        nn.Conv2d(c5, 10, 1, bias=False),
    )


@register_model
def gap_dropout() -> nn.Module:
    """Step 3: GAP instead of the 5x5 head kernel, dropout 0.05; ~6.6k params."""
    return _gap_net((8, 16, 8, 12, 16, 16), dropout=0.05)


@register_model
def gap_wide() -> nn.Module:
    """Steps 4-5: capacity moved to the early layers where the RF is small; < 8k params."""
    return _gap_net((10, 16, 10, 14, 16, 16), dropout=0.0)


@register_model
def gap_tiny() -> nn.Module:
    """Step 6: step 5's recipe on 12 channels at most; under 5,000 params."""
    return _gap_net((8, 12, 8, 12, 12, 12), dropout=0.0)


@register_model
def gap_wide_tail() -> nn.Module:
    """Steps 7-8: 16 channels after the squeeze and an 8x8 map under the average; < 8k params."""
    return Chain(
        *_stem(8, 16, 10),
        conv_block(10, 16),  # 10x10, RF 10
        conv_block(16, 16),  # 8x8, RF 14
        conv_block(16, 16, padding=1),  # 8x8, RF 18: padding keeps the map for the average
        nn.AdaptiveAvgPool2d(1),  # 1x1, RF 32
        nn.Conv2d(16, 10, 1, bias=False),
    )


def _deep_net(stem: list[nn.Module], squeeze: int, widths: tuple[int, ...]) -> nn.Module:
    """A stem ending in `squeeze` channels, four 3x3 convs, global average pool, 1x1 head.

    The comments give map sizes and RF after the GAP networks' 12x12 stem (`_stem`)."""
    w1, w2, w3, w4 = widths
    return Chain(
        *stem,
        conv_block(squeeze, w1),  # 10x10, RF 10
        conv_block(w1, w2),  # 8x8, RF 14
        conv_block(w2, w3),  # 6x6, RF 18
        conv_block(w3, w4),  # 4x4, RF 22
        nn.AdaptiveAvgPool2d(1),  # 1x1, RF 28
        nn.Conv2d(w4, 10, 1, bias=False),
    )


@register_model
def gap_deep() -> nn.Module:
    """Step 9: one more 3x3 layer, narrower; each feature under the average sees 22 of 28 px."""
    return _deep_net(_stem(8, 16, 8), 8, (12, 14, 14, 14))


@register_model
def gap_deep_tiny() -> nn.Module:
    """Step 10: 09's depth at 06's width, 10-12 channels after the squeeze; under 5,000 params."""
    return _deep_net(_stem(8, 12, 8), 8, (10, 10, 10, 12))


@register_model
def gap_early_pool() -> nn.Module:
    """Step 15: 09's network with the max-pool moved before the 8->16 conv; half the MACs."""
    stem = [
        conv_block(1, 8),  # 26x26, RF 3
        nn.MaxPool2d(2, 2),  # 13x13, RF 4, jump 2
        conv_block(8, 16),  # 11x11, RF 8: the costliest conv now runs on a quarter of the pixels
        conv_block(16, 8, kernel=1),
    ]
    return _deep_net(stem, 8, (12, 14, 14, 14))  # maps 9, 7, 5, 3; RF 28


def _strided_stem() -> list[nn.Module]:
    """09's stem with a stride-2 8->16 conv in place of conv + max-pool, squeezed to 8."""
    return [
        conv_block(1, 8),  # 26x26, RF 3
        conv_block(8, 16, stride=2, padding=1),  # 13x13, RF 5, jump 2: a quarter of the MACs
        conv_block(16, 8, kernel=1),
    ]


@register_model
def gap_strided() -> nn.Module:
    """Step 16: 09's network with a stride-2 8->16 conv in place of conv + max-pool."""
    return _deep_net(_strided_stem(), 8, (12, 14, 14, 14))  # maps 11, 9, 7, 5; RF 29


def _pool_first(cin: int, cout: int) -> list[nn.Module]:
    """A 3x3 conv max-pooled before its ReLU and BatchNorm (see gap_deep_pool_first)."""
    return [
        nn.Conv2d(cin, cout, 3, bias=False),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        nn.BatchNorm2d(cout),
    ]


@register_model
def gap_deep_pool_first() -> nn.Module:
    """Step 17: 09's network, max-pooling the 24x24 conv before its ReLU and BatchNorm."""
    # Max-pool and ReLU commute, so this is 09's function up to BatchNorm's statistics (taken
    # over the pooled map); ReLU and BatchNorm now pass over a quarter of the values.
    stem = [conv_block(1, 8), *_pool_first(8, 16), conv_block(16, 8, kernel=1)]
    return _deep_net(stem, 8, (12, 14, 14, 14))


@register_model
def gap_strided_deep() -> nn.Module:
    """Step 18: 16's stride-2 stem and five 3x3 convs of 12 channels, down to a 3x3 map."""
    return Chain(
        *_strided_stem(),
        conv_block(8, 12),  # 11x11, RF 9
        conv_block(12, 12),  # 9x9, RF 13
        conv_block(12, 12),  # 7x7, RF 17
        conv_block(12, 12),  # 5x5, RF 21
        conv_block(12, 12),  # 3x3, RF 25
        nn.AdaptiveAvgPool2d(1),  # 1x1, RF 29
        nn.Conv2d(12, 10, 1, bias=False),
    )


def _thin_stem(c2: int) -> list[nn.Module]:
    """4 channels at 26x26 feed a 3x3 conv to c2 channels at 24x24, pooled first, squeezed to 8."""
    return [
        conv_block(1, 4),  # 26x26, RF 3
        *_pool_first(4, c2),  # 24x24 conv, pooled to 12x12: RF 6, jump 2
        conv_block(c2, 8, kernel=1),
    ]


@register_model
def gap_thin_stem() -> nn.Module:
    """Step 19: 4 channels at 26x26 feed the 24x24 conv (half its MACs); a wider tail."""
    return _deep_net(_thin_stem(16), 8, (12, 14, 16, 16))


@register_model
def gap_thin_stem_tiny() -> nn.Module:
    """Step 20: 19's 4-channel first layer at 12 channels and fewer; under 5,000 params."""
    return _deep_net(_thin_stem(12), 8, (10, 10, 12, 12))
