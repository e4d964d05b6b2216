"""The ``nn.Module`` of an :class:`~budgetnas.families.mbconv_spec.MBConvSpec`.

The layers are created in exactly the order and sizes of
:func:`budgetnas.families.mbconv_spec.layer_costs`, which is what the counts are summed over;
tests/test_families.py checks the two against each other (and torchinfo) on random specs.
The result is a :class:`budgetnas.model.Net`: ``blocks`` (the stem, every block, the head
conv) so that feature maps hook each block, then the pooling head.
"""

from __future__ import annotations

import torch
from torch import nn

from budgetnas.families.mbconv_spec import Block, MBConvSpec, blocks, se_channels, stem_size
from budgetnas.model import _ACTIVATIONS, Net, _initialise


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (``groups == channels``) that runs in fp32 under CPU autocast.

    Why: on CPUs with native bf16, oneDNN's bf16 depthwise convs train several times slower than
    fp32 ones (its backward above all: a stride-2 3x3 over 64 channels, 14x14 -> 7x7, took 40 ms
    in bf16 against 4.5 ms in fp32 per batch of 128 on one core), while the pointwise and plain
    convs around them gain from bf16. Elsewhere (CUDA, no autocast) it is a plain ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = DepthwiseConv2d if groups > 1 else nn.Conv2d
    return [conv(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out)]


class SqueezeExcite(nn.Module):
    """Channel attention: x * sigmoid(expand(act(reduce(mean over H, W of x))))."""

    def __init__(self, channels: int, act: type[nn.Module]) -> None:
        super().__init__()
        reduced = se_channels(channels)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class MBBlock(nn.Module):
    """``body`` (ending in batch norm), plus the input where shapes allow, then the activation
    (none after an inverted block: MobileNetV2's linear bottleneck)."""

    def __init__(self, block: Block, act: type[nn.Module]) -> None:
        super().__init__()
        s, c_in, k = block.stage, block.in_channels, block.stage.kernel_size
        layers: list[nn.Module] = []
        if s.block == "plain":
            layers += _conv_bn(c_in, s.out_channels, k, block.stride)
            layers += [SqueezeExcite(s.out_channels, act)] if s.se else []
        else:
            hidden = block.hidden
            if s.block == "inverted" and s.expansion > 1:
                layers += [*_conv_bn(c_in, hidden, 1), act()]
            layers += [*_conv_bn(hidden, hidden, k, block.stride, groups=hidden), act()]
            layers += [SqueezeExcite(hidden, act)] if s.se else []
            layers += _conv_bn(hidden, s.out_channels, 1)
        self.body = nn.Sequential(*layers)
        self.residual = block.residual
        self.act = nn.Identity() if s.block == "inverted" else act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + x if self.residual else y)


def build(spec: MBConvSpec, input_shape: tuple[int, int, int], num_classes: int) -> Net:
    """Build ``spec`` for ``input_shape`` (C, H, W) inputs; raises UsageError on a stride below 1x1."""
    act = _ACTIVATIONS[spec.activation]
    stem_size(spec, input_shape)  # refuses an impossible stem stride before any layer exists
    modules: list[nn.Module] = [nn.Sequential(*_conv_bn(input_shape[0], spec.stem, 3, spec.stem_stride), act())]
    channels = spec.stem
    for block in blocks(spec, input_shape):
        modules.append(MBBlock(block, act))
        channels = block.stage.out_channels
    if spec.head:
        modules.append(nn.Sequential(*_conv_bn(channels, spec.head, 1), act()))
        channels = spec.head
    head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    head += [nn.Dropout(spec.dropout)] if spec.dropout else []
    model = Net(modules, nn.Sequential(*head, nn.Linear(channels, num_classes)))
    _initialise(model, spec.init)
    return model
