"""Ship a trained model as one self-contained ``torch.export`` file (``.pt2``).

``torch.export`` (not TorchScript, which torch 2.14 deprecates) needs no new dependency and
no budgetnas at load time. The exported program includes the input normalisation, so its
contract is the plain torchvision one: float images (N, C, H, W) in [0, 1], as
``transforms.ToTensor()`` gives, in; class logits out. The batch size is dynamic.

    program = torch.export.load("runs/best/model.pt2").module()
    logits = program(images)      # images: float32 (N, 1, 28, 28) in [0, 1]

Loading a ``.pt2`` unpickles, so it is for trusted files only; :func:`load_weights` is the
safe path (the spec from TOML, the weights with ``weights_only=True``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from budgetnas.data import Data
from budgetnas.inputs import input_stats
from budgetnas.trainer import Recipe


class Deployable(nn.Module):
    """``net`` preceded by the normalisation it was trained with (mean 0 / std 1 = none)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def deployable(model: nn.Module, data: Data, recipe: Recipe) -> Deployable:
    """A CPU, eval-mode copy of ``model`` that takes [0, 1] images (the trained model is untouched)."""
    mean, std = input_stats(data, recipe)
    net = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()
    return Deployable(net, mean, std).eval()


def export_model(model: nn.Module, data: Data, recipe: Recipe, path: str | Path) -> Path:
    """Export ``model`` (with its normalisation) to ``path`` with ``torch.export``; returns the path."""
    path = Path(path)
    module = deployable(model, data, recipe)
    example = torch.zeros(2, *data.input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def load_exported(path: str | Path) -> nn.Module:
    """The callable module of an exported program (takes [0, 1] images, returns logits).

    Trusted files only: ``torch.export.load`` unpickles, so a crafted ``.pt2`` runs code when
    loaded. For files of unknown origin use :func:`load_weights`.
    """
    return torch.export.load(str(path)).module()


def load_weights(folder: str | Path) -> tuple[nn.Module, object]:
    """(model, RunConfig) from a run folder, safely: the spec from its TOML, weights with ``weights_only=True``.

    The folder is a ``budgetnas replay`` or ``budgetnas train --out`` output (``model.pt`` with
    ``spec.toml`` or ``config.toml``). Nothing in it is unpickled, so a crafted file cannot run
    code; the model takes inputs normalised as in training (``config.recipe.normalize``).
    """
    from budgetnas.config import load_config
    from budgetnas.data import dataset_info
    from budgetnas.errors import UsageError
    from budgetnas.model import build_model

    folder = Path(folder)
    config_path = next((folder / n for n in ("spec.toml", "config.toml") if (folder / n).is_file()), None)
    if config_path is None or not (folder / "model.pt").is_file():
        raise UsageError(f"{folder} holds no trained model: expected model.pt with spec.toml or config.toml "
                         "(written by budgetnas replay or budgetnas train --out)")
    config = load_config(config_path)
    input_shape, num_classes = dataset_info(config.dataset)
    model = build_model(config.spec, input_shape, num_classes)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), config
