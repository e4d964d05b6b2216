"""The search objectives, each described once: name, direction, Optuna metric name and value.

Why one registry: the study's directions and metric names (:mod:`budgetnas.study`), the
values a trial returns (:mod:`budgetnas.objective`), the costs the early-stopping rule
compares (:mod:`budgetnas.stopping`) and the CLI's choices all read this table, so a new
objective is one entry here. An objective whose value must be measured before training
(like ``latency``) brings its own ``measure``; the trial stores the value under ``metric``.

Torch-free on purpose: opening or checking a study imports this module, and that must stay
fast (a measuring function imports torch only when it runs).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Outcome:
    """What is known of a candidate: its exact counts and pre-training measurements (``measured``,
    by objective name) before training; accuracy and training seconds after (NaN until then)."""

    params: int
    mult_adds: int
    accuracy: float = math.nan
    seconds: float = math.nan
    measured: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """What a ``measure`` function gets: the architecture and where it will train."""

    spec: Any
    input_shape: tuple[int, int, int]
    num_classes: int
    device: str
    precision: str


@dataclass(frozen=True)
class Objective:
    """One objective. ``value_of(outcome)`` is the number Optuna optimises in ``direction``."""

    name: str
    direction: str  # "maximize" or "minimize"
    metric: str  # Optuna metric name, and the trial user attribute that holds the value
    value_of: Callable[[Outcome], float]
    measure: Callable[[Candidate], float] | None = None  # run before training when the objective is chosen
    help: str = ""

    def at_least_as_good(self, value: float, other: float) -> bool:
        """``value`` is no worse than ``other`` (False when either is unknown, i.e. NaN)."""
        return value >= other if self.direction == "maximize" else value <= other


def _inference_ms(candidate: Candidate) -> float:
    """Median wall milliseconds per image of the untrained net's forward pass, batch 256, on the
    training device (weights do not change the time, so it is known before training)."""
    import torch

    from budgetnas.device import resolve_placement
    from budgetnas.model import build_model

    placement = resolve_placement(candidate.device, candidate.precision)
    model = build_model(candidate.spec, candidate.input_shape, candidate.num_classes).to(placement.device).eval()
    batch = torch.zeros(256, *candidate.input_shape, device=placement.device)
    times = []
    with torch.inference_mode():
        for i in range(6):  # one warm-up pass, then five timed ones
            start = time.perf_counter()
            model(batch)
            if placement.device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000 / len(batch)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("accuracy", "maximize", "val_accuracy", lambda o: o.accuracy, help="validation accuracy"),
    Objective("runtime", "minimize", "train_seconds", lambda o: o.seconds, help="training wall seconds"),
    Objective("params", "minimize", "params", lambda o: o.params, help="trainable parameters"),
    Objective("mult_adds", "minimize", "mult_adds", lambda o: o.mult_adds, help="mult-adds at batch 512"),
    Objective("latency", "minimize", "inference_ms", lambda o: o.measured["latency"], measure=_inference_ms,
              help="inference milliseconds per image on the training device"),
)}
NAMES = tuple(OBJECTIVES)


def objective(name: str) -> Objective:
    return OBJECTIVES[name]


def values(names: tuple[str, ...] | list[str], outcome: Outcome) -> list[float]:
    """The objective values of ``outcome`` in the order of ``names``."""
    return [float(OBJECTIVES[name].value_of(outcome)) for name in names]
