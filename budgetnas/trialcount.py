"""Which trials count toward ``--trials``, and the stop rule built on that count.

``--trials`` is the study's total, finished trials of earlier runs included, so rerunning an
interrupted search finishes the same study. A finished trial counts when it is COMPLETE or
PRUNED (stopped early or rejected before training), or FAIL for a reason of its own. Three
kinds of FAIL do not count: a trial cut by Ctrl-C (user attribute ``interrupted``), a trial
of a killed worker that was queued again (its retry counts instead; Optuna's heartbeat lists
the replaced numbers in the retry's system attribute ``retry_history``), and a trial that gave
way to another process's (``surplus``, :class:`GiveWay`).

This module is the one place that rule lives: the search's start check and summary, the
per-trial progress line, and every worker's stop rule (:class:`StopAtTotal`) read it. It
imports neither torch nor the search, so the search and the workers both build on it.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from typing import TYPE_CHECKING, AbstractSet, Any, Callable

if TYPE_CHECKING:
    import optuna

LOCK_ENV = "BUDGETNAS_TRIAL_LOCK"  # the file TrialGate locks; set by run_workers for its workers


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
    attrs = trial.user_attrs
    return trial.state == TrialState.FAIL and "interrupted" not in attrs and "surplus" not in attrs and \
        trial.number not in retried


def counted_trials(study: "optuna.Study") -> list[Any]:
    """The study's trials that count toward ``--trials``, in trial order."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return [t for t in trials if counts(t, retried)]


def count_finished(study: "optuna.Study") -> int:
    """How many trials count toward ``--trials`` so far."""
    return len(counted_trials(study))


