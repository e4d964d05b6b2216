"""Exact trainable-parameter counts and mult-adds (both analytic), with torchinfo cross-checks.

:func:`count_params` never builds a model: the search calls it for every candidate
(and many times per candidate when widths are scaled to fit a budget), so it must be
cheap. A property test proves it equals ``sum(p.numel())`` of the built model and
torchinfo's trainable count for random specs of both families.
"""

from __future__ import annotations

import math

from budgetnas.spec import CNNSpec, FCNSpec, Spec, feature_shapes

PAPER_BATCH = 512  # the paper quotes torchinfo mult-adds at batch 512


def count_params(spec: Spec, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Trainable parameters of ``spec`` for inputs of ``input_shape`` (C, H, W)."""
    if isinstance(spec, FCNSpec):
        fan_in = math.prod(input_shape)
        total = 0
        for width in spec.hidden:
            total += fan_in * width + width + (2 * width if spec.batch_norm else 0)
            fan_in = width
        return total + fan_in * num_classes + num_classes
    if isinstance(spec, CNNSpec):
        shapes = feature_shapes(spec, input_shape)  # validates the spatial sizes
        total = 0
        channels = input_shape[0]
        for block in spec.conv:
            c = block.out_channels
            total += channels * c * block.kernel_size**2 + c + (2 * c if block.batch_norm else 0)
            channels = c
        c, h, w = shapes[-1]
        fan_in = c if spec.head == "gap" else c * h * w
        for width in spec.fc:
            total += fan_in * width + width + (2 * width if spec.fc_batch_norm else 0)
            fan_in = width
        return total + fan_in * num_classes + num_classes
    from budgetnas.families import family_of  # any other family counts its own

    return family_of(spec).count_params(spec, input_shape, num_classes)


def count_mult_adds(spec: Spec, input_shape: tuple[int, int, int], num_classes: int,
                    batch: int = PAPER_BATCH) -> int:
    """Total mult-adds of one forward pass over ``batch`` inputs, as torchinfo reports them.

    torchinfo is the tool the paper used, so its convention (e.g. a Linear layer counts
    its weights and biases once per sample) is kept for comparability. Each family computes
    it analytically, without building the model (:func:`torchinfo_mult_adds` is the check).
    """
    from budgetnas.families import family_of

    return family_of(spec).count_mult_adds(spec, input_shape, num_classes, batch)


def torchinfo_mult_adds(spec: Spec, input_shape: tuple[int, int, int], num_classes: int,
                        batch: int = PAPER_BATCH) -> int:
    """torchinfo's mult-adds of the built model (used to cross-check :func:`count_mult_adds`)."""
    import torchinfo

    from budgetnas.families import family_of  # the family's builder: no import of model.py from here

    model = family_of(spec).build(spec, input_shape, num_classes)
    stats = torchinfo.summary(model, input_size=(batch, *input_shape), verbose=0, device="cpu")
    return int(stats.total_mult_adds)


def paper_batch_mult_adds(spec: Spec, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Mult-adds at the paper's batch (:data:`PAPER_BATCH`), as every trial, replay and run records them.

    torchinfo's mult-adds grow linearly with the batch, so one sample is traced and the count
    scaled: the same number, 512 times less tracing.
    """
    return count_mult_adds(spec, input_shape, num_classes, batch=1) * PAPER_BATCH


def torchinfo_trainable(spec: Spec, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """torchinfo's trainable-parameter count (used to cross-check :func:`count_params`)."""
    import torchinfo

    from budgetnas.families import family_of  # the family's builder: no import of model.py from here

    model = family_of(spec).build(spec, input_shape, num_classes)
    stats = torchinfo.summary(model, input_size=(1, *input_shape), verbose=0, device="cpu")
    return int(stats.trainable_params)


def human_count(n: float) -> str:
    """12_345_678 -> '12.35M' (the paper's style for mult-adds)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
