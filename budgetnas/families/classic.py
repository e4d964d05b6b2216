"""The paper's two families, ``cnn`` and ``fcn``, on the registry.

Their specs, counts, builder and search space stay where they have always been
(:mod:`budgetnas.spec`, :mod:`budgetnas.counting`, :mod:`budgetnas.model`,
:mod:`budgetnas.space`); these classes only delegate to them, so counts and search spaces
are unchanged and existing studies resume. What is new here is what the registry needs
and no older module had: analytic mult-adds (torchinfo's figures without building the
model, so a width of 10^9 costs nothing to refuse), the ``+bn`` variant and the trainer's
micro-batch hint.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from budgetnas.families.base import Family, Shape
from budgetnas.spec import CNNSpec, FCNSpec, feature_shapes

if TYPE_CHECKING:
    from optuna.trial import BaseTrial
    from torch import nn

    from budgetnas.trainer import Recipe


class _Classic(Family):
    """What cnn and fcn share: every method delegates to the original modules."""

    @property
    def space_version(self) -> int:
        from budgetnas.space import SPACE_VERSIONS

        return SPACE_VERSIONS[self.name]

    def count_params(self, spec: Any, input_shape: Shape, num_classes: int) -> int:
        from budgetnas.counting import count_params

        return count_params(spec, input_shape, num_classes)

    def build(self, spec: Any, input_shape: Shape, num_classes: int) -> "nn.Module":
        from budgetnas.model import build_model

        return build_model(spec, input_shape, num_classes)

    def sample(self, trial: "BaseTrial", budget: int, input_shape: Shape, num_classes: int,
               parameterisation: str = "fit") -> Any:
        from budgetnas.space import sample_spec

        return sample_spec(trial, self.name, budget, input_shape, num_classes, parameterisation)

    def minimal_spec(self, parameterisation: str, input_shape: Shape) -> Any:
        from budgetnas.space import minimal_spec

        return minimal_spec(self.name, parameterisation, input_shape)

    def params_of(self, spec: Any, recipe: "Recipe | None", budget: int, input_shape: Shape, num_classes: int,
                  parameterisation: str = "fit") -> dict[str, Any]:
        from budgetnas.space import params_of

        return params_of(spec, recipe, budget, input_shape, num_classes, parameterisation)

    def to_dict(self, spec: Any) -> dict[str, Any]:
        return {k: v for k, v in spec.to_dict().items() if k != "family"}

    def from_dict(self, data: dict[str, Any]) -> Any:
        from budgetnas.spec import spec_from_dict

        return spec_from_dict({**data, "family": self.name})


def _conv_sizes(spec: CNNSpec, input_shape: Shape) -> list[tuple[int, int]]:
    """(H, W) of each conv block's output before its pooling (the map the conv itself writes)."""
    feature_shapes(spec, input_shape)  # validates the spatial sizes first
    _, h, w = input_shape
    sizes = []
    for block in spec.conv:
        h, w = h + 2 * block.padding - block.kernel_size + 1, w + 2 * block.padding - block.kernel_size + 1
        sizes.append((h, w))
        if block.pool:
            h, w = h // block.pool, w // block.pool
    return sizes


