"""What a candidate costs to train, known from its spec before anything is built, and the
default bounds the search puts on it.

The parameter budget does not bound compute or memory: a convolution costs its parameters
times the positions of its feature map, so one wide unpooled layer can cost 16x the paper's
CNN-100K at the same count (the issue-13 default search sampled ``conv 170k5bn,22k5bn | gap``,
39.3G mult-adds per batch of 512, and ``conv 4562k3p2 | gap``, which took 12.5 GB of RAM).
So the search rejects, before building the model, every candidate above two bounds:

**Compute** (``--max-mult-adds``, mult-adds of one forward pass over a batch of 512, the
paper's figure). The default is ``2 * budget * h * w`` per image, where ``h x w`` is the map
the space's forced pooling leads to (``space.POOLED_SIZE``: 7x7 for 28x28 inputs, 8x8 for
32x32 and for 8x8): twice what the budget costs when every weight is applied once per position
of that map. That reference is the scale of the models that do well: the paper's CNN-100K
costs 46 mult-adds per parameter on 28x28 inputs (7 x 7 = 49), the issue-8 winners 32..72. Twice it keeps
every paper pick, found config and starting point (tested; ``studies/seeds/cnn-10k-b`` sits
right at it) and rejects everything the
issue reported: 5.0G at 100K and 28x28 inputs, about 2.1x the paper's CNN-100K. An FCN costs
about its parameter count per image, far below the bound, so it never binds there. The factor is the family's
(``Family.compute_factor``): ``mbconv``'s depthwise convs apply few weights at many positions,
so at factor 2 about half of its randomly sampled candidates would be rejected (measured: 51%
at 10K, 53% at 100K, against 38% and 33% for cnn); its factor 4 rejects the costliest ~13%.

**Memory** (``--max-memory``, bytes of training activations at the recipe's batch size).
:func:`training_memory` counts, per image, what autograd keeps for the backward pass (each
family says what, ``Family.activations``: for a conv block its conv output, its batch-norm
output, its activation output and, when it pools, the pooled map and its int64 indices) plus
1.5x the largest map for the gradients in flight, all in fp32. The same estimate, plus the
weights, is what refuses a model that cannot fit in memory at all (:func:`model_bytes`). Calibrated on this CPU: ``conv 128k3bn p2`` at batch 512 measured 1,046 MiB of
peak RSS growth against an estimate of 1,031 MiB; ``conv 256k3 | gap`` at batch 256, 604 MiB
against 687 MiB. The default bound is :data:`MEMORY_FRACTION` of the memory available when
the search starts (``MemAvailable``, else physical memory; the GPU's free memory on CUDA),
leaving the rest to the dataset, the process, evaluation and whatever else runs there.

Both are *caps*: they only reject, never change what a trained trial means, so adding,
widening or removing one on an existing study is allowed (``records.CAP_SETTINGS``).
Rejections are Optuna constraints (``Trial.set_constraint``), so TPE learns where they lie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

from budgetnas.counting import PAPER_BATCH, count_mult_adds, count_params, human_count
from budgetnas.errors import UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.limits import available_memory as host_memory, gib
from budgetnas.space import POOL, POOLED_SIZE
from budgetnas.spec import Spec

Cap = Union[int, None, Literal["auto"]]  # a number, no cap, or the default rule below

COMPUTE_FACTOR = 2  # cnn's: default max mult-adds per image = factor * budget * (area of the pooled map)
MEMORY_FRACTION = 0.15  # default max training-activation memory = this share of available memory
_FLOAT_BYTES = 4
_GRADIENT_FACTOR = 1.5  # gradients in flight during backward, in units of the largest map


def mult_adds(spec: Spec, input_shape: tuple[int, int, int], num_classes: int, batch: int = PAPER_BATCH) -> int:
    """torchinfo's mult-adds of ``spec`` over ``batch`` inputs, computed without building it
    (each family counts its own analytically: :func:`budgetnas.counting.count_mult_adds`)."""
    return count_mult_adds(spec, input_shape, num_classes, batch)


def parse_cap(value: object, field: str) -> Cap:
    """A cap as given: ``"auto"`` (the default bound), ``"none"``/None (no bound), a positive
    number, or text such as ``"5G"``; a bad one is a :class:`~budgetnas.errors.FieldError` naming ``field``."""
    from budgetnas.budget import parse_budget
    from budgetnas.errors import FieldError, UsageError

    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
        return None if value.strip().lower() == "none" else "auto"
    try:
        return parse_budget(value, what=field)  # type: ignore[arg-type]
    except UsageError as exc:
        raise FieldError(f"{exc} (or auto, or none)", field) from None


def activation_estimate(spec: Spec, input_shape: tuple[int, int, int]) -> tuple[int, int] | None:
    """Per image: (values autograd keeps for the backward pass, largest single map), the input
    included; from the spec's family (:meth:`~budgetnas.families.Family.activations`), None if it
    does not say. The one estimate behind :func:`training_memory` and :func:`model_bytes`."""
    from budgetnas.families import family_of

    found = family_of(spec).activations(spec, input_shape)
    if found is None:
        return None
    pixels = math.prod(input_shape)
    return found[0] + pixels, max(found[1], pixels)


def training_memory(spec: Spec, input_shape: tuple[int, int, int], batch: int) -> int | None:
    """Estimated peak bytes of training activations for one step of ``batch`` images (fp32): what
    autograd keeps plus :data:`_GRADIENT_FACTOR` x the largest map for the gradients in flight;
    None for a family that does not estimate its activations (no memory bound applies to it)."""
    estimate = activation_estimate(spec, input_shape)
    if estimate is None:
        return None
    saved, largest = estimate
    return int(_FLOAT_BYTES * batch * (saved + _GRADIENT_FACTOR * largest))


@dataclass(frozen=True)
class EpochTime:
    """Seconds per training epoch predicted from a candidate's training activations per image,
    fitted to the epochs a study measured, from the safe side.

    Why activations and not mult-adds: on a CPU, these small nets spend a step moving feature
    maps through memory more than multiplying. Over the 209 trials of six finished 40-minute
    journals (CNN 50K and 100K, mbconv 20K, sessions 19-21, every epoch on the same 20,000-image
    slice, one core), seconds per epoch per G of mult-adds varied with a coefficient of variation
    of 0.83 (CNN) and 0.68 (mbconv), but per MB of :func:`training_memory` per image only 0.20 and
    0.19 (mbconv's models of 0.15 MB and more; below that a step's fixed cost dominates). So the
    fit is ``a + b * activations`` (least squares, ``a, b >= 0``), scaled up by ``k`` until no
    measured epoch lies above it: the sweep's time limit is one the user holds us to.
    """

    a: float  # seconds per epoch whatever the model (data, optimiser steps, validation)
    b: float  # seconds per epoch per byte of training activations per image
    k: float  # >= 1: how far the measured epochs lie above the least-squares line, at most

    @classmethod
    def fit(cls, points: "list[tuple[float, float]]") -> "EpochTime | None":
        """From (training activation bytes per image, measured mean seconds per epoch) of trials;
        None without a point."""
        points = [(x, y) for x, y in points if x > 0 and y > 0]
        if not points:
            return None
        n = len(points)
        mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
        spread = sum((x - mx) ** 2 for x, _ in points)
        b = sum((x - mx) * (y - my) for x, y in points) / spread if spread else 0.0
        a = my - b * mx
        if b <= 0:  # one size, or no trend: as slow as the slowest, whatever the size
            a, b = max(y for _, y in points), 0.0
        elif a < 0:  # through the origin instead
            a, b = 0.0, sum(x * y for x, y in points) / sum(x * x for x, _ in points)
        k = max(1.0, max(y / (a + b * x) for x, y in points))
        return cls(a, b, k)

    def __call__(self, activations: float) -> float:
        """Predicted seconds per epoch of a candidate with ``activations`` bytes per image."""
        return self.k * (self.a + self.b * activations)

    def largest(self, seconds: float) -> float:
        """The most activation bytes per image an epoch of ``seconds`` allows (inf without a trend, 0 if none)."""
        if self.k * self.a > seconds:
            return 0.0
        return math.inf if self.b == 0 else (seconds / self.k - self.a) / self.b


def default_max_mult_adds(budget: int, input_shape: tuple[int, int, int], batch: int = PAPER_BATCH,
                          factor: float = COMPUTE_FACTOR) -> int:
    """The default compute bound: ``factor * budget * h * w`` mult-adds per image, times
    ``batch``, where ``h x w`` is the map after the pools the space always makes (7x7 for 28x28)."""
    _, h, w = input_shape
    while min(h, w) > POOLED_SIZE:
        h, w = h // POOL, w // POOL
    return int(factor * budget * h * w * batch)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes available for training now: free GPU memory on CUDA, else the host's available
    memory (``MemAvailable`` from /proc/meminfo, else physical memory); None if unknown."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return host_memory()


def default_max_memory(device: str = "cpu") -> int | None:
    available = available_memory(device)
    return None if available is None else int(available * MEMORY_FRACTION)


@dataclass(frozen=True)
class CostBounds:
    """The bounds in force for one search (None = unbounded)."""

    max_mult_adds: int | None = None  # at batch PAPER_BATCH
    max_memory: int | None = None  # bytes, at the recipe's batch size

    @classmethod
    def resolve(cls, max_mult_adds: Cap, max_memory: Cap, budget: int, input_shape: tuple[int, int, int],
                device: str = "cpu", family: str = "cnn") -> "CostBounds":
        """Turn ``"auto"`` into the defaults above for this budget, input size, machine and family.

        The compute bound's factor is the family's (:attr:`~budgetnas.families.Family.compute_factor`):
        2 for the plain families it was derived for, 4 for ``mbconv``; a family without one (a
        plug-in that sets none) keeps its mult-adds unbounded under ``auto`` (a number still applies)."""
        from budgetnas.families import get_family

        compute = max_mult_adds
        if max_mult_adds == "auto":
            factor = get_family(family).compute_factor
            compute = None if factor is None else default_max_mult_adds(budget, input_shape, factor=factor)
        memory = default_max_memory(device) if max_memory == "auto" else max_memory
        return cls(compute, memory)

    def describe(self) -> str:
        compute = (f"{human_count(self.max_mult_adds)} mult-adds per batch of {PAPER_BATCH}"
                   if self.max_mult_adds is not None else "no compute bound")
        memory = (f"{human_bytes(self.max_memory)} of training activations" if self.max_memory is not None
                  else "no memory bound")
        return f"{compute}, {memory}"

    def violations(self, mult_adds_value: int, memory: int | None) -> dict[str, int]:
        """Constraint name -> amount over (positive) or under (<= 0) each bound in force."""
        found = {}
        if self.max_mult_adds is not None:
            found[COMPUTE_CONSTRAINT] = mult_adds_value - self.max_mult_adds
        if self.max_memory is not None and memory is not None:
            found[MEMORY_CONSTRAINT] = memory - self.max_memory
        return found


COMPUTE_CONSTRAINT = "mult_adds_over_cap"
MEMORY_CONSTRAINT = "memory_over_cap"


def human_bytes(n: float) -> str:
    """3_200_000_000 -> '3.2 GB' (decimal units, as ``--max-memory 3.2G`` reads them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def model_bytes(spec: "Spec", input_shape: tuple[int, int, int], num_classes: int, *, batch: int = 0,
                training: bool = False) -> int:
    """The memory a model needs: fp32 weights (x4 when training: gradients and Adam's two moments),
    plus, for a batch, the activation estimate (:func:`training_memory` when training, else the
    values one forward pass writes). A family without an activation estimate counts weights only."""
    weights = count_params(spec, input_shape, num_classes) * _FLOAT_BYTES * (4 if training else 1)
    estimate = activation_estimate(spec, input_shape) if batch else None
    if estimate is None:
        return weights
    if training:
        return weights + int(training_memory(spec, input_shape, batch) or 0)
    return weights + _FLOAT_BYTES * batch * estimate[0]


def check_model_memory(spec: "Spec", input_shape: tuple[int, int, int], num_classes: int, *, batch: int = 0,
                       training: bool = False, what: str = "this model") -> None:
    """Raise UsageError if ``spec`` cannot fit in the memory available now (see the module docstring)."""
    need = model_bytes(spec, input_shape, num_classes, batch=batch, training=training)
    have = host_memory()
    if need > have:
        doing = (f"to train at batch {batch}" if training
                 else f"for a batch of {batch}" if batch else "for its weights")
        raise UsageError(f"{what} needs at least {gib(need)} {doing} ({describe_spec(spec)[:120]}), more than the "
                         f"{gib(have)} of memory available; use smaller widths" + (" or batch" if batch else ""))
