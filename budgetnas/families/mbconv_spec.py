"""The spec of ``mbconv``, an efficient-CNN family (MobileNetV2 / MCUNet style), and its exact counts.

Every small-model record on Fashion-MNIST we know of is already below the paper's plain
CNNs, so more accuracy per parameter has to come from the space itself. The best small
image models do not stack plain convolutions: they use residual connections,
depthwise-separable and inverted-bottleneck blocks, stride-2 downsampling and global
pooling. This family is that space::

    stem:   3x3 conv (stride 1 or 2) -> batch norm -> activation
    stages: 1..6, each `depth` blocks of one type; the first block of a stage has the
            stage's stride and width, the others keep both (so they add a residual)
    head:   optional 1x1 conv -> BN -> activation, global average pool, [dropout], linear

Block types (every conv is bias-free and followed by batch norm):

* ``plain``: kxk conv -> BN [-> SE] (+ x) -> activation (a one-conv ResNet block);
* ``dwsep``: depthwise kxk -> BN -> act [-> SE] -> pointwise 1x1 -> BN (+ x) -> activation
  (MobileNetV1's depthwise-separable conv);
* ``inverted``: [pointwise expand x``expansion`` -> BN -> act] -> depthwise kxk -> BN -> act
  [-> SE] -> pointwise project -> BN (+ x), no final activation (MobileNetV2's inverted
  residual with a linear bottleneck).

``(+ x)``: a residual connection wherever the shapes allow it (stride 1, same width). SE is
squeeze-and-excitation: global average pool -> 1x1 conv to ``max(1, C // 4)`` -> activation
-> 1x1 conv back to C -> sigmoid, multiplied into the map.

All convs use "same" padding (``k // 2``, odd k), so a stride-2 conv maps H to ceil(H / 2)
and a map never shrinks below 1x1; a stride 2 on a 1x1 map would do nothing but is refused
(like the cnn family's pool below 1x1), and the search space drops it instead, which the
stored spec records (as the cnn family records a dropped pool).

Notation of :meth:`MBConvSpec.describe`: ``stem 16s2 | inv6:24k3x2s2+se, dw:32k5 | head 128 |
relu``: a stage is ``TYPE:WIDTH k KERNEL x DEPTH`` with ``sN`` for a stride, ``+se`` for SE,
TYPE ``c`` (plain), ``dw`` (depthwise-separable) or ``invE`` (inverted, expansion E).

Counting: :func:`layer_costs` lists every parameterised layer once with its parameters and
output pixels; the exact parameter count and torchinfo's mult-adds are both sums over that
one list, so they cannot disagree with each other, and the property test checks both
against the built model and torchinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from budgetnas.errors import UsageError
from budgetnas.families.base import Shape
from budgetnas.spec import MAX_WIDTH, _check_bool, _check_common, _check_int, _keys, _sequence

BLOCKS = ("plain", "dwsep", "inverted")
MAX_STAGES = 6
MAX_DEPTH = 6
MAX_EXPANSION = 6
MAX_KERNEL = 7
SE_RATIO = 4  # squeeze-and-excitation bottleneck: max(1, channels // SE_RATIO)


@dataclass(frozen=True)
class Stage:
    """``depth`` blocks of type ``block``; the first has ``stride`` and maps to ``out_channels``."""

    block: str
    out_channels: int
    depth: int = 1
    stride: int = 1
    kernel_size: int = 3
    expansion: int = 1  # inverted blocks only: hidden width = input width x expansion
    se: bool = False

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise UsageError(f"unknown stage block {self.block!r}; choose one of {', '.join(BLOCKS)}")
        _check_int("stage out_channels", self.out_channels, 1, MAX_WIDTH)
        _check_int("stage depth", self.depth, 1, MAX_DEPTH)
        if not _is_stride(self.stride):  # 2.0 == 2, but a float stride would reach torch's conv2d
            raise UsageError(f"stage stride must be 1 or 2, got {self.stride!r}")
        _check_int("stage kernel_size", self.kernel_size, 1, MAX_KERNEL)
        if self.kernel_size % 2 == 0:
            raise UsageError(f"stage kernel_size must be odd (same padding), got {self.kernel_size}")
        _check_int("stage expansion", self.expansion, 1, MAX_EXPANSION)
        if self.block != "inverted" and self.expansion != 1:
            raise UsageError(f"only inverted blocks have an expansion; a {self.block} stage has expansion 1, "
                             f"got {self.expansion}")
        _check_bool("stage se", self.se)

    def describe(self) -> str:
        kind = {"plain": "c", "dwsep": "dw", "inverted": f"inv{self.expansion}"}[self.block]
        return (f"{kind}:{self.out_channels}k{self.kernel_size}" + (f"x{self.depth}" if self.depth > 1 else "")
                + (f"s{self.stride}" if self.stride > 1 else "") + ("+se" if self.se else ""))


@dataclass(frozen=True)
class MBConvSpec:
    """A stem, stages of plain / depthwise-separable / inverted-residual blocks, a GAP head."""

    family: ClassVar[str] = "mbconv"

    stem: int
    stages: tuple[Stage, ...]
    stem_stride: int = 1
    head: int = 0  # width of a 1x1 conv before the pooling; 0 = none
    dropout: float = 0.0
    activation: str = "relu"
    init: str = "default"

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, Stage) else Stage(**_keys(s, Stage, "mbconv stage"))
                       for s in _sequence("stages", self.stages))
        object.__setattr__(self, "stages", stages)
        _check_int("stem", self.stem, 1, MAX_WIDTH)
        if not _is_stride(self.stem_stride):
            raise UsageError(f"stem_stride must be 1 or 2, got {self.stem_stride!r}")
        if not 1 <= len(stages) <= MAX_STAGES:
            raise UsageError(f"an mbconv spec has 1..{MAX_STAGES} stages, got {len(stages)}")
        _check_int("head", self.head, 0, MAX_WIDTH)
        _check_common(self)

    def describe(self) -> str:
        parts = [f"stem {self.stem}" + (f"s{self.stem_stride}" if self.stem_stride > 1 else ""),
                 ", ".join(s.describe() for s in self.stages)]
        if self.head:
            parts.append(f"head {self.head}")
        extras = [self.activation] + ([f"dropout {self.dropout:g}"] if self.dropout else [])
        extras += [self.init] if self.init != "default" else []
        return " | ".join(parts) + " | " + " ".join(extras)


@dataclass(frozen=True)
class Block:
    """One block as built: its stage's settings, its input width and whether it adds a residual."""

    stage: Stage
    in_channels: int
    stride: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def hidden(self) -> int:
        """The width the depthwise conv (and SE) works at."""
        return self.in_channels * self.stage.expansion

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.stage.out_channels


