"""The search space of the ``mbconv`` family: sampling, its inverse, and the smallest member.

The same two parameterisations as the paper's families (:mod:`budgetnas.space`): ``fit``
samples relative widths and a fill and scales them to the budget with the shared
:func:`~budgetnas.space.fit_widths` bisection (every count here grows with every width, as
it requires); ``direct`` samples the widths themselves and lets the objective reject what
is over the budget. Structure is sampled first and identically in both: the number of
stages, then per stage its block type, depth, stride, kernel, SE and (inverted blocks
only) expansion, then the optional head conv and the regularisation.

Every parameter keeps one distribution whatever the budget or input, so a study can
resume and TPE can model it. A stride 2 on a map that is already 1x1 would do nothing; it
is dropped and the spec records stride 1 (as the cnn family drops a pool on 8x8 inputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from budgetnas.errors import UsageError
from budgetnas.families.mbconv_spec import BLOCKS, MAX_EXPANSION, MBConvSpec, Stage, count_params
from budgetnas.space import (CHANNELS, DROPOUT, FILL, RELATIVE_WIDTH, _regularisation, check_direct_widths,
                             fit_params, fit_widths, recipe_params)

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

    from budgetnas.trainer import Recipe

SPACE_VERSION = 1  # bump whenever a name, range or rule below changes: old studies then refuse to resume
SAMPLED_STAGES = 4  # 28x28 -> 14 -> 7 -> 4 -> 2 with every stride taken
SAMPLED_DEPTH = 3
KERNELS = (3, 5)
HEAD_CHANNELS = (8, 1024)  # direct: the optional 1x1 head conv (MobileNetV2 uses 1280 at full size)


class _Shape:
    """Everything of an mbconv spec except its widths (shared by both parameterisations)."""

    def __init__(self, trial: "BaseTrial", input_shape: tuple[int, int, int]) -> None:
        self.n_stages = trial.suggest_int("n_stages", 1, SAMPLED_STAGES)
        wants_stem_stride = trial.suggest_categorical("stem_stride", [1, 2])
        self.stages: list[dict[str, Any]] = []
        wanted_strides = []
        for i in range(1, self.n_stages + 1):
            block = trial.suggest_categorical(f"stage{i}_block", list(BLOCKS))
            self.stages.append(dict(
                block=block, depth=trial.suggest_int(f"stage{i}_depth", 1, SAMPLED_DEPTH),
                kernel_size=trial.suggest_categorical(f"stage{i}_kernel", list(KERNELS)),
                expansion=trial.suggest_int(f"stage{i}_expansion", 1, MAX_EXPANSION) if block == "inverted" else 1,
                se=trial.suggest_categorical(f"stage{i}_se", [False, True])))
            wanted_strides.append(trial.suggest_categorical(f"stage{i}_stride", [1, 2]))
        self.head_conv = trial.suggest_categorical("head_conv", [False, True])
        self.dropout, self.activation, self.init = _regularisation(trial)
        # Same padding maps H to ceil(H / stride): a stride on a 1x1 map is dropped, not refused.
        size = min(input_shape[1:])
        self.stem_stride = wants_stem_stride if size >= 2 else 1
        size = (size - 1) // self.stem_stride + 1
        for stage, wanted in zip(self.stages, wanted_strides):
            stage["stride"] = wanted if size >= 2 else 1
            size = (size - 1) // stage["stride"] + 1

    @property
    def n_widths(self) -> int:
        return 1 + self.n_stages + int(self.head_conv)

    def build(self, widths: list[int]) -> MBConvSpec:
        """``widths``: the stem's, one per stage, then the head conv's when it has one."""
        stages = tuple(Stage(out_channels=w, **s) for w, s in zip(widths[1:], self.stages))
        return MBConvSpec(stem=widths[0], stages=stages, stem_stride=self.stem_stride,
                          head=widths[-1] if self.head_conv else 0, dropout=self.dropout,
                          activation=self.activation, init=self.init)

    def width_names(self) -> list[str]:
        return ["stem"] + [f"stage{i}" for i in range(1, self.n_stages + 1)] + (["head"] if self.head_conv else [])


def sample(trial: "BaseTrial", budget: int, input_shape: tuple[int, int, int], num_classes: int,
           parameterisation: str = "fit") -> MBConvSpec:
    shape = _Shape(trial, input_shape)
    names = shape.width_names()
    if parameterisation == "direct":
        return shape.build([trial.suggest_int(f"{n}_channels", *(HEAD_CHANNELS if n == "head" else CHANNELS),
                                              log=True) for n in names])
    relative = [trial.suggest_float(f"{n}_width", *RELATIVE_WIDTH, log=True) for n in names]
    fill = trial.suggest_float("fill", *FILL)
    return fit_widths(shape.build, relative, int(fill * budget), input_shape, num_classes)


def minimal_spec(parameterisation: str, input_shape: tuple[int, int, int]) -> MBConvSpec:
    """The smallest spec of the space: one stage of one block at the narrowest widths, no head conv.

    Which block type is smallest depends on the width (a plain 3x3 conv has 9w^2 weights, a
    depthwise-separable one 9w + w^2), so the cheapest of the three is taken.
    """
    width = CHANNELS[0] if parameterisation == "direct" else 1
    candidates = [MBConvSpec(stem=width, stages=(Stage(block, width),)) for block in BLOCKS]
    return min(candidates, key=lambda s: count_params(s, input_shape, 1))


def params_of(spec: MBConvSpec, recipe: "Recipe | None", budget: int, input_shape: tuple[int, int, int],
              num_classes: int, parameterisation: str = "fit") -> dict[str, Any]:
    """The trial parameters from which :func:`sample` rebuilds ``spec`` exactly (``--enqueue``)."""
    from optuna.trial import FixedTrial

    params = count_params(spec, input_shape, num_classes)
    if params > budget:
        raise UsageError(f"{spec.describe()} has {params:,} parameters, over the budget {budget:,}")
    stages = spec.stages
    if len(stages) > SAMPLED_STAGES or any(s.depth > SAMPLED_DEPTH or s.kernel_size not in KERNELS for s in stages):
        raise UsageError(f"{spec.describe()}: the space has 1..{SAMPLED_STAGES} stages of depth 1..{SAMPLED_DEPTH} "
                         f"with kernels {KERNELS}")
    if not DROPOUT[0] <= spec.dropout <= DROPOUT[1]:
        raise UsageError(f"{spec.describe()}: the space's dropout is {DROPOUT[0]}..{DROPOUT[1]}")
    values: dict[str, Any] = {"n_stages": len(stages), "stem_stride": spec.stem_stride, "head_conv": spec.head > 0,
                              "dropout": spec.dropout, "activation": spec.activation, "init": spec.init}
    for i, s in enumerate(stages, start=1):
        values.update({f"stage{i}_block": s.block, f"stage{i}_depth": s.depth, f"stage{i}_kernel": s.kernel_size,
                       f"stage{i}_se": s.se, f"stage{i}_stride": s.stride})
        if s.block == "inverted":
            values[f"stage{i}_expansion"] = s.expansion
    widths = {"stem": spec.stem, **{f"stage{i}": s.out_channels for i, s in enumerate(stages, start=1)},
              **({"head": spec.head} if spec.head else {})}
    if parameterisation == "direct":
        check_direct_widths(spec.describe(), widths,
                            {name: HEAD_CHANNELS if name == "head" else CHANNELS for name in widths})
        values.update({f"{name}_channels": width for name, width in widths.items()})
    else:
        values.update(fit_params(widths, params, budget, spec.describe()))
    if recipe is not None:
        values.update(recipe_params(recipe))
    rebuilt = sample(FixedTrial(values), budget, input_shape, num_classes, parameterisation)
    if rebuilt != spec:  # the inverse must be exact, or the enqueued trial would train something else
        raise UsageError(f"{spec.describe()} is not reachable exactly in the {parameterisation} space "
                         f"(it rebuilds as {rebuilt.describe()}); use --parameterisation direct")
    return values
