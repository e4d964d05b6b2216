"""Many workers on one PostgreSQL study: total budget, crash safety, dashboard, bad URLs.

A real PostgreSQL server (``tests/pg.py``: $BUDGETNAS_TEST_POSTGRES_URL, or a throwaway cluster
from Debian's binaries), real ``budgetnas`` processes, real training on a tiny slice of
Fashion-MNIST (about a second a trial). The crash test really SIGKILLs a worker process while
it trains; heartbeats are shortened through the environment (1 s interval, 3 s grace).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import assert_one_line_error, run_cli
from optuna.trial import TrialState
from pg import (FAST_HEARTBEAT, assert_well_formed, counted, kill_a_training_worker, pg_storage_url,  # noqa: F401
                postgres_url, search_args, start_cli)

from budgetnas.storage import Heartbeat, open_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def load(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=Heartbeat(interval=60)))


def test_two_processes_share_the_total(tiny_npz, pg_storage_url, tmp_path):
    """Two `budgetnas search` processes (two machines, in effect) split one --trials 6 budget."""
    url, study = pg_storage_url
    procs = [start_cli(search_args(tiny_npz, url, study, trials=6), tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    trials = load(url, study).get_trials(deepcopy=False)
    assert_well_formed(trials)
    # Exactly the total, up to the documented race of workers - 1 = 1 extra trial.
    assert 6 <= len(counted(trials)) <= 7, [(t.number, t.state.name) for t in trials]
    assert "[6/6]" in outputs[0][1] + outputs[1][1]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds worker processes through /proc (Linux)")
def test_sigkill_a_worker_its_trial_fails_and_is_retried(tiny_npz, pg_storage_url, tmp_path):
    url, study = pg_storage_url
    total = 8
    proc = start_cli([*search_args(tiny_npz, url, study, trials=total, epochs=2), "--workers", "2",
                      "--pruner", "none", "--max-mult-adds", "none"], tmp_path,  # every trial trains both epochs
                     env=FAST_HEARTBEAT)
    try:
        kill_a_training_worker(proc, lambda: load(url, study))
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "killed by signal 9" in err

    trials = load(url, study).get_trials(deepcopy=False)
    assert_well_formed(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "failed" not in failed[0].user_attrs, [(t.number, t.state.name) for t in trials]
    dead = failed[0]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1, [(t.number, t.state.name, t.system_attrs) for t in trials]
    retry = retries[0]
    assert retry.system_attrs["retry_history"] == [dead.number]
    # Same architecture: what the dead trial had sampled is fixed in the retry (a kill during
    # sampling leaves fewer parameters; the retry samples the rest).
    assert dead.params.items() <= retry.params.items()
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.number > dead.number
    # The killed trial does not count; its retry does: the study still reaches the total.
    assert total <= len(counted(trials)) <= total + 1
    assert dead not in counted(trials)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_serves_a_postgres_study(tiny_npz, pg_storage_url, tmp_path):
    url, study = pg_storage_url
    proc = run_cli(*search_args(tiny_npz, url, study, trials=2), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = free_port()
    server = start_cli(["dashboard", "--storage", url, "--port", str(port)], tmp_path)
    try:
        studies = None
        for _ in range(150):
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        assert studies is not None, server.communicate(timeout=10)[1][-2000:] if server.poll() is not None else ""
        mine = [s for s in studies if s["study_name"] == study]
        assert len(mine) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{mine[0]['study_id']}?after=0",
                                    timeout=10) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 2
        assert any(a["key"] == "params" for a in detail["trials"][0]["user_attrs"])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, err = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            err = ""
    assert url.split("@")[0].split(":")[-1] not in err  # the password is never printed


def test_wrong_password_and_missing_database_are_one_line(pg_storage_url, tiny_npz, cli):
    url, study = pg_storage_url
    scheme_user, rest = url.rsplit("@", 1)
    password = scheme_user.rsplit(":", 1)[1]
    bad_password = f"{scheme_user.rsplit(':', 1)[0]}:not-{password}@{rest}"
    last = assert_one_line_error(cli(*search_args(tiny_npz, bad_password, study, trials=1)), 2,
                                 "password authentication failed")
    assert password not in last
    no_db = url.rsplit("/", 1)[0] + "/no_such_db"
    last = assert_one_line_error(cli(*search_args(tiny_npz, no_db, study, trials=1)), 2, "does not exist")
    assert password not in last
