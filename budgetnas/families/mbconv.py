"""``mbconv`` on the registry: the family object that ties the spec, the model and the space together.

The family is split so that nothing imports back: :mod:`budgetnas.families.mbconv_spec`
holds the spec and its exact counts (see its docstring for the architecture), and
:mod:`~budgetnas.families.mbconv_model` (the builder) and
:mod:`~budgetnas.families.mbconv_space` (the search space) import only that module. This
module, on top of the three, is the only one that knows them all. The spec's names are
re-exported here, so ``from budgetnas.families.mbconv import MBConvSpec, Stage`` keeps
working.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from budgetnas.families.base import Family, Shape
from budgetnas.families.mbconv_spec import (BLOCKS, MAX_DEPTH, MAX_EXPANSION, MAX_KERNEL, MAX_STAGES,
                                            SE_RATIO, Block, MBConvSpec, Stage, activations, blocks,
                                            count_params, layer_costs, se_channels, stem_size)

if TYPE_CHECKING:
    from optuna.trial import BaseTrial
    from torch import nn

    from budgetnas.trainer import Recipe

__all__ = ["BLOCKS", "MAX_DEPTH", "MAX_EXPANSION", "MAX_KERNEL", "MAX_STAGES", "SE_RATIO", "Block", "MBConvFamily",
           "MBConvSpec", "Stage", "activations", "blocks", "count_params", "layer_costs", "se_channels", "stem_size"]


class MBConvFamily(Family):
    name = "mbconv"
    spec_type = MBConvSpec
    paper_family = "cnn"  # what it has to beat: reports and sweeps draw the paper's CNNs beside it
    # Depthwise convs apply few weights at many positions, so this family costs more mult-adds
    # per parameter than the plain CNN: twice cnn's factor rejects the costliest ~13% of randomly
    # sampled candidates (cnn's would reject ~half); see budgetnas.cost.
    compute_factor = 4
    channels_last = True
    feature_maps = True
    summary = ("efficient CNN: stem, stages of plain / depthwise-separable / inverted-residual blocks "
               "(optional SE), residuals, stride-2 downsampling, GAP head")

    @property
    def space_version(self) -> int:
        from budgetnas.families.mbconv_space import SPACE_VERSION

        return SPACE_VERSION

    def count_params(self, spec: MBConvSpec, input_shape: Shape, num_classes: int) -> int:
        return count_params(spec, input_shape, num_classes)

    def count_mult_adds(self, spec: MBConvSpec, input_shape: Shape, num_classes: int, batch: int = 1) -> int:
        return batch * sum(p * pixels for p, pixels in layer_costs(spec, input_shape, num_classes))

    def build(self, spec: MBConvSpec, input_shape: Shape, num_classes: int) -> "nn.Module":
        from budgetnas.families.mbconv_model import build

        return build(spec, input_shape, num_classes)

    def sample(self, trial: "BaseTrial", budget: int, input_shape: Shape, num_classes: int,
               parameterisation: str = "fit") -> MBConvSpec:
        from budgetnas.families.mbconv_space import sample

        return sample(trial, budget, input_shape, num_classes, parameterisation)

    def minimal_spec(self, parameterisation: str, input_shape: Shape) -> MBConvSpec:
        from budgetnas.families.mbconv_space import minimal_spec

        return minimal_spec(parameterisation, input_shape)

    def params_of(self, spec: MBConvSpec, recipe: "Recipe | None", budget: int, input_shape: Shape,
                  num_classes: int, parameterisation: str = "fit") -> dict[str, Any]:
        from budgetnas.families.mbconv_space import params_of

        return params_of(spec, recipe, budget, input_shape, num_classes, parameterisation)

    def activations(self, spec: MBConvSpec, input_shape: Shape) -> tuple[int, int]:
        return activations(spec, input_shape)

    def layers(self, spec: MBConvSpec) -> list[tuple[str, str]]:
        kinds = {"plain": "plain {k}x{k} conv", "dwsep": "depthwise-separable {k}x{k}",
                 "inverted": "inverted residual {k}x{k}, expansion {e}"}
        rows = [("stem", f"3x3 conv, {spec.stem} channels" + (", stride 2" if spec.stem_stride > 1 else ""))]
        for i, stage in enumerate(spec.stages, start=1):
            parts = [kinds[stage.block].format(k=stage.kernel_size, e=stage.expansion),
                     f"{stage.out_channels} channels", f"{stage.depth} block" + ("s" if stage.depth > 1 else "")]
            parts += (["stride 2"] if stage.stride > 1 else []) + (["squeeze-and-excitation"] if stage.se else [])
            rows.append((f"stage {i}", ", ".join(parts)))
        head = ([f"1x1 conv {spec.head} channels"] if spec.head else []) + ["global average pooling"]
        head += [f"dropout {spec.dropout:g}"] if spec.dropout else []
        return rows + [("head", ", ".join(head + ["linear"]))]

    def readable_attrs(self, spec: MBConvSpec) -> dict[str, Any]:
        return {"stage_channels": [s.out_channels for s in spec.stages], "stage_blocks": [s.block for s in spec.stages],
                "stage_depths": [s.depth for s in spec.stages]}

    def to_dict(self, spec: MBConvSpec) -> dict[str, Any]:
        data = asdict(spec)
        data["stages"] = [asdict(s) for s in spec.stages]
        return data
