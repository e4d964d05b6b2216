"""Creating, resuming and checking budgetnas studies in an Optuna storage.

A study stores its :class:`~budgetnas.records.StudySettings` as the study user attribute
:data:`~budgetnas.records.SETTINGS_ATTR`. Resuming a study with different settings (another
budget, dataset, objectives, search-space version, ...) would mix incomparable trials, so it
is refused with a :class:`~budgetnas.errors.StorageError` naming each differing setting.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from budgetnas import records
from budgetnas.budget import format_budget
from budgetnas.choices import SAMPLERS
from budgetnas.errors import StorageError, UsageError
from budgetnas.objectives import OBJECTIVES
from budgetnas.seeding import PerTrialSeed

NSGA2_POPULATION = 16  # Optuna's default of 50 would leave a 20..50-trial search purely random


def default_study_name(family: str, budget: int, dataset: str) -> str:
    """``cnn-100k-fashion-mnist``; an npz dataset contributes its file stem."""
    if dataset.startswith("npz:"):
        dataset = dataset[4:].replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or "npz"
    return f"{family}-{format_budget(budget).lower()}-{dataset}"


def parse_objectives(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"accuracy,runtime"`` -> ``("accuracy", "runtime")``, checked."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown:
        raise UsageError(f"unknown objective(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(OBJECTIVES)}, comma-separated")
    if len(set(names)) != len(names):
        raise UsageError(f"objective listed twice in {','.join(names)}")
    if len(names) == 1 and names[0] != "accuracy":
        raise UsageError(f"a single objective must be accuracy (a search for the smallest or fastest net only "
                         f"would return a trivial one); add accuracy, e.g. accuracy,{names[0]}")
    return tuple(names)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, reads ``set_constraint`` values), ``nsga2`` or ``random``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # multivariate+group models the joint effect of widths and depth; constant_liar keeps
            # parallel workers from sampling the same point.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def create_or_load(storage: Any, name: str, settings: records.StudySettings, sampler: str = "tpe",
                   seed: int | None = 0, *, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create study ``name`` with ``settings``, or load it and check that its settings match.

    The sampler is reseeded from ``(seed, trial number)`` before each trial
    (:mod:`budgetnas.seeding`), so a resumed search does not replay the first proposals of the
    interrupted one and independent processes on one study do not duplicate each other.
    """
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    directions = [OBJECTIVES[o].direction for o in settings.objectives]
    try:
        try:  # load first: a journal storage appends a record for every create attempt, even a refused one
            study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        except KeyError:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                        load_if_exists=True, pruner=pruner)
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot open study {name!r}: {' '.join(str(exc).split())[:200]}") from None
    stored = study.user_attrs.get(records.SETTINGS_ATTR)
    if stored is None:
        if study.trials:
            raise StorageError(f"study {name!r} exists but was not made by budgetnas; choose another --study name")
        study.set_user_attr(records.SETTINGS_ATTR, settings.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVES[o].metric for o in settings.objectives])
    else:
        differences = records.StudySettings.from_dict(stored).differences(settings)
        if differences:
            raise StorageError(f"study {name!r} was created with other settings ({'; '.join(differences)}); "
                               "rerun with the study's settings to resume it, or choose a new --study name")
        if stored != settings.to_dict():  # only caps differ: the study now records the ones in force
            study.set_user_attr(records.SETTINGS_ATTR, settings.to_dict())
    # Reseeded per trial number (budgetnas.seeding): independent processes on one study never draw the
    # same candidates, and a resumed search does not replay the first proposals of the interrupted one.
    study.sampler = make_sampler(sampler, seed) if seed is None else PerTrialSeed(make_sampler(sampler, seed), seed)
    return study
