"""How numbers read in human output, one format per kind (JSON keeps the exact values).

Accuracies are percent with two decimals (the paper's tables use percent; more decimals
than a 10,000-image test split resolves would be noise), mult-adds and large counts use
:func:`budgetnas.counting.human_count` (``2.37G``), parameter counts are exact with thousands
separators (the budget is exact), and counted nouns agree with their number.
"""

from __future__ import annotations

from typing import Any


def percent(accuracy: float | None) -> str:
    """0.91274 -> ``91.27%``; None -> ``-``."""
    return "-" if accuracy is None else f"{100 * accuracy:.2f}%"


def plural(n: int, noun: str) -> str:
    """``plural(1, "epoch")`` -> ``1 epoch``, ``plural(3, "epoch")`` -> ``3 epochs``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def epoch_line(stats: Any, epochs: int) -> str:
    """One epoch's progress (an :class:`~budgetnas.recipe.EpochStats`), as every command that trains
    shows it: ``epoch 3/20  loss 0.4312  val acc 88.15%  (41.2s)``; callers put their own prefix
    (which run) in front."""
    return (f"epoch {stats.epoch}/{epochs}  loss {stats.train_loss:.4f}  val acc {percent(stats.val_accuracy)}  "
            f"({stats.seconds:.1f}s)")


def chance_hint(accuracy: float, num_classes: int, epochs: int) -> str | None:
    """A hint when a run ended no better than guessing (within 1.5x chance), else None.

    A short run (one epoch of the paper's recipe, unnormalised inputs) often sits at chance
    before the loss starts to fall; a longer one there points at the recipe instead.
    """
    if accuracy > 1.5 / num_classes:
        return None
    if epochs <= 2:
        return (f"accuracy {percent(accuracy)} is chance level for {num_classes} classes: {plural(epochs, 'epoch')} "
                "is often too short for the loss to start falling; try --epochs 5 or more")
    return (f"accuracy {percent(accuracy)} is chance level for {num_classes} classes after "
            f"{plural(epochs, 'epoch')}: check the training loss and try a lower learning rate")
