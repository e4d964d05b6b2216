"""Exact trainable-parameter counts (analytic) and mult-adds (torchinfo).

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
    raise TypeError(f"not a spec: {spec!r}")


def count_mult_adds(spec: Spec, input_shape: tuple[int, int, int], num_classes: int,
                    batch: int = PAPER_BATCH) -> int:
    """Total mult-adds of one forward pass over ``batch`` inputs, as torchinfo reports them.

    torchinfo is the tool the paper used, so its convention (e.g. a Linear layer counts
    its weights and biases once per sample) is kept for comparability.
    """
    import torchinfo

    from budgetnas.model import build_model

    model = build_model(spec, input_shape, num_classes)
    stats = torchinfo.summary(model, input_size=(batch, *input_shape), verbose=0, device="cpu")
    return int(stats.total_mult_adds)


def torchinfo_trainable(spec: Spec, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """torchinfo's trainable-parameter count (used to cross-check :func:`count_params`)."""
    import torchinfo

    from budgetnas.model import build_model

    model = build_model(spec, input_shape, num_classes)
    stats = torchinfo.summary(model, input_size=(1, *input_shape), verbose=0, device="cpu")
    return int(stats.trainable_params)


def human_count(n: float) -> str:
    """12_345_678 -> '12.35M' (the paper's style for mult-adds)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
