"""The one input scaling: uint8 images -> the float inputs a model trained with a recipe expects.

Pixels are scaled to 0..1 (as ``ToTensor`` does) and, when ``recipe.normalize`` is true,
standardised with the training split's per-channel mean and std (``Data.mean``/``Data.std``).
The trainer, the feature-map renderer and the exported model all read it here, so a model is
never shown inputs scaled differently from those it learned on.
"""

from __future__ import annotations

import torch

from budgetnas.data import Data
from budgetnas.recipe import Recipe


def input_stats(data: Data, recipe: Recipe) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that [0, 1] inputs are standardised with: the training split's, or (0, 1) = none."""
    if recipe.normalize:
        return data.mean, data.std
    channels = data.input_shape[0]
    return (0.0,) * channels, (1.0,) * channels


def scale(images: torch.Tensor, data: Data, recipe: Recipe, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) images -> float32 model inputs on ``device`` (default: where the images are)."""
    x = (images if device is None else images.to(device)).to(torch.float32).div_(255)
    if recipe.normalize:
        mean, std = input_stats(data, recipe)
        x = x.sub_(torch.tensor(mean, device=x.device).view(1, -1, 1, 1)).div_(
            torch.tensor(std, device=x.device).view(1, -1, 1, 1))
    return x
