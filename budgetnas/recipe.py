"""How a spec is trained (:class:`Recipe`) and what one epoch reports (:class:`EpochStats`).

Plain dataclasses, torch-free, so that reading a study's records, a run config or the search
space does not import torch; :mod:`budgetnas.trainer` runs them (and re-exports both names).
Every recipe is validated here, once, when it is made: the trainer, the CLI and the config
reader rely on that instead of checking again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from budgetnas.errors import FieldError, UsageError
from budgetnas.limits import MAX_EPOCHS, MAX_SEED, MAX_SPEC_INT

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTS = ("none", "flip", "shift", "flip-shift")


@dataclass(frozen=True)
class Recipe:
    """How a spec is trained. The defaults are the paper's recipe (Adam 1e-3, batch 512, 20 epochs) except
    ``normalize``: True here (standardised inputs), while the paper scaled to 0..1, so the paper's recipe
    exactly is :data:`PAPER_RECIPE` (``normalize=False``)."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    label_smoothing: float = 0.0
    augment: str = "none"
    normalize: bool = True  # standardise with train-split mean/std; False = ToTensor's 0..1 scaling
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum, maximum in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_SPEC_INT),
                                       ("seed", 0, MAX_SEED)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise UsageError(f"recipe {name} must be an integer >= {minimum}, got {value!r}")
            if value > maximum:  # bounded before anything is allocated or seeded (budgetnas.limits)
                raise UsageError(f"recipe {name} must be <= {maximum:,}, got {value:,}")
        for name, low, high in (("lr", 0.0, 10.0), ("weight_decay", 0.0, 1.0), ("label_smoothing", 0.0, 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise UsageError(f"recipe {name} must be a number in [{low}, {high}], got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.lr == 0:
            raise UsageError("recipe lr must be positive")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTS)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"unknown recipe {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if not isinstance(self.normalize, bool):
            raise UsageError(f"recipe normalize must be true or false, got {self.normalize!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One-line summary such as ``adamw lr 0.003 onecycle wd 0.0005 ls 0.1 flip batch 128``."""
        parts = [self.optimizer, f"lr {self.lr:.2g}", self.schedule]
        if self.weight_decay:
            parts.append(f"wd {self.weight_decay:.2g}")
        if self.label_smoothing:
            parts.append(f"ls {self.label_smoothing:.2g}")
        if self.augment != "none":
            parts.append(self.augment)
        parts.append(f"batch {self.batch_size}")
        return " ".join(parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UsageError(f"unknown key(s) {', '.join(unknown)} in recipe; allowed: {', '.join(sorted(allowed))}")
        return cls(**data)

    def with_changes(self, **changes: Any) -> "Recipe":
        """This recipe with ``changes`` applied (a value of None keeps this recipe's), checked as it is made.

        For overrides from a command line (``replay --epochs``, ``train --seed``): a bad value is a
        :class:`~budgetnas.errors.FieldError` naming its field, which the CLI spells as its flag.
        """
        try:
            return replace(self, **{name: value for name, value in changes.items() if value is not None})
        except UsageError as exc:
            raise as_field_error(exc) from None


def as_field_error(exc: UsageError) -> UsageError:
    """A check of :meth:`Recipe.__post_init__` (``recipe epochs must be ...``) as a :class:`FieldError`
    naming the field (``epochs must be ...``, spelled ``--epochs`` by the CLI); any other error unchanged."""
    text = str(exc)
    for name in (f.name for f in fields(Recipe)):
        if text.startswith(f"recipe {name} "):
            return FieldError(text.removeprefix("recipe "), name)
    return exc


PAPER_RECIPE = Recipe(normalize=False)


@dataclass
class EpochStats:
    epoch: int  # 1-based, as the paper counts
    train_loss: float
    val_accuracy: float
    seconds: float  # wall time of this epoch: its training steps and its validation pass
