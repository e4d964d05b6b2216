"""Processes that train: the cores this process may use, each process's share of them, Ctrl-C passed
on to children, and :func:`run_calls` (with :func:`run_seeds`, one call per seed), which trains independent runs
(a replay's seeds) side by side.

The search's own workers (:mod:`budgetnas.workers`) build on the same parts; this module knows nothing
of studies, so that anything that trains (replay, sweep) can use it without importing the search.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

from budgetnas.errors import RunFailure, UsageError
from budgetnas.fmt import plural

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
AUTO = "auto"


def parse_workers(value: int | str, flag: str = "--workers") -> int | str:
    """``--workers`` (or ``flag``): ``auto`` or a whole number of at least 1 (as given; see
    :func:`budgetnas.workers.resolve_workers` and :func:`resolve_run_workers`)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{flag} must be a whole number of at least 1 or 'auto', got {value!r}")
    return value


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (taskset, cgroups)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Each worker's share of the CPU cores this process may use (at least one)."""
    return max(1, (cores if cores is not None else available_cores()) // workers)


def resolve_run_workers(workers: int | str, runs: int, device_type: str = "cpu", cores: int | None = None) -> int:
    """How many of ``runs`` independent training runs (a replay's seeds) to train at once: ``auto`` is one
    per core up to ``runs`` on a CPU and 1 on a GPU (several runs on one GPU are not measured yet); a number
    is taken as given, up to ``runs``."""
    workers = parse_workers(workers)
    if workers == AUTO:
        workers = 1 if device_type != "cpu" else (cores if cores is not None else available_cores())
    return max(1, min(workers, runs))


def run_calls(target: str, calls: list[dict[str, Any]], workers: int, labels: list[str],
              on_result: Callable[[int, Any], None] | None = None, verbose: bool = True) -> list[Any]:
    """Call ``target`` (``module:function``) once with each keyword set of ``calls``, each call in its own
    process (at most ``workers`` at once, ``cores // workers`` torch threads each); the return values
    in the order of ``calls``.

    Why processes: independent training runs of small nets (a replay's seeds) each keep one core busy
    where one run with every core as threads mostly waits (``benchmarks/results/search_throughput.md``).
    A fresh interpreter per call, as for the search workers (:mod:`budgetnas.workers`). Progress goes to stderr
    with the call's label; ``on_result(i, value)`` is called in this process as each call ends, so a
    caller keeps what finished if a later one is stopped. Ctrl-C (or SIGTERM) starts no further call and
    passes SIGINT to the running ones; KeyboardInterrupt is raised once they have ended. A call that
    failed raises UsageError or RunFailure with its one-line message (that of the first failed call in the
    order of ``calls``, not of whichever process ended first), after the others have ended.
    """
    threads = threads_per_worker(workers)
    results: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    running: dict[int, tuple[subprocess.Popen, str]] = {}
    failures: dict[int, tuple[int, str]] = {}  # call index -> (exit code, one-line message)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="budgetnas-calls-") as folder, signals_as_ctrl_c():
        while pending or running:
            try:
                while pending and len(running) < workers and not interrupted:
                    i = pending.pop(0)
                    path = os.path.join(folder, f"{i}.pickle")
                    running[i] = (_spawn_call(target, calls[i], threads, labels[i], path, verbose), path)
                for i, (process, path) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[i]
                    message = last_line(process)
                    if process.returncode == 0:
                        with open(path, "rb") as handle:
                            results[i] = pickle.load(handle)
                        if on_result is not None:
                            on_result(i, results[i])
                    else:
                        failures[i] = (process.returncode, message or f"{labels[i]}: exit code {process.returncode}")
                time.sleep(0.1)
            except KeyboardInterrupt:
                interrupted = True
                pending.clear()
                for process, _path in running.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGINT)
    if interrupted or any(code in (EXIT_INTERRUPTED, -signal.SIGINT) for code, _m in failures.values()):
        raise KeyboardInterrupt
    if failures:  # the first call's error in the order of calls, not whichever process happened to end first
        code, message = failures[min(failures)]
        raise UsageError(message) if code == EXIT_USAGE else RunFailure(message)
    return results


def run_seeds(target: str, calls: list[dict[str, Any]], seeds: list[int], workers: int,
              progress: Callable[[str], None] | None = None,
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """:func:`run_calls` with one call per seed (``replay --seeds``, ``train --seeds``): says how the seeds
    share the cores, and labels each process's progress with its seed."""
    if progress is not None:
        progress(f"seeds {', '.join(map(str, seeds))}: {workers} at once, each in its own process with "
                 f"{plural(threads_per_worker(workers), 'CPU thread')}")
    return run_calls(target, calls, workers, [f"seed {s}" for s in seeds], on_result=on_result,
                     verbose=progress is not None)


def _spawn_call(target: str, kwargs: dict[str, Any], threads: int, label: str, path: str,
                verbose: bool) -> subprocess.Popen:
    """Start ``python -m budgetnas.processes`` with the pickled call on its stdin (see :func:`run_calls`)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, "-m", "budgetnas.processes"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=None if verbose else subprocess.DEVNULL, env=env,
                               start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(pickle.dumps((target, kwargs, threads, label, path, verbose)))
    process.stdin.close()
    return process


def _call_main() -> int:
    """One :func:`run_calls` process: its share of threads, the call, its return value pickled to a file;
    a final one-line error to stdout, where the parent reads it."""
    target, kwargs, threads, label, path, verbose = pickle.loads(sys.stdin.buffer.read())
    import importlib

    import torch

    torch.set_num_threads(threads)
    module, name = target.split(":")

    def work() -> None:
        value = getattr(importlib.import_module(module), name)(**kwargs, progress=labelled(label) if verbose else None)
        with open(path, "wb") as handle:
            pickle.dump(value, handle)

    return child_exit(work, failure_prefix=f"{label}: ", usage_prefix=f"{label}: ")


def labelled(label: str) -> Callable[[str], None]:
    """A child process's progress: ``[label] message`` lines on stderr, told apart from its siblings'."""
    def say(message: str) -> None:
        sys.stderr.write(f"[{label}] {message}\n")
        sys.stderr.flush()

    return say


def child_exit(work: Callable[[], None], failure_prefix: str, usage_prefix: str = "") -> int:
    """Do a child process's ``work`` and return its exit code: 0, :data:`EXIT_INTERRUPTED` (Ctrl-C, and
    anything that is a KeyboardInterrupt such as ``SearchInterrupted``), :data:`EXIT_USAGE` or
    :data:`EXIT_FAILURE`, the error then as one line on stdout, where the parent reads it
    (:func:`last_line`): not a traceback per child."""
    try:
        work()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(usage_prefix + " ".join(str(exc).split()))
        return EXIT_USAGE
    except Exception as exc:  # RunFailure or a bug
        text = str(exc) if isinstance(exc, RunFailure) else f"internal error: {type(exc).__name__}: {exc}"
        print(failure_prefix + " ".join(text.split()))
        return EXIT_FAILURE
    return 0


@contextlib.contextmanager
def signals_as_ctrl_c() -> Iterator[None]:
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


def last_line(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    lines = process.stdout.read().decode(errors="replace").strip().splitlines()
    process.stdout.close()
    return lines[-1] if lines else ""


if __name__ == "__main__":
    sys.exit(_call_main())
