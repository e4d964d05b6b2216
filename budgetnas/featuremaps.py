"""Feature maps: what every conv block of a trained CNN sees in a few test images.

The paper hooked its conv layers and drew their activations for three test images; this
does the same for any :class:`budgetnas.model.Net` (replayed, reproduced or trained with
``budgetnas train``): a forward hook on the activation of each conv block (before its
pooling, so the maps keep the block's full resolution), one PNG grid per image with the
input on top and one row group per block, each channel scaled to its own range.

Usage::

    maps = render_feature_maps(model, data, recipe)          # one image per class
    save_feature_maps(maps, "runs/best/featuremaps")         # image00017-Trouser.png, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from budgetnas.data import Data
from budgetnas.errors import UsageError
from budgetnas.inputs import scale
from budgetnas.figures import png_bytes, stack_with_titles, tile
from budgetnas.trainer import Recipe

CELL = 56  # pixels per map in the grid: 28x28 inputs drawn at 2x


@dataclass
class FeatureMaps:
    """The activations of every conv block for one test image, and its PNG rendering."""

    index: int  # position in the test split
    label: str  # its class name
    blocks: list[np.ndarray]  # per block: (channels, H, W) float32 activations
    png: bytes

    @property
    def filename(self) -> str:
        return f"image{self.index:05d}-{re.sub(r'[^A-Za-z0-9]+', '-', self.label).strip('-')}.png"


def prepare(images: torch.Tensor, data: Data, recipe: Recipe) -> torch.Tensor:
    """uint8 (N, C, H, W) images -> the float inputs the model was trained on."""
    return scale(images, data, recipe)


def one_per_class(labels: torch.Tensor) -> list[int]:
    """Index of the first example of each class present, in class order."""
    return [int(torch.nonzero(labels == c)[0]) for c in sorted(set(labels.tolist()))]


def block_activations(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Activations (after the activation function) of each of ``model.blocks`` for inputs ``x``."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        raise UsageError("feature maps need a CNN with conv blocks; this model has none (an FCN?)")
    captured: list[torch.Tensor] = []
    handles = [_activation_of(block).register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
               for block in blocks]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [a.float().cpu() for a in captured]


def render_feature_maps(model: nn.Module, data: Data, recipe: Recipe,
                        indices: Sequence[int] | None = None) -> list[FeatureMaps]:
    """Feature maps of test images ``indices`` (default: the first of each class)."""
    test = data.require_test()
    if indices is None:
        indices = one_per_class(test.y)
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise UsageError(f"image index {bad[0]} is outside the test split (0..{len(test) - 1})")
    images = test.x[list(indices)]
    activations = block_activations(model, prepare(images, data, recipe))
    result = []
    for k, index in enumerate(indices):
        label = data.classes[int(test.y[index])]
        blocks = [a[k].numpy() for a in activations]
        parts = [(f"test image {index}: {label}", _input_image(images[k]))]
        for b, maps in enumerate(blocks, start=1):
            columns = min(len(maps), 16)
            parts.append((f"block {b}: {maps.shape[0]} channels, {maps.shape[1]}x{maps.shape[2]}",
                          tile(maps, CELL if maps.shape[1] > 7 else CELL // 2, columns)))
        result.append(FeatureMaps(index, label, blocks, png_bytes(stack_with_titles(parts))))
    return result


def save_feature_maps(maps: Sequence[FeatureMaps], folder: str | Path) -> list[Path]:
    """Write each image's grid as ``folder/<filename>``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fm in maps:
        path = folder / fm.filename
        path.write_bytes(fm.png)
        paths.append(path)
    return paths


def _input_image(image: torch.Tensor) -> Image.Image:
    """A uint8 (C, H, W) image as PIL, drawn at twice the grid's cell size."""
    array = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    return pil.convert("RGB").resize((2 * CELL, 2 * CELL), Image.NEAREST)


def _activation_of(block: nn.Module) -> nn.Module:
    """The activation layer of a conv block: its last layer that is not conv, norm or pool."""
    if isinstance(block, nn.Sequential):
        skip = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout)
        candidates = [m for m in block if not isinstance(m, skip)]
        if candidates:
            return candidates[-1]
    return block  # unknown layout: the block's output is the next best thing

