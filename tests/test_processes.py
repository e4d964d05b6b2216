"""budgetnas.processes: how many independent runs train at once, and the flag an error names."""

from __future__ import annotations

import pytest

from budgetnas.errors import UsageError
from budgetnas.processes import AUTO, resolve_run_workers


@pytest.mark.parametrize("workers, runs, device, cores, expected", [
    (AUTO, 2, "cpu", 8, 2),    # one per seed, no process without a seed
    (AUTO, 5, "cpu", 2, 2),    # one per core
    (AUTO, 3, "cuda", 8, 1),   # several runs on one GPU are not measured yet
    (4, 2, "cpu", 8, 2),       # a number, up to the runs
    ("3", 5, "cuda", 8, 3),    # a number is taken as given, GPU or not
    (1, 5, "cpu", 8, 1),
])
def test_run_workers_are_one_per_core_up_to_the_runs(workers, runs, device, cores, expected):
    assert resolve_run_workers(workers, runs, device, cores=cores) == expected


@pytest.mark.parametrize("bad", [0, -1, "two", True, 1.5])
def test_bad_run_workers_are_refused_naming_the_flag(bad):
    from budgetnas.processes import parse_workers

    with pytest.raises(UsageError, match=r"^--replay-workers must be a whole number of at least 1 or 'auto'"):
        parse_workers(bad, "--replay-workers")