def _strided(size: tuple[int, int], stride: int, where: str) -> tuple[int, int]:
    h, w = size
    if stride > 1 and (h < 2 or w < 2):
        raise UsageError(f"{where} strides a {h}x{w} map: that would go below 1x1")
    return (h - 1) // stride + 1, (w - 1) // stride + 1  # same padding, odd kernel


def stem_size(spec: MBConvSpec, input_shape: Shape) -> tuple[int, int]:
    """(H, W) after the stem. Raises UsageError when its stride cannot apply."""
    return _strided(input_shape[1:], spec.stem_stride, "the stem")


def blocks(spec: MBConvSpec, input_shape: Shape) -> list[Block]:
    """Every block of ``spec`` in order, with its shapes (raises UsageError on a stride below 1x1)."""
    size, channels, result = stem_size(spec, input_shape), spec.stem, []
    for i, stage in enumerate(spec.stages, start=1):
        for j in range(stage.depth):
            stride = stage.stride if j == 0 else 1
            out = _strided(size, stride, f"stage {i}")
            result.append(Block(stage, channels, stride, size, out))
            size, channels = out, stage.out_channels
    return result


def se_channels(channels: int) -> int:
    return max(1, channels // SE_RATIO)


def layer_costs(spec: MBConvSpec, input_shape: Shape, num_classes: int) -> list[tuple[int, int]]:
    """(parameters, output pixels) of every parameterised layer, in build order.

    torchinfo's mult-adds are ``parameters x output pixels`` for a conv and ``parameters``
    for every other layer (batch norm, linear): BN rows carry 1, as do SE's 1x1 convs on
    their 1x1 maps.
    """
    h, w = stem_size(spec, input_shape)
    costs = [(input_shape[0] * spec.stem * 9, h * w), (2 * spec.stem, 1)]
    channels = spec.stem
    for b in blocks(spec, input_shape):
        s, k2, out = b.stage, b.stage.kernel_size ** 2, b.out_size[0] * b.out_size[1]
        se: list[tuple[int, int]] = []
        if s.se:
            c = _se_width(b)
            r = se_channels(c)
            se = [(c * r + r, 1), (r * c + c, 1)]
        if s.block == "plain":
            costs += [(b.in_channels * s.out_channels * k2, out), (2 * s.out_channels, 1), *se]
        else:
            if s.block == "inverted" and s.expansion > 1:
                costs += [(b.in_channels * b.hidden, b.in_size[0] * b.in_size[1]), (2 * b.hidden, 1)]
            costs += [(b.hidden * k2, out), (2 * b.hidden, 1), *se,
                      (b.hidden * s.out_channels, out), (2 * s.out_channels, 1)]
        channels, (h, w) = s.out_channels, b.out_size
    if spec.head:
        costs += [(channels * spec.head, h * w), (2 * spec.head, 1)]
        channels = spec.head
    return costs + [(channels * num_classes + num_classes, 1)]


def activations(spec: MBConvSpec, input_shape: Shape) -> tuple[int, int]:
    """(values the forward pass writes per image, largest single map): the memory estimate's input.

    Every conv, batch norm and activation output of the builder (:mod:`mbconv_model`), SE's
    rescaled map and its small per-channel vectors, the residual sums, and the head's pooled
    vector; the maps are counted where :func:`blocks` says their sizes are.
    """
    h, w = stem_size(spec, input_shape)
    saved, largest = 3 * spec.stem * h * w, spec.stem * h * w  # conv, batch norm, activation
    for b in blocks(spec, input_shape):
        s, (hi, wi), (ho, wo) = b.stage, b.in_size, b.out_size
        out_map = s.out_channels * ho * wo
        maps = []
        if s.block != "plain":
            if s.block == "inverted" and s.expansion > 1:
                maps += [b.hidden * hi * wi] * 3  # expand: conv, batch norm, activation
            maps += [b.hidden * ho * wo] * 3  # depthwise: conv, batch norm, activation
        maps += [out_map] * 2  # the (projecting) conv and its batch norm
        if s.se:
            c = _se_width(b)
            maps.append(c * ho * wo)  # the rescaled map
            saved += 3 * c + 2 * se_channels(c)  # mean, reduce, activation, expand, sigmoid
        if b.residual:
            maps.append(out_map)  # the sum
        if s.block != "inverted":
            maps.append(out_map)  # the activation after the block (an inverted block has none)
        saved += sum(maps)
        largest = max(largest, *maps)
        h, w = ho, wo
    channels = spec.stages[-1].out_channels
    if spec.head:
        saved += 3 * spec.head * h * w
        largest = max(largest, spec.head * h * w)
        channels = spec.head
    return saved + 2 * channels, largest  # the pooled vector (and its dropout)


def count_params(spec: MBConvSpec, input_shape: Shape, num_classes: int) -> int:
    """Exact trainable parameters of ``spec`` (the search space sizes widths with it)."""
    return sum(p for p, _ in layer_costs(spec, input_shape, num_classes))


def _se_width(b: Block) -> int:
    return b.stage.out_channels if b.stage.block == "plain" else b.hidden


def _is_stride(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in (1, 2)
