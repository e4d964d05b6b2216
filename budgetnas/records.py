"""What a study stores, and how to read it back.

This module is the contract between the search (which writes) and replay, report,
sweep and the dashboard (which read). Everything lives in Optuna's own storage as
study and trial user attributes, so a study is self-describing: replay needs nothing
but the storage URL and the study name.

Study user attribute ``budgetnas`` holds :class:`StudySettings` as a dict.
Trial user attributes (all JSON-serialisable):

========================  ==========================================================
``spec``                  the architecture, ``Spec.to_dict()``
``recipe``                the training recipe, ``Recipe.to_dict()``
``params``                exact trainable parameters (int)
``mult_adds``             torchinfo mult-adds at ``mult_adds_batch`` (int)
``mult_adds_batch``       the batch size the mult-adds are quoted at (512, the paper's)
``val_accuracy_curve``    validation accuracy after each epoch (list of float)
``train_loss_curve``      mean train loss of each epoch (list of float)
``epoch_seconds``         wall seconds of each epoch (list of float)
``train_seconds``         wall seconds of the whole training run (float)
``device`` / ``precision``  where it ran and in which precision
``versions``              library versions (dict)
``rejected``              why a candidate was rejected before training (str)
``stopped_early``         why training stopped before the last epoch (str)
``failed``                why training failed (diverged loss, out of memory) (str)
``interrupted``           Ctrl-C stopped this trial (str); it does not count towards ``--trials``
``enqueued``              the ``--enqueue`` config or ``transfer:...`` source this trial started from (str)
``proxy_score``           the candidate's ``--proxy`` score at initialisation (float, :mod:`budgetnas.proxies`)
========================  ==========================================================

Replays: Optuna refuses to change a finished trial (``UpdateFinishedTrialError``), so
``budgetnas replay`` records the latest replay of trial N as the *study* user attribute
``replay:N`` (a dict of metrics, see :func:`replay_key` and :func:`replays_of`); the
dashboard lists it with the study's attributes.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from budgetnas.errors import StorageError
from budgetnas.recipe import Recipe
from budgetnas.spec import Spec, spec_from_dict, spec_to_dict

if TYPE_CHECKING:
    from budgetnas.trainer import TrainResult

SETTINGS_ATTR = "budgetnas"
CAP_SETTINGS = ("max_mult_adds", "max_memory")  # may change between runs of one study
REPLAY_PREFIX = "replay:"


@dataclass(frozen=True)
class StudySettings:
    """The settings a study was created with. Resuming with different ones is refused."""

    family: str
    budget: int
    dataset: str
    epochs: int
    objectives: tuple[str, ...]
    sampler: str
    parameterisation: str
    space_version: int
    subset: int | None = None
    split_seed: int = 0
    max_mult_adds: int | str | None = None  # a cap (see CAP_SETTINGS); "auto" = cost.py's default bound
    recipe_space: str = "paper"  # "search": the training recipe is sampled per trial (space.sample_recipe)
    max_memory: int | str | None = None  # a cap, like max_mult_adds
    validation: str = "slice"  # data.load_dataset: 10% of subset, or "full": the whole validation split

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objectives"] = list(self.objectives)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudySettings":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["objectives"] = tuple(values.get("objectives", ()))
        return cls(**values)

    def differences(self, other: "StudySettings") -> list[str]:
        """Human-readable ``name: stored -> requested`` for each setting that differs, caps excepted.

        A cap (:data:`CAP_SETTINGS`) only rejects candidates before training; it does not change
        what a finished trial means, so a study may be resumed with a cap added, changed or removed.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: study has {mine[k]!r}, asked for {theirs[k]!r}" for k in mine
                if mine[k] != theirs[k] and k not in CAP_SETTINGS]


def library_versions() -> dict[str, str]:
    import optuna
    import torch
    import torchvision

    from budgetnas import __version__

    return {"budgetnas": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "optuna": optuna.__version__, "python": platform.python_version()}


def training_attrs(spec: Spec, recipe: Recipe, result: "TrainResult", mult_adds: int) -> dict[str, Any]:
    """The user attributes of a trained trial (see the table above)."""
    attrs: dict[str, Any] = {
        "spec": spec_to_dict(spec),
        "recipe": recipe.to_dict(),
        "params": result.params,
        "mult_adds": mult_adds,
        "val_accuracy_curve": [e.val_accuracy for e in result.epochs],
        "train_loss_curve": [e.train_loss for e in result.epochs],
        "epoch_seconds": [e.seconds for e in result.epochs],
        "train_seconds": result.train_seconds,
        "device": result.device,
        "precision": result.precision,
        "versions": library_versions(),
    }
    if result.stopped_early:
        attrs["stopped_early"] = result.stopped_early
    return attrs


def spec_of(trial: Any) -> Spec:
    """The spec stored on a FrozenTrial (raises StorageError if the trial has none)."""
    data = trial.user_attrs.get("spec")
    if data is None:
        raise StorageError(f"trial {trial.number} has no stored spec (it was rejected or never trained)")
    return spec_from_dict(data)


def recipe_of(trial: Any) -> Recipe:
    data = trial.user_attrs.get("recipe")
    if data is None:
        raise StorageError(f"trial {trial.number} has no stored recipe")
    return Recipe.from_dict(data)


def settings_of(study: Any) -> StudySettings:
    data = study.user_attrs.get(SETTINGS_ATTR)
    if data is None:
        raise StorageError(f"study {study.study_name!r} was not made by budgetnas (it has no settings)")
    return StudySettings.from_dict(data)


def replay_key(number: int) -> str:
    """The study user attribute that holds the latest replay of trial ``number``."""
    return f"{REPLAY_PREFIX}{number}"


def replays_of(study: Any) -> dict[int, dict[str, Any]]:
    """Trial number -> metrics of its latest replay, for every replayed trial of ``study``."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in study.user_attrs.items():
        suffix = key[len(REPLAY_PREFIX):]
        if key.startswith(REPLAY_PREFIX) and suffix.isdigit() and isinstance(value, dict):
            found[int(suffix)] = value
    return found