class TrialGate:
    """An exclusive file lock shared by the workers of one ``--workers N`` (fcntl; none on Windows).

    A worker holds it from counting the study's trials (:meth:`StopAtTotal.room`) until the
    trial it decided to run is RUNNING in the storage (the objective's first line calls
    :meth:`release`), so the count of every other worker includes that trial.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: Any = None

    def acquire(self) -> None:
        if self.path is None or self._file is not None:
            return
        try:
            import fcntl
        except ImportError:  # Windows: no lock, the rare race of the module docstring remains
            return
        handle = open(self.path, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            handle, self._file = self._file, None
            handle.close()  # closing drops the flock


class StopAtTotal:
    """Optuna callback: stop a worker when the study holds ``total`` counted trials.

    ``counts(trial, retried)`` says whether a finished trial counts towards the total
    (default: :func:`counts`). With a heartbeat storage, a worker whose next trial would
    overshoot (finished + running >= total) waits, polling every ``poll`` seconds, until the
    running trials finish (stop) or one of them is failed as stale and queued again (go on and
    run the retry). ``lock`` is the path of the :class:`TrialGate` file (default:
    ``$BUDGETNAS_TRIAL_LOCK``, set by :func:`budgetnas.workers.run_workers`). Optuna's
    ``MaxTrialsCallback`` counts trials by state alone, so it would count interrupted and
    replaced trials and never wait for running ones; hence this class.
    """

    def __init__(self, total: int, counts: Callable[[Any, AbstractSet[int]], bool] = counts,
                 poll: float = 1.0, lock: str | None = None, say: Callable[[str], None] | None = None,
                 storage_url: str | None = None) -> None:
        self.total = total
        self.storage_url = storage_url  # named in the advice when a storage without heartbeats holds a dead trial
        self.counts = counts
        self.poll = poll
        self.gate = TrialGate(lock if lock is not None else os.environ.get(LOCK_ENV) or None)
        self.say = say  # told what the worker waits for, and for how long at most
        self._granted = 0  # trials this process was let start (before any, a RUNNING one is no sibling's)
        self._orphans: set[int] | None = None  # the trials RUNNING before this process started any
        self._told = -math.inf

    def __call__(self, study: "optuna.Study", trial: Any) -> None:
        if not self.room(study):
            study.stop()

    def room(self, study: "optuna.Study") -> bool:
        """Whether this worker may start one more trial. True leaves the gate locked: call
        :meth:`release` once that trial is RUNNING (or when none is started after all)."""
        import optuna
        from optuna.storages._heartbeat import is_heartbeat_enabled
        from optuna.trial import TrialState

        while not study._stop_flag:  # set by Ctrl-C (search.py): stop waiting
            self.gate.acquire()
            trials = study.get_trials(deepcopy=False)
            retried = retried_numbers(trials)
            finished = sum(1 for t in trials if t.state.is_finished() and self.counts(t, retried))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if self._orphans is None:
                self._orphans = {t.number for t in trials if t.state == TrialState.RUNNING}
            if finished >= self.total:
                break
            if finished + running < self.total:
                self._granted += 1
                return True  # room for one more trial (or for a queued retry)
            if not is_heartbeat_enabled(study._storage):
                # Cannot tell a dead worker from a slow one: leave the rest to the others, and say how
                # to release a trial whose worker was killed (else the study would wait for it forever).
                # At the end of a normal run the others' trials are just running; the ones that were RUNNING
                # before this process started any (a killed worker's) are the ones to explain.
                stuck = [t.number for t in trials if t.state == TrialState.RUNNING
                         and (not self._granted or t.number in self._orphans)]
                if stuck:
                    self._explain_no_heartbeat(study, stuck)
                break
            self.gate.release()
            self._explain_wait(study, [t.number for t in trials if t.state == TrialState.RUNNING])
            time.sleep(self.poll)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # fails dead workers' trials and queues their retries
        self.gate.release()
        return False

    def release(self) -> None:
        self.gate.release()

    def _explain_no_heartbeat(self, study: "optuna.Study", running: list[int]) -> None:
        if self.say is None:
            return
        from budgetnas.storage import fail_running_command

        fix = (fail_running_command(self.storage_url, study.study_name) if self.storage_url
               else "budgetnas storage fail-running")
        self.say(f"trial(s) {', '.join(map(str, running))} still RUNNING: this storage keeps no heartbeat, so a "
                 f"killed worker's trial looks alive. If no other process runs them, mark them failed (the next "
                 f"search retries them): {fix}")

    def _explain_wait(self, study: "optuna.Study", running: list[int]) -> None:
        """Say (at most every 30 s) which trials this worker waits for and the longest the wait can last."""
        now = time.monotonic()
        if self.say is None or now - self._told < 30:
            return
        self._told = now
        backend = getattr(study._storage, "_backend", study._storage)
        grace, interval = getattr(backend, "grace_period", None), getattr(backend, "heartbeat_interval", None)
        limit = (f"; if their worker was killed, they are failed and retried once their heartbeat is {grace}s old, "
                 f"so at most about {grace + (interval or 0)}s from the kill") if grace else ""
        self.say(f"waiting for running trial(s) {', '.join(map(str, running))} to finish before starting another "
                 f"(--trials {self.total} counts them){limit}")


class GiveWay:
    """Wraps an objective so that a trial that would overshoot ``--trials`` is not run.

    :class:`StopAtTotal` decides before a trial is created, and its :class:`TrialGate` orders
    the workers of one command; independent processes (several machines on one study) can
    still both start one. Trial numbers are handed out atomically by the storage, so the newly
    created trial checks again: if the counted finished trials plus the trials running with a
    *lower* number already reach the total, it gives way (FAIL with the user attribute
    ``surplus``, which does not count), and exactly one of two racing processes trains.
    """

    def __init__(self, objective: Callable[[Any], Any], total: int,
                 counts: Callable[[Any, AbstractSet[int]], bool] = counts) -> None:
        self.objective = objective
        self.total = total
        self.counts = counts

    def __call__(self, trial: Any) -> Any:
        from optuna.trial import TrialState

        from budgetnas.errors import RunFailure

        trials = trial.study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        finished = sum(1 for t in trials if t.state.is_finished() and self.counts(t, retried))
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number < trial.number)
        if finished + ahead >= self.total:
            trial.set_user_attr("surplus", f"{finished} finished + {ahead} running reach --trials {self.total}")
            raise RunFailure(f"trial {trial.number} gives way: the study's other trials reach --trials {self.total}")
        return self.objective(trial)
