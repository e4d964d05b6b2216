"""The figures the paper reported for its hand-designed models (Fashion-MNIST, 20 epochs).

One table, used as reference points in reports and by ``reproduce``/``sweep`` to compare
against. Source: E. Li, *Use CNN to distinguish images with CPU and GPU performance analysis*,
Tables 2, 4 and 5 (see ``studies/paper/README.md``; the text is not in this repository). The
accuracies are **test** accuracies (the paper had no separate validation score), the
times are the paper's own CPU-only and GPU wall times for 20 epochs on its hardware, and
the lowest loss is the lowest epoch training loss with its 1-based epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class PaperModel:
    """One model of the paper with the numbers it reported."""

    name: str  # e.g. "cnn-100k", the name of its config in studies/paper/
    family: str  # "cnn" or "fcn"
    budget: int  # the weight budget it was designed for
    params: int  # exact trainable parameters the paper reported
    test_accuracy: float  # fraction, e.g. 0.907031
    cpu_seconds: float
    gpu_seconds: float
    lowest_loss: float
    lowest_loss_epoch: int


PAPER_MODELS: tuple[PaperModel, ...] = (
    PaperModel("cnn-10k", "cnn", 10_000, 9_192, 0.892871, 375.81, 171.49, 0.21, 19),
    PaperModel("cnn-20k", "cnn", 20_000, 19_279, 0.907031, 634.19, 172.56, 0.13, 18),
    PaperModel("cnn-50k", "cnn", 50_000, 49_450, 0.912207, 824.14, 172.62, 0.06, 20),
    PaperModel("cnn-100k", "cnn", 100_000, 97_395, 0.907031, 1431.10, 178.46, 0.03, 20),
    PaperModel("fcn-50k", "fcn", 50_000, 46_580, 0.874219, 145.98, 163.99, 0.16, 19),
    PaperModel("fcn-100k", "fcn", 100_000, 98_490, 0.885156, 152.93, 162.66, 0.11, 17),
    PaperModel("fcn-200k", "fcn", 200_000, 199_210, 0.887988, 156.82, 162.94, 0.08, 19),
)

PAPER_DATASET = "fashion-mnist"


def paper_models(family: str | None = None) -> tuple[PaperModel, ...]:
    """The paper's models, optionally only those ``family`` is compared with (:func:`compared_with`)."""
    return compared_with(PAPER_MODELS, family)


def compared_with(models: Iterable[PaperModel], family: str | None) -> tuple[PaperModel, ...]:
    """Those of ``models`` that ``family`` is compared with: its ``paper_family`` (cnn and mbconv: the
    paper's CNNs; fcn: its FCNs; a plug-in family: none unless it names one); all for None."""
    if family is not None:
        from budgetnas.families import get_family

        family = get_family(family).paper_family
    return tuple(m for m in models if family is None or m.family == family)


def paper_model(name: str) -> PaperModel:
    """The paper's model called ``name`` (KeyError naming the known ones otherwise)."""
    for model in PAPER_MODELS:
        if model.name == name:
            return model
    raise KeyError(f"no paper model {name!r}; known: {', '.join(m.name for m in PAPER_MODELS)}")
