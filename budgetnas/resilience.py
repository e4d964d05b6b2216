"""Surviving a database outage and dead workers: bounded retries, quiet heartbeats, clean retried trials.

A PostgreSQL server that restarts (or a network that drops for a moment) used to end a
search with four tracebacks (the heartbeat thread's and the main thread's), then Optuna's
own ``UnboundLocalError``, and the trial left RUNNING. Now:

* every call of an RDB storage retries *transient* errors (SQLAlchemy's ``OperationalError``,
  ``InterfaceError``, ``DisconnectionError`` or ``PendingRollbackError`` anywhere in the
  exception chain: a refused or dropped connection, a session whose rollback failed while the
  server was away, SQLite's "database is locked"), on a fresh session, with exponential backoff (0.5 s,
  1 s, 2 s, ... at most 10 s apart) for up to ``BUDGETNAS_STORAGE_RETRY`` seconds (default
  60). The engine's ``pool_pre_ping`` replaces the dead connections once the server is back,
  so a restart within that window costs the search nothing;
* after that the storage gives up once, for good (every later call fails at once, so a
  search does not wait again for each of its pending writes) with
  :class:`StorageUnavailable`: one line, exit 1, and the study resumes with the same
  command once the server is back (the trial that was running is failed as stale by its
  heartbeat and retried);
* a database that refuses writes for good (a read-only SQLite file or folder, a full disk:
  :data:`_REFUSALS`, also ``OperationalError``) is not retried: waiting cannot help, so it is a
  :class:`StorageError` at once (one line, exit 2) that says what to fix;
* the heartbeat thread never raises: a missed heartbeat is harmless while the main thread
  retries (it is late, not lost), and a thread's exception would print a traceback;
* a retried call whose first attempt reached the server but whose answer was lost is
  repeated: a state change then finds its own earlier write and succeeds, but a trial
  creation can, rarely, leave a duplicate trial.

:class:`RetryStaleTrial` is Optuna's ``RetryHeartbeatStaleTrialCallback`` without the
copied constraint values: the retry computes its own, and Optuna warns ("The constraint
value is ignored ...") when a trial sets a constraint that is already there.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from typing import AbstractSet, Any, Callable

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from budgetnas.errors import StorageError, StorageUnavailable

RETRY_ENV = "BUDGETNAS_STORAGE_RETRY"
DEFAULT_RETRY_SECONDS = 60
_NOT_RETRIED = {"remove_session", "upgrade", "get_current_version", "get_head_version", "get_all_versions",
                "get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback",
                "check_table_schema_compatibility", "record_heartbeat"}


def retry_seconds() -> float:
    """How long a storage call retries a transient error (``$BUDGETNAS_STORAGE_RETRY``, default 60 s)."""
    text = os.environ.get(RETRY_ENV)
    if not text:
        return DEFAULT_RETRY_SECONDS
    if not text.isascii() or not text.isdigit():
        raise StorageError(f"{RETRY_ENV}={text!r} must be a whole number of seconds (0: no retry)")
    return int(text)


# Messages (lower case) of errors that SQLAlchemy raises as OperationalError but that no wait cures:
# SQLite's read-only file or folder and full disk, PostgreSQL's full disk (DiskFull).
_REFUSALS = ("readonly database", "read-only", "disk is full", "no space left on device")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def refusal(exc: BaseException) -> str | None:
    """The reason, when ``exc`` (or anything in its chain) is a database refusing writes for good."""
    for current in _chain(exc):
        text = " ".join(str(current).split()).lower()
        if any(marker in text for marker in _REFUSALS):
            return _reason(exc)
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything in its chain) is a lost or refused database connection."""
    from sqlalchemy import exc as sa

    if refusal(exc) is not None:
        return False
    return any(isinstance(current, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError,
                                    sa.PendingRollbackError)) or getattr(current, "connection_invalidated", False)
               for current in _chain(exc))


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = " ".join(str(getattr(inner, "orig", None) or inner).split())
    return (text.split(" failed: ", 1)[-1] or type(inner).__name__)[:160]


