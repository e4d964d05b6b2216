"""Several search processes on one study: ``budgetnas search --workers N``, and the total budget.

    from budgetnas.search import SearchConfig
    from budgetnas.workers import run_workers
    summary = run_workers(SearchConfig(budget=5_000, trials=12, storage="journal:runs/s.log"), workers=2)

Each worker is a separate Python process (``python -m budgetnas.workers``, so nothing of
the caller's state is shared and no ``__main__`` guard is needed) running
:func:`budgetnas.search.run_search` with the same config on the same storage, with
``cores // N`` torch threads, so N workers do not fight over the cores. Each worker's sampler
seed is offset by its index (the training seed is not), so workers propose different
architectures. The study is created (and its settings checked) once, in the parent, before
the workers start. Workers run in their own session: Ctrl-C reaches the parent, which passes
it on once per press, so a first Ctrl-C stops them cleanly and the study stays resumable.
Machines cooperate the same way: start ``budgetnas search`` with the same options and a
``postgresql://`` storage on each (``examples/multi-machine.md``).

Storage. SQLite has no row locks, so concurrent writers get "database is locked" (Optuna's
FAQ): several workers on SQLite are refused; use ``journal:PATH`` (one machine) or
PostgreSQL (many). The storage is never switched behind the user's back.

The budget. ``--trials`` is the study's total, not per worker. :class:`StopAtTotal` (the
stop rule of every worker) ends a worker when the study has enough finished trials, and
also does not start a new trial when the finished ones plus those other workers are
running already reach the total: it waits for them instead. If one of those dies (its
heartbeat goes stale, see :mod:`budgetnas.storage`), Optuna fails it and queues a retry,
and the waiting worker runs the retry, so the study still completes. Two workers that finish
at the same moment may both start a trial; :class:`GiveWay` then lets the higher-numbered one
give way (a ``surplus`` FAIL that does not count), so a study ends with exactly the total. Without a heartbeat
(journal storage) a worker cannot tell a dead peer from a slow one, so it stops instead of
waiting; a killed worker's trial then stays RUNNING and the study ends one short, until
:func:`budgetnas.storage.fail_running_trials` fails it and the search is run again.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from budgetnas.errors import RunFailure, UsageError
from budgetnas.storage import command_storage, storage_kind

if TYPE_CHECKING:
    import optuna

    from budgetnas.search import SearchConfig, SearchSummary

Progress = Callable[[str], None]
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


def check_workers(workers: int, storage_url: str | None) -> None:
    """Refuse worker counts below one, and several workers on SQLite (see the module docstring)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a whole number of at least 1, got {workers!r}")
    if workers > 1 and storage_kind(storage_url) == "sqlite":
        raise UsageError(f"--workers {workers} cannot share an SQLite file (concurrent writers get 'database is "
                         "locked'); use --storage journal:budgetnas.log on one machine, or a postgresql:// URL")


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Each worker's share of the CPU cores this process may use (at least one)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


