"""Which trials count toward ``--trials``, and the stop rule built on that count.

``--trials`` is the study's total, finished trials of earlier runs included, so rerunning an
interrupted search finishes the same study. A finished trial counts when it is COMPLETE or
PRUNED (stopped early or rejected before training), or FAIL for a reason of its own. Two
kinds of FAIL do not count: a trial cut by Ctrl-C (user attribute ``interrupted``), and a
trial of a killed worker that was queued again (its retry counts instead; Optuna's heartbeat
lists the replaced numbers in the retry's system attribute ``retry_history``).

This module is the one place that rule lives: the search's start check and summary, the
per-trial progress line, and every worker's stop rule (:class:`StopAtTotal`) read it. It
imports neither torch nor the search, so the search and the workers both build on it.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, AbstractSet, Any, Callable

if TYPE_CHECKING:
    import optuna


def retried_numbers(trials: list[Any]) -> set[int]:
    """Numbers of trials that failed by a stale heartbeat and were queued again.

    Such a trial is not a result: its retry (system attribute ``retry_history``) replaces it,
    so it must not count towards ``--trials``.
    """
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get("retry_history", ()))
    return numbers


def counts(trial: Any, retried: AbstractSet[int] = frozenset()) -> bool:
    """Whether a finished ``trial`` counts toward ``--trials`` (see the module docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "interrupted" not in trial.user_attrs and trial.number not in retried


def counted_trials(study: "optuna.Study") -> list[Any]:
    """The study's trials that count toward ``--trials``, in trial order."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return [t for t in trials if counts(t, retried)]


def count_finished(study: "optuna.Study") -> int:
    """How many trials count toward ``--trials`` so far."""
    return len(counted_trials(study))


class StopAtTotal:
    """Optuna callback: stop a worker when the study holds ``total`` counted trials.

    ``counts(trial, retried)`` says whether a finished trial counts towards the total
    (default: :func:`counts`). With a heartbeat storage, a worker whose next trial would
    overshoot (finished + running >= total) waits, polling every ``poll`` seconds, until the
    running trials finish (stop) or one of them is failed as stale and queued again (go on and
    run the retry). Optuna's ``MaxTrialsCallback`` counts trials by state alone, so it would
    count interrupted and replaced trials and never wait for running ones; hence this class.
    """

    def __init__(self, total: int, counts: Callable[[Any, AbstractSet[int]], bool] = counts,
                 poll: float = 1.0) -> None:
        self.total = total
        self.counts = counts
        self.poll = poll

    def __call__(self, study: "optuna.Study", trial: Any) -> None:
        import optuna
        from optuna.storages._heartbeat import is_heartbeat_enabled
        from optuna.trial import TrialState

        while not study._stop_flag:  # set by Ctrl-C (search.py): stop waiting
            trials = study.get_trials(deepcopy=False)
            retried = retried_numbers(trials)
            finished = sum(1 for t in trials if t.state.is_finished() and self.counts(t, retried))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if finished >= self.total:
                study.stop()
                return
            if finished + running < self.total:
                return  # room for one more trial (or for a queued retry)
            if not is_heartbeat_enabled(study._storage):
                study.stop()  # cannot tell a dead worker from a slow one: leave the rest to the others
                return
            time.sleep(self.poll)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # fails dead workers' trials and queues their retries
