"""Several search processes on one study: ``budgetnas search --workers N``, and the total budget.

    from budgetnas.search import SearchConfig
    from budgetnas.workers import run_workers
    summary = run_workers(SearchConfig(budget=5_000, trials=12, storage="journal:runs/s.log"), workers=2)

Each worker is a separate Python process (``python -m budgetnas.workers``, an internal entry point
that reads its job from stdin; not a user command; so nothing of
the caller's state is shared and no ``__main__`` guard is needed) running
:func:`budgetnas.search.run_search` with the same config on the same storage, with
``cores // N`` torch threads, so N workers do not fight over the cores.

``--workers auto`` (:func:`resolve_workers`) is one single-threaded worker per core this
process may use (its CPU affinity), because a search's candidates are small: one
intra-op thread per trial keeps every core busy, where two threads on one trial mostly
wait for each other (measured in ``benchmarks/results/search_throughput.md``). It stays
one process (with every core as threads) where several would not help or are not safe:
on SQLite (see Storage), on a GPU (concurrent trials on one GPU are not measured yet),
and when the study needs fewer trials than there are cores. Each worker's sampler
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
and the waiting worker runs the retry, so the study still completes. Workers started by
one ``--workers N`` hold a file lock (:class:`TrialGate`) from that check until their next
trial is RUNNING, so two of them never both take the last place. Separately started
commands (other machines on PostgreSQL) share no lock: two that finish at the same moment
may both start a trial, and :class:`GiveWay` then lets the higher-numbered one give way (a
``surplus`` FAIL that does not count), so a study ends with exactly the total. Without a heartbeat
(journal storage) a worker cannot tell a dead peer from a slow one, so it stops instead of
waiting; a killed worker's trial then stays RUNNING and the study ends one short, until
:func:`budgetnas.storage.fail_running_trials` fails it and the search is run again.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from budgetnas.errors import RunFailure, UsageError
from budgetnas.processes import (AUTO, EXIT_INTERRUPTED, EXIT_USAGE, available_cores, child_exit, labelled,
                                 last_line, parse_workers, signals_as_ctrl_c, threads_per_worker)
from budgetnas.storage import fail_running_command, storage_kind
from budgetnas.trialcount import (LOCK_ENV, GiveWay, StopAtTotal, TrialGate, count_finished,  # noqa: F401
                                  retried_numbers)  # (their old home; tests import them here)

if TYPE_CHECKING:

    from budgetnas.search import SearchConfig, SearchSummary

Progress = Callable[[str], None]
DEFAULT_WORKERS = AUTO  # chosen from benchmarks/results/search_throughput.md


def resolve_workers(workers: int | str, storage_url: str | None, device_type: str = "cpu",
                    cores: int | None = None) -> int:
    """The number of processes ``workers`` means: ``auto`` is one per core where that is possible.

    ``auto`` is 1 on SQLite (one writer at a time; the storage is never switched) and on a GPU
    or MPS device (several trials on one GPU are not measured yet); a number is taken as given.
    """
    workers = parse_workers(workers)
    if workers != AUTO:
        return workers
    if device_type != "cpu" or storage_kind(storage_url) == "sqlite":
        return 1
    return max(1, cores if cores is not None else available_cores())


def check_workers(workers: int, storage_url: str | None) -> None:
    """Refuse worker counts below one, and several workers on SQLite (see the module docstring)."""
    parse_workers(workers)
    if workers > 1 and storage_kind(storage_url) == "sqlite":
        raise UsageError(f"--workers {workers} cannot share an SQLite file (concurrent writers get 'database is "
                         "locked'); use --storage journal:budgetnas.log on one machine, or a postgresql:// URL")


def run_workers(config: "SearchConfig", workers: int | str = DEFAULT_WORKERS,
                progress: Progress | None = None) -> "SearchSummary":
    """Run the search of ``config`` in ``workers`` processes (or ``auto``) on its storage; summarise the study.

    Raises UsageError before starting anything for a bad config or storage (checked once,
    here); SearchInterrupted after Ctrl-C (every worker saves its state first); RunFailure if
    every worker failed. A worker killed by a signal is reported through ``progress``.
    """
    import optuna

    from budgetnas import search
    from budgetnas.device import resolve_placement
    from budgetnas.storage import open_storage
    from budgetnas.study import create_or_load

    say = progress or (lambda message: None)
    asked = parse_workers(workers)
    placement = resolve_placement(config.device, config.precision)  # a missing GPU fails before any study is made
    workers = resolve_workers(asked, config.storage, placement.device.type)
    check_workers(workers, config.storage)
    if asked == AUTO and workers == 1 and available_cores() > 1 and placement.device.type == "cpu":
        say(f"1 process with {available_cores()} CPU threads: SQLite takes one writer at a time; "
            "--storage journal:budgetnas.log runs one single-threaded worker per core")
    if workers == 1:
        return search.run_search(config, progress)
    prepared = search.prepare(config, say)  # the config checked itself when it was made; these checks need data
    # Create the study here, once: N processes creating it at the same moment would race.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line among our progress
    try:
        study = create_or_load(open_storage(config.storage_url), config.study_name, config.settings(),
                               config.sampler, config.seed)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if config.trials is not None:
        workers = min(workers, config.trials - count_finished(study))  # no worker without a trial to run
    if workers <= 1:
        return search.run_search(config, progress, prepared=prepared)  # or says that the study is already complete

    prepared = replace(prepared, data=None)  # each worker loads its own copy; pickling the images would not pay
    threads = threads_per_worker(workers)
    say(f"{workers} workers, {threads} CPU thread(s) each, on {storage_kind(config.storage_url)} storage")
    start = time.perf_counter()
    with _lock_file() as lock:
        processes = [_spawn(config, prepared, index, threads, lock, verbose=progress is not None)
                     for index in range(workers)]
        codes, interrupted = _wait(processes)
    messages = [m for m in (last_line(p) for p in processes) if m]
    heartbeat = storage_kind(config.storage_url) != "journal"
    # Every worker has ended: a trial still RUNNING is one a killed worker left (a worker stopped by the
    # Ctrl-C passed on to it, before or after its trial, left none, and needs no advice). Read only then.
    left = ([t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
            if not heartbeat and any(code < 0 for code in codes) else [])
    for index, code in enumerate(codes):
        if code < 0 and heartbeat:
            say(f"worker {index} was killed by signal {-code}; the trial it was running is failed and retried by "
                "the other workers once its heartbeat is stale")
        elif code < 0 and left:
            say(f"worker {index} was killed by signal {-code}; journal storage has no heartbeat, so trial(s) "
                f"{', '.join(map(str, left))} stay RUNNING. When no worker of this study runs any more, fail them "
                f"and queue them again with: {fail_running_command(config.storage_url, config.study_name)}; then "
                "rerun this search to finish the study")
        elif code < 0:
            say(f"worker {index} was stopped by signal {-code}; it left no trial running")
    summary = search.summarise(study, config, time.perf_counter() - start)
    if interrupted or EXIT_INTERRUPTED in codes:
        summary.interrupted = True
        raise search.SearchInterrupted(summary)
    if all(code == EXIT_USAGE for code in codes) and messages:
        raise UsageError(messages[0])
    if all(code != 0 for code in codes):
        raise RunFailure(messages[0] if messages else f"every worker failed (exit codes {codes})")
    return summary


def _wait(processes: list[subprocess.Popen]) -> tuple[list[int], bool]:
    """Wait for every worker; (exit codes, whether Ctrl-C or SIGTERM came meanwhile)."""
    interrupted = False
    with signals_as_ctrl_c():
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
    return [p.returncode for p in processes], interrupted


@contextlib.contextmanager
def _lock_file() -> Iterator[str]:
    """A fresh empty file for the workers' :class:`TrialGate`, removed when they are done."""
    handle, path = tempfile.mkstemp(prefix="budgetnas-trials-", suffix=".lock")
    os.close(handle)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _spawn(config: "SearchConfig", prepared: Any, index: int, threads: int, lock: str,
           verbose: bool) -> subprocess.Popen:
    """Start ``python -m budgetnas.workers`` with the pickled job on its stdin.

    A fresh interpreter rather than multiprocessing: it does not re-import the caller's main
    module (a script without a ``__main__`` guard, a notebook or stdin would break spawn).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), LOCK_ENV: lock}
    process = subprocess.Popen([sys.executable, "-m", "budgetnas.workers"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=None if verbose else subprocess.DEVNULL, env=env,
                               start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(pickle.dumps((config, prepared, index, threads, verbose)))
    process.stdin.close()
    return process


def _worker_main() -> int:
    """One worker process: its share of threads, then the ordinary search on the shared study.

    Progress goes to stderr with a ``[worker i]`` prefix; a final one-line error to stdout,
    where the parent reads it.
    """
    config, prepared, index, threads, verbose = pickle.loads(sys.stdin.buffer.read())
    import torch

    from budgetnas import search

    torch.set_num_threads(threads)
    if "worker" in {f.name for f in fields(config)}:  # offsets the sampler seed per worker (search.py)
        config = copy.copy(config)  # not replace(): the parent checked this config once, no second check here
        object.__setattr__(config, "worker", index)
    say = labelled(f"worker {index}") if verbose else None
    return child_exit(lambda: search.run_search(config, say, prepared=prepared), failure_prefix=f"worker {index}: ")


if __name__ == "__main__":
    sys.exit(_worker_main())