class StopAtTotal:
    """Optuna callback: stop a worker when the study holds ``total`` counted trials.

    ``counts(trial, retried)`` says whether a finished trial counts towards the total
    (``retried`` holds the numbers of trials that a heartbeat retry replaced). With a
    heartbeat storage, a worker whose next trial would overshoot (finished + running >= total)
    waits, polling every ``poll`` seconds, until the running trials finish (stop) or one of them
    is failed as stale and queued again (go on and run the retry).
    """

    def __init__(self, total: int, counts: Callable[[Any, set[int]], bool], poll: float = 1.0,
                 say: Progress | None = None) -> None:
        self.total = total
        self.counts = counts
        self.poll = poll
        self.say = say  # told what the worker waits for, and for how long at most
        self._told = -math.inf

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
            self._explain_wait(study, [t.number for t in trials if t.state == TrialState.RUNNING])
            time.sleep(self.poll)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # fails dead workers' trials and queues their retries


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

    :class:`StopAtTotal` decides before a trial is created, so two workers finishing at the same
    moment could both start one. Trial numbers are handed out atomically by the storage, so the
    newly created trial checks again: if the counted finished trials plus the trials running
    with a *lower* number already reach the total, it gives way (FAIL with the user attribute
    ``surplus``, which does not count), and exactly one of two racing workers trains.
    """

    def __init__(self, objective: Callable[[Any], Any], total: int, counts: Callable[[Any, set[int]], bool]) -> None:
        self.objective = objective
        self.total = total
        self.counts = counts

    def __call__(self, trial: Any) -> Any:
        from optuna.trial import TrialState

        trials = trial.study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        finished = sum(1 for t in trials if t.state.is_finished() and self.counts(t, retried))
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number < trial.number)
        if finished + ahead >= self.total:
            trial.set_user_attr("surplus", f"{finished} finished + {ahead} running reach --trials {self.total}")
            raise RunFailure(f"trial {trial.number} gives way: the study's other trials reach --trials {self.total}")
        return self.objective(trial)


def retried_numbers(trials: list[Any]) -> set[int]:
    """Numbers of trials that failed by a stale heartbeat and were queued again.

    Such a trial is not a result: its retry (system attribute ``retry_history``) replaces it,
    so it must not count towards ``--trials``.
    """
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(trial.system_attrs.get("retry_history", ()))
    return numbers


def run_workers(config: "SearchConfig", workers: int, progress: Progress | None = None) -> "SearchSummary":
    """Run the search of ``config`` in ``workers`` processes on its storage; summarise the study.

    Raises UsageError before starting anything for a bad config or storage (checked once,
    here); SearchInterrupted after Ctrl-C (every worker saves its state first); RunFailure if
    every worker failed. A worker killed by a signal is reported through ``progress``.
    """
    import optuna

    from budgetnas import search
    from budgetnas.data import dataset_info
    from budgetnas.device import resolve_placement
    from budgetnas.storage import open_storage
    from budgetnas.study import create_or_load

    check_workers(workers, config.storage)
    if workers == 1:
        return search.run_search(config, progress)
    say = progress or (lambda message: None)
    search.check_config(config)
    resolve_placement(config.device, config.precision)  # a missing GPU fails before any study is made
    input_shape, num_classes = dataset_info(config.dataset, config.data_root)
    search.check_budget(config, input_shape, num_classes)
    # Create the study here, once: N processes creating it at the same moment would race.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line among our progress
    try:
        study = create_or_load(open_storage(config.storage_url), config.study_name, config.settings(),
                               config.sampler, config.seed)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if config.trials is not None and search.count_finished(study) >= config.trials:
        return search.run_search(config, progress)  # says that the study is already complete

    threads = threads_per_worker(workers)
    say(f"{workers} workers, {threads} CPU thread(s) each, on {storage_kind(config.storage_url)} storage")
    start = time.perf_counter()
    processes = [_spawn(config, index, threads, verbose=progress is not None) for index in range(workers)]
    interrupted = False
    with _signals_as_ctrl_c():
        while any(p.poll() is None for p in processes):
            try:
                for process in processes:
                    process.wait()
            except KeyboardInterrupt:
                # Workers run in their own session, so Ctrl-C reaches only this process; pass each one
                # SIGINT once per Ctrl-C: the first lets them stop cleanly, a second interrupts at once.
                interrupted = True
                for process in processes:
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
    codes = [p.returncode for p in processes]
    messages = [m for m in (_last_line(p) for p in processes) if m]
    heartbeat = storage_kind(config.storage_url) != "journal"
    for index, code in enumerate(codes):
        if code < 0 and heartbeat:
            say(f"worker {index} was killed by signal {-code}; the trial it was running is failed and retried by "
                "the other workers once its heartbeat is stale")
        elif code < 0:
            say(f"worker {index} was killed by signal {-code}; journal storage has no heartbeat, so its trial stays "
                "RUNNING. When no worker of this study runs any more, fail it and queue it again with: "
                f"python -m budgetnas.storage fail-running --storage {command_storage(config.storage_url)} "
                f"--study {config.study_name}; then rerun this search to finish the study")
    summary = search.summarise(study, config, time.perf_counter() - start)
    if interrupted or EXIT_INTERRUPTED in codes:
        summary.interrupted = True
        raise search.SearchInterrupted(summary)
    if all(code == EXIT_USAGE for code in codes) and messages:
        raise UsageError(messages[0])
    if all(code != 0 for code in codes):
        raise RunFailure(messages[0] if messages else f"every worker failed (exit codes {codes})")
    return summary


@contextlib.contextmanager
def _signals_as_ctrl_c() -> Iterator[None]:
    """SIGINT and SIGTERM (``kill``, a batch system, ``timeout``) stop the workers as cleanly as Ctrl-C.

    SIGINT gets an explicit handler too: Python installs its KeyboardInterrupt handler only when
    SIGINT was not ignored at start-up, and a shell ignores it for the jobs it starts in the
    background, where ``kill -INT`` would otherwise do nothing. A single-process search handles
    SIGINT itself (``search._CtrlC``), so both modes answer it the same way.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _spawn(config: "SearchConfig", index: int, threads: int, verbose: bool) -> subprocess.Popen:
    """Start ``python -m budgetnas.workers`` with the pickled job on its stdin.

    A fresh interpreter rather than multiprocessing: it does not re-import the caller's main
    module (a script without a ``__main__`` guard, a notebook or stdin would break spawn).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, "-m", "budgetnas.workers"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=None if verbose else subprocess.DEVNULL, env=env,
                               start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(pickle.dumps((config, index, threads, verbose)))
    process.stdin.close()
    return process


def _last_line(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    lines = process.stdout.read().decode(errors="replace").strip().splitlines()
    process.stdout.close()
    return lines[-1] if lines else ""


def _worker_main() -> int:
    """One worker process: its share of threads, then the ordinary search on the shared study.

    Progress goes to stderr with a ``[worker i]`` prefix; a final one-line error to stdout,
    where the parent reads it.
    """
    config, index, threads, verbose = pickle.loads(sys.stdin.buffer.read())
    import torch

    from budgetnas import search

    torch.set_num_threads(threads)
    if "worker" in {f.name for f in fields(config)}:  # offsets the sampler seed per worker (search.py)
        config = replace(config, worker=index)
    try:
        search.run_search(config, (lambda message: _say(index, message)) if verbose else None)
    except KeyboardInterrupt:  # SearchInterrupted is one
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(" ".join(str(exc).split()))
        return EXIT_USAGE
    except Exception as exc:  # RunFailure or a bug: one line to the parent, not a traceback per worker
        text = str(exc) if isinstance(exc, RunFailure) else f"internal error: {type(exc).__name__}: {exc}"
        print(f"worker {index}: " + " ".join(text.split()))
        return EXIT_FAILURE
    return 0


def _say(index: int, message: str) -> None:
    sys.stderr.write(f"[worker {index}] {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(_worker_main())
