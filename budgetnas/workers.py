"""Several search processes on one study: ``budgetnas search --workers N``, and the total budget.

    from budgetnas.search import SearchConfig
    from budgetnas.workers import run_workers
    summary = run_workers(SearchConfig(budget=5_000, trials=12, storage="journal:runs/s.log"), workers=2)

Each worker is a separate Python process (``python -m budgetnas.workers``, an internal entry point
that reads its job from stdin; not a user command; so nothing of
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
and the waiting worker runs the retry, so the study still completes. The only overshoot is
a race: two workers that finish at the same moment may both start a trial, so a study can
end with up to N-1 trials more than asked (rare; usually none). Without a heartbeat
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
import threading
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Callable, Iterator

from budgetnas.errors import FieldError, RunFailure, UsageError
from budgetnas.storage import redact, storage_kind
from budgetnas.trialcount import StopAtTotal, count_finished, retried_numbers  # noqa: F401  (their old home; tests import them here)

if TYPE_CHECKING:
    import optuna

    from budgetnas.search import SearchConfig, SearchSummary

Progress = Callable[[str], None]
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


def check_workers(workers: int, storage_url: str | None) -> None:
    """Refuse worker counts below one, and several workers on SQLite (see the module docstring)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FieldError(f"workers must be a whole number of at least 1, got {workers!r}", "workers")
    if workers > 1 and storage_kind(storage_url) == "sqlite":
        raise UsageError(f"--workers {workers} cannot share an SQLite file (concurrent writers get 'database is "
                         "locked'); use --storage journal:budgetnas.log on one machine, or a postgresql:// URL")


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Each worker's share of the CPU cores this process may use (at least one)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def run_workers(config: "SearchConfig", workers: int, progress: Progress | None = None) -> "SearchSummary":
    """Run the search of ``config`` in ``workers`` processes on its storage; summarise the study.

    Raises UsageError before starting anything for a bad config or storage (checked once,
    here); SearchInterrupted after Ctrl-C (every worker saves its state first); RunFailure if
    every worker failed. A worker killed by a signal is reported through ``progress``.
    """
    import optuna

    from budgetnas import search
    from budgetnas.storage import open_storage
    from budgetnas.study import create_or_load

    check_workers(workers, config.storage)
    if workers == 1:
        return search.run_search(config, progress)
    say = progress or (lambda message: None)
    prepared = search.prepare(config)  # the config checked itself when it was made; these checks need data
    # Create the study here, once: N processes creating it at the same moment would race.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line among our progress
    try:
        study = create_or_load(open_storage(config.storage_url), config.study_name, config.settings(),
                               config.sampler, config.seed)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if config.trials is not None and count_finished(study) >= config.trials:
        return search.run_search(config, progress, prepared=prepared)  # says that the study is already complete

    threads = threads_per_worker(workers)
    say(f"{workers} workers, {threads} CPU thread(s) each, on {storage_kind(config.storage_url)} storage")
    start = time.perf_counter()
    processes = [_spawn(config, prepared, index, threads, verbose=progress is not None) for index in range(workers)]
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
                f"budgetnas storage fail-running --storage {redact(config.storage_url)} "
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


def _spawn(config: "SearchConfig", prepared: Any, index: int, threads: int, verbose: bool) -> subprocess.Popen:
    """Start ``python -m budgetnas.workers`` with the pickled job on its stdin.

    A fresh interpreter rather than multiprocessing: it does not re-import the caller's main
    module (a script without a ``__main__`` guard, a notebook or stdin would break spawn).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, "-m", "budgetnas.workers"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=None if verbose else subprocess.DEVNULL, env=env,
                               start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(pickle.dumps((config, prepared, index, threads, verbose)))
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
    config, prepared, index, threads, verbose = pickle.loads(sys.stdin.buffer.read())
    import torch

    from budgetnas import search

    torch.set_num_threads(threads)
    if "worker" in {f.name for f in fields(config)}:  # offsets the sampler seed per worker (search.py)
        config = copy.copy(config)  # not replace(): the parent checked this config once, no second check here
        object.__setattr__(config, "worker", index)
    try:
        search.run_search(config, (lambda message: _say(index, message)) if verbose else None, prepared=prepared)
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
