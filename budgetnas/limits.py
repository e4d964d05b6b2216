"""Sizes checked before anything is allocated: spec integers, budgets, model memory, files, arrays.

A width of 10^9 in a config would make PyTorch try to allocate terabytes (or print a C++
stack trace for 10^20); ``--budget 1000G`` would train 8-GB models; ``count /dev/zero``
would read until memory ran out; an npz header can declare a (10^9, 28, 28) array in a
1.6 MB file. Each of these is refused here with a one-line :class:`UsageError` (exit 2)
*before* the allocation, from bounds that are generous for this project's models:

* every integer of a spec (width, channels, kernel, padding, pool) is at most
  :data:`MAX_SPEC_INT` (65,536, also the search space's width ceiling);
* a budget is at most :data:`MAX_BUDGET` (100M parameters: 25x the paper's largest model
  times 500; fp32 weights of 400 MB) and its training state must fit in memory;
* a model's estimated memory (:func:`budgetnas.cost.model_bytes`: fp32 weights, and for
  training gradients and Adam's two moments, plus activations of one batch kept for the
  backward pass) must fit in the memory the machine has available now (:func:`available_memory`);
  the estimate is a lower bound of what PyTorch needs, so a refused model would certainly not
  have fitted (checked by :func:`budgetnas.cost.check_model_memory` before the trainer builds it);
* config files are regular files of at most :data:`MAX_CONFIG_BYTES`.

GPU memory is not estimated: a CUDA out-of-memory error is caught where it happens (a
search records the trial as failed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from budgetnas.errors import UsageError

MAX_SPEC_INT = 1 << 16  # also the largest batch size
MAX_SEED = 2**31 - 1  # seeds are offset per worker and trial and must stay below numpy's 2**32
MAX_EPOCHS = 100_000
MIN_SUBSET = 20  # --subset and --replay-subset: fewer images than this measure nothing
MAX_BUDGET = 100_000_000
MAX_CONFIG_BYTES = 1 << 20
MAX_THREADS = 1024  # OpenMP sets up every thread's state at once: 10**9 threads asked libgomp for 216 GB
_FLOAT = 4  # bytes per fp32 value


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40  # unknown: do not refuse on a guess


def gib(n: float) -> str:
    return f"{n / (1 << 30):,.1f} GiB"


def check_budget_size(budget: int) -> None:
    """Refuse budgets above MAX_BUDGET, or whose training state cannot fit in memory."""
    if budget > MAX_BUDGET:
        raise UsageError(f"budget {budget:,} is above the largest supported budget of {MAX_BUDGET:,} parameters "
                         "(100M); budgetnas searches small networks")
    need, have = budget * 4 * _FLOAT, available_memory()
    if need > have:
        raise UsageError(f"budget {budget:,} needs at least {gib(need)} to train a model of that size, more "
                         f"than the {gib(have)} of memory available; choose a smaller --budget")


MAX_STUDY_NAME = 100  # default output files are named after the study; file names stop at 255 bytes


def check_search_edges(config: Any) -> None:
    """A :class:`~budgetnas.search.SearchConfig`'s budget, seed and study name, checked before anything
    is opened or created (an empty ``--storage`` is refused by :func:`budgetnas.storage.normalise_url`)."""
    check_budget_size(config.budget)
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be a whole number from 0 to {MAX_SEED:,}, got {seed!r}")
    if config.study is not None:
        if not config.study.strip():
            raise UsageError("--study is empty; give a name, or leave --study out for the default name")
        if len(config.study) > MAX_STUDY_NAME:
            raise UsageError(f"--study name is {len(config.study)} characters long; at most {MAX_STUDY_NAME} "
                             "(output files are named after it)")
        if not config.study.isprintable():  # control characters, or bytes that were not UTF-8 (surrogates)
            raise UsageError(f"--study name {ascii(config.study)} holds characters that are not printable text; "
                             "use letters, digits and punctuation (files and commands are named after it)")


def check_threads(threads: int | None, what: str = "--threads") -> None:
    """Refuse a thread count below 1 or above :data:`MAX_THREADS` (None: torch's default)."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"{what} must be from 1 to {MAX_THREADS:,}, got {threads:,}")


def check_subset(subset: int | None, what: str = "--subset") -> None:
    """Refuse a training slice (None: the whole split) below :data:`MIN_SUBSET` images, before any search runs."""
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < MIN_SUBSET):
        raise UsageError(f"{what} must be at least {MIN_SUBSET} images, got {subset!r}")


def check_small_file(path: Path, what: str, limit: int = MAX_CONFIG_BYTES) -> None:
    """Refuse a path that is not a regular file (``/dev/zero``, a FIFO, a folder) or is larger than ``limit``."""
    if not path.is_file():
        raise UsageError(f"{what} {path} is not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise UsageError(f"{what} {path} is {size:,} bytes; at most {limit:,} are read")
