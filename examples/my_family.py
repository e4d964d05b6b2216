"""An example plug-in family for budgetnas: a wide fully connected net with dropout.

It is small on purpose: everything a family needs fits in one file. Use it with::

    PYTHONPATH=. budgetnas search --family examples.my_family:WideFCN --budget 50k --trials 10
    PYTHONPATH=. budgetnas replay --study examples.my_family:WideFCN-50k-fashion-mnist

(from the checkout root). The study and every stored spec say
``family = "examples.my_family:WideFCN"``, so replay, report and train need no family option,
only the module on the path. To ship a family in a package instead, register it under the
entry-point group ``budgetnas.families``::

    [project.entry-points."budgetnas.families"]
    wide-fcn = "my_family:WideFCN"

and ``--family wide-fcn`` finds it. The protocol is :class:`budgetnas.families.Family`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from budgetnas.errors import UsageError
from budgetnas.families import Family

WIDTHS = (8, 4096)  # direct parameterisation
MAX_DEPTH = 2


@dataclass(frozen=True)
class WideFCNSpec:
    """``depth`` hidden layers of ``width`` units (ReLU, then dropout), then the output layer."""

    width: int
    depth: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Validate like the built-in specs do: one line naming the field (the CLI exits 2 with it).
        if isinstance(self.width, bool) or not isinstance(self.width, int) or not 1 <= self.width <= 1 << 20:
            raise UsageError(f"width must be an integer in 1..{1 << 20}, got {self.width!r}")
        if self.depth not in range(1, MAX_DEPTH + 1):
            raise UsageError(f"depth must be 1..{MAX_DEPTH}, got {self.depth!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))

    def describe(self) -> str:
        return f"wide {self.depth}x{self.width}" + (f" | dropout {self.dropout:.2f}" if self.dropout else "")


class WideFCN(Family):
    name = "wide-fcn"
    spec_type = WideFCNSpec
    summary = "example plug-in: 1-2 equally wide hidden layers with dropout"

    def count_params(self, spec: WideFCNSpec, input_shape: tuple[int, int, int], num_classes: int) -> int:
        fan_in, total = math.prod(input_shape), 0
        for _ in range(spec.depth):
            total += fan_in * spec.width + spec.width
            fan_in = spec.width
        return total + fan_in * num_classes + num_classes

    def count_mult_adds(self, spec: WideFCNSpec, input_shape: tuple[int, int, int], num_classes: int,
                        batch: int = 1) -> int:
        return batch * self.count_params(spec, input_shape, num_classes)  # torchinfo: Linear = its parameters

    def build(self, spec: WideFCNSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for _ in range(spec.depth):
            layers += [nn.Linear(fan_in, spec.width), nn.ReLU(), nn.Dropout(spec.dropout)]
            fan_in = spec.width
        return nn.Sequential(*layers, nn.Linear(fan_in, num_classes))

    def sample(self, trial, budget: int, input_shape: tuple[int, int, int], num_classes: int,
               parameterisation: str = "fit") -> WideFCNSpec:
        depth = trial.suggest_int("depth", 1, MAX_DEPTH)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        if parameterisation == "direct":
            return WideFCNSpec(trial.suggest_int("width", *WIDTHS, log=True), depth, dropout)
        # fit: the widest net within fill x budget (the count grows with the width, so count down from
        # the single-layer solution; budgetnas.space.fit_widths does the same by bisection for many widths)
        target = int(trial.suggest_float("fill", 0.5, 1.0) * budget)
        width = max(1, (target - num_classes) // (math.prod(input_shape) + 1 + num_classes))
        while width > 1 and self.count_params(WideFCNSpec(width, depth, dropout), input_shape, num_classes) > target:
            width -= 1
        return WideFCNSpec(width, depth, dropout)

    def minimal_spec(self, parameterisation: str, input_shape: tuple[int, int, int]) -> WideFCNSpec:
        return WideFCNSpec(WIDTHS[0] if parameterisation == "direct" else 1)

