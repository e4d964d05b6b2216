"""Sampler seeds per trial number, so independent processes on one study never propose the same candidates.

Two ``budgetnas search`` processes started on one study (the documented multi-machine way)
with the default ``--seed 0`` used to build identical seeded samplers and train the same
architectures in pairs: half the compute wasted, silently. Offsetting by the number of
trials already in the study does not help when both start at once.

:class:`PerTrialSeed` wraps a sampler and, just before each trial samples, reseeds the
sampler's random states (found by walking its attributes, nested samplers included) from
``(seed, trial number)``. Trial numbers are unique within a study (the storage hands them
out), so two processes never draw from the same random stream, while a single process is
still exactly reproducible: trial *n* of ``--seed S`` always starts from the same state,
given the same earlier trials. TPE's constant liar keeps model-based proposals of parallel
workers apart as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed for trial ``number`` of a search seeded with ``seed``."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{number}".encode(), digest_size=4).digest(), "big")


def reseed(sampler: Any, seed: int, _seen: set[int] | None = None) -> int:
    """Seed every random state of ``sampler`` (and of the samplers it holds); returns how many."""
    seen = _seen if _seen is not None else set()
    if id(sampler) in seen:
        return 0
    seen.add(id(sampler))
    count = 0
    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(seed)
            count += 1
        elif isinstance(value, np.random.RandomState):
            value.seed(seed)
            count += 1
        elif isinstance(value, BaseSampler):
            count += reseed(value, seed, seen)
    return count


class PerTrialSeed(BaseSampler):
    """``sampler`` reseeded from ``(seed, trial number)`` before each trial (see the module docstring)."""

    def __init__(self, sampler: BaseSampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def __str__(self) -> str:
        return f"{type(self.sampler).__name__} (seeded per trial from {self.seed})"

    def before_trial(self, study: Any, trial: Any) -> None:
        reseed(self.sampler, trial_seed(self.seed, trial.number))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