class CNNFamily(_Classic):
    name = "cnn"
    spec_type = CNNSpec
    paper_family = "cnn"
    compute_factor = 2  # derived and checked in budgetnas.cost
    channels_last = True
    feature_maps = True
    summary = "the paper's plain CNN: conv blocks (conv, batch norm, activation, max-pool), flatten or GAP, FC layers"

    def count_mult_adds(self, spec: CNNSpec, input_shape: Shape, num_classes: int, batch: int = 1) -> int:
        # torchinfo counts every parameter once per sample, except a conv's, which it counts once
        # per output pixel: add the conv weights again for the other H*W - 1 pixels.
        total = self.count_params(spec, input_shape, num_classes)
        channels = input_shape[0]
        for block, (h, w) in zip(spec.conv, _conv_sizes(spec, input_shape)):
            total += (channels * block.out_channels * block.kernel_size**2 + block.out_channels) * (h * w - 1)
            channels = block.out_channels
        return batch * total

    def shape_params(self, spec: CNNSpec, input_shape: Shape) -> dict[str, Any]:
        from budgetnas.space import pool_choices

        return pool_choices(spec, input_shape)  # the space asks a block's pool only of small maps

    def with_batch_norm(self, spec: CNNSpec) -> CNNSpec:
        return replace(_conv_batch_norm(spec), fc_batch_norm=True)

    def nearest_in_space(self, spec: CNNSpec) -> CNNSpec:
        return _conv_batch_norm(spec)  # space version 3 normalises every conv block

    def activations(self, spec: CNNSpec, input_shape: Shape) -> tuple[int, int]:
        saved = largest = 0
        for block, (h, w), (c, h_out, w_out) in zip(spec.conv, _conv_sizes(spec, input_shape),
                                                    feature_shapes(spec, input_shape)):
            conv_map = block.out_channels * h * w
            saved += conv_map * (3 if block.batch_norm else 2)  # conv output, [batch norm], activation
            if block.pool:
                saved += 3 * c * h_out * w_out  # the pooled map (fp32) and its indices (int64)
            largest = max(largest, conv_map)
        return _fc_activations(spec.fc, spec.fc_batch_norm, saved, largest, spec.dropout)

    def largest_activation(self, spec: CNNSpec, input_shape: Shape) -> int | None:
        return max(b.out_channels * h * w for b, (h, w) in zip(spec.conv, _conv_sizes(spec, input_shape)))

    def layers(self, spec: CNNSpec) -> list[tuple[str, str]]:
        rows = []
        for i, block in enumerate(spec.conv, start=1):
            extras = ([f"max-pool {block.pool}x{block.pool}"] if block.pool else []) + (
                ["batch norm"] if block.batch_norm else [])
            rows.append((f"conv {i}", ", ".join([f"{block.out_channels} channels, "
                                                 f"{block.kernel_size}x{block.kernel_size} kernel", *extras])))
        rows.append(("head", "global average pooling" if spec.head == "gap" else "flatten"))
        return rows + [_dense_row(spec.fc)]

    def readable_attrs(self, spec: CNNSpec) -> dict[str, Any]:
        return {"conv_channels": [b.out_channels for b in spec.conv], "kernels": [b.kernel_size for b in spec.conv],
                "fc_widths": list(spec.fc)}


def _dense_row(widths: tuple[int, ...]) -> tuple[str, str]:
    return ("dense layers", ", ".join(map(str, widths)) + " + output" if widths else "output only")


def _fc_activations(widths: tuple[int, ...], batch_norm: bool, saved: int, largest: int,
                    dropout: float = 0.0) -> tuple[int, int]:
    """``activations`` of the hidden FC layers (linear output, [batch norm], activation, and with
    dropout its output and mask, counted as two values) added on."""
    for width in widths:
        saved += width * ((3 if batch_norm else 2) + (2 if dropout else 0))
        largest = max(largest, width)
    return saved, largest


class FCNFamily(_Classic):
    name = "fcn"
    spec_type = FCNSpec
    paper_family = "fcn"
    compute_factor = 2  # an FCN costs about its parameter count per image: never binds
    summary = "the paper's fully connected net: flatten, 1-4 hidden layers (optional batch norm, dropout)"

    def count_mult_adds(self, spec: FCNSpec, input_shape: Shape, num_classes: int, batch: int = 1) -> int:
        return batch * self.count_params(spec, input_shape, num_classes)  # torchinfo: each parameter once

    def with_batch_norm(self, spec: FCNSpec) -> FCNSpec:
        return replace(spec, batch_norm=True)

    def activations(self, spec: FCNSpec, input_shape: Shape) -> tuple[int, int]:
        return _fc_activations(spec.hidden, spec.batch_norm, 0, 0, spec.dropout)

    def layers(self, spec: FCNSpec) -> list[tuple[str, str]]:
        return [_dense_row(spec.hidden)]

    def readable_attrs(self, spec: FCNSpec) -> dict[str, Any]:
        return {"fc_widths": list(spec.hidden)}


def _conv_batch_norm(spec: CNNSpec) -> CNNSpec:
    """``spec`` with every conv block batch-normalised (its fully connected layers as they are)."""
    return replace(spec, conv=tuple(replace(b, batch_norm=True) for b in spec.conv))