class RetryingRDBStorage(RDBStorage):
    """``RDBStorage`` whose calls retry transient errors, then give up for good (module docstring).

    ``where`` names the database in messages (``host:port/db``, never the password).
    """

    def __init__(self, url: str, *, where: str, seconds: float | None = None, **kwargs: Any) -> None:
        self._where = where
        self._retry_for = retry_seconds() if seconds is None else seconds
        self._depth = threading.local()  # a retried call that calls another one retries only once, outside
        self.unavailable: StorageUnavailable | None = None
        super().__init__(url, **kwargs)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.unavailable is not None:
            raise self.unavailable
        depth = getattr(self._depth, "value", 0)
        if depth:
            return method(self, *args, **kwargs)
        self._depth.value = 1
        try:
            start, delay = time.monotonic(), 0.5
            while True:
                try:
                    return method(self, *args, **kwargs)
                except Exception as exc:
                    refused = refusal(exc)
                    if refused is not None:
                        raise StorageError(f"the database at {self._where} refuses writes ({refused}); make the "
                                           "file and its folder writable or free disk space, then rerun the same "
                                           "command (what was saved before is kept)") from None
                    if not is_transient(exc):
                        raise
                    waited = time.monotonic() - start
                    if waited + delay > self._retry_for:
                        self.unavailable = StorageUnavailable(
                            f"lost the database at {self._where} ({_reason(exc)}) and it did not come back within "
                            f"{self._retry_for:.0f}s ({RETRY_ENV}); the study is saved: rerun the same command "
                            "when the server is up (a trial that was running is failed and retried)")
                        raise self.unavailable from None
                    self._forget_session()
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            self._depth.value = 0

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        """Retried like every call; a retry that finds the trial already in ``state`` reports success.

        A commit whose answer was lost in the outage did change the state; without this the
        retry's "already finished" would make Optuna skip the stale trial's retry.
        """
        from optuna.exceptions import UpdateFinishedTrialError

        attempts = 0

        def once(storage: RetryingRDBStorage, *args: Any) -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return RDBStorage.set_trial_state_values(storage, *args)
            except UpdateFinishedTrialError:
                if attempts > 1 and RDBStorage.get_trial(storage, trial_id).state == state:
                    return True
                raise

        return self._call(once, trial_id, state, values)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, plus RUNNING trials that never recorded a heartbeat.

        Optuna skips a trial without any heartbeat, but a worker killed between creating a trial
        and its first heartbeat (while the sampler proposes it) leaves exactly that: a trial
        RUNNING for ever, which every other worker then waits for. Such a trial is stale once it
        started longer ago than the grace period plus one interval.
        """
        from datetime import datetime, timedelta

        from optuna.storages._rdb import models
        from optuna.trial import TrialState
        from sqlalchemy import orm

        def silent(storage: RetryingRDBStorage, study_id: int) -> list[int]:
            grace = (storage.grace_period or 2 * storage.heartbeat_interval) + storage.heartbeat_interval
            cutoff = datetime.now() - timedelta(seconds=grace)
            session = storage.scoped_session()
            try:
                running = (session.query(models.TrialModel).options(orm.selectinload(models.TrialModel.heartbeats))
                           .filter(models.TrialModel.state == TrialState.RUNNING,
                                   models.TrialModel.study_id == study_id).all())
                return [t.trial_id for t in running
                        if not t.heartbeats and t.datetime_start is not None and t.datetime_start < cutoff]
            finally:
                session.rollback()
                session.close()

        return self._call(RDBStorage._get_stale_trial_ids, study_id) + self._call(silent, study_id)

    def _forget_session(self) -> None:
        """Drop this thread's session: one whose rollback failed with the server gone cannot be reused."""
        try:
            self.scoped_session.remove()
        except Exception:
            pass

    def record_heartbeat(self, trial_id: int) -> None:
        """Never raises (it runs in Optuna's heartbeat thread); a missed heartbeat is only late."""
        if self.unavailable is not None:
            return
        try:
            RDBStorage.record_heartbeat(self, trial_id)
        except Exception:
            self._forget_session()


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(method, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


# Optuna's _CachedStorage (every Study wraps an RDBStorage in one) calls these private methods of its backend,
# not the public ones: creating a trial (ask), setting a sampled parameter, reading trials and the best trial.
_CACHED_BACKEND_CALLS = ("_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
                         "_get_stale_trial_ids")
for _name in [n for n in dir(RDBStorage) if not n.startswith("_") or n in _CACHED_BACKEND_CALLS]:
    if _name not in _NOT_RETRIED | {"set_trial_state_values", "_get_stale_trial_ids"} and callable(getattr(RDBStorage, _name)) and not isinstance(
            RDBStorage.__dict__.get(_name), (staticmethod, classmethod)):
        setattr(RetryingRDBStorage, _name, _retried(_name))


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's stale-trial retry, minus the copied constraint values (see the module docstring)."""

    def __call__(self, study: Any, trial: Any) -> None:
        trial = copy.copy(trial)
        trial._system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("constraints")}
        super().__call__(study, trial)


DELIBERATE_FAILURES = frozenset({"failed", "surplus", "interrupted"})  # user attributes of a FAIL meant as such


def retry_orphaned_failures(study: Any, unsettled: AbstractSet[int] = frozenset()) -> list[int]:
    """Queue the retry of every FAIL trial that nobody failed on purpose and nobody queued again.

    Optuna fails a stale trial and queues its retry in two separate calls (``fail_stale_trials``),
    so a worker killed, or cut from the database, between the two leaves a failed trial that is
    never retried (the soak test found one in about half its runs). Each search run calls this
    when it starts and after a lost connection. A FAIL counts as orphaned only once it ended two
    heartbeat intervals ago: the normal path queues its retry within milliseconds, and waiting
    keeps two workers from queuing one trial twice; the trial ids in ``unsettled`` (this worker's
    own, interrupted by a lost connection) need no wait. No heartbeat (journal storage), no retries.
    Returns the numbers of the trials whose retry was queued.
    """
    from datetime import datetime, timedelta

    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    # Optuna 4.9 renamed get_failed_trial_callback (now deprecated, with a FutureWarning)
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None) or storage.get_failed_trial_callback
    retry = getter()
    if retry is None:
        return []
    cutoff = datetime.now() - timedelta(seconds=2 * storage.get_heartbeat_interval())
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    queued = []
    for trial in trials:
        own = trial._trial_id in unsettled
        if (trial.state == TrialState.FAIL and trial.number not in retried and (trial.params or own)
                and not DELIBERATE_FAILURES & set(trial.user_attrs)
                and trial.datetime_complete is not None
                and (trial.datetime_complete < cutoff or own)):
            retry(study, copy.deepcopy(trial))
            queued.append(trial.number)
    return queued

