"""Many workers on one PostgreSQL study: total budget, crash safety, dashboard, bad URLs.

A real PostgreSQL server (``tests/pg.py``: $BUDGETNAS_TEST_POSTGRES_URL, or a throwaway cluster
from Debian's binaries), real ``budgetnas`` processes, real training on a tiny slice of
Fashion-MNIST (about a second a trial). The crash test really SIGKILLs a worker process while
it trains; heartbeats are shortened through the environment (1 s interval, 3 s grace).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import REPO, assert_one_line_error, run_cli
from optuna.trial import TrialState
from pg import pg_storage_url, postgres_url  # noqa: F401  (fixtures)

from budgetnas.storage import Heartbeat, open_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FAST_HEARTBEAT = {"BUDGETNAS_HEARTBEAT_INTERVAL": "1", "BUDGETNAS_HEARTBEAT_GRACE": "3"}


def search_args(npz: Path, url: str, study: str, trials: int, epochs: int = 1) -> list[str]:
    return ["search", "--budget", "5k", "--family", "cnn", "--dataset", f"npz:{npz}", "--trials", str(trials),
            "--epochs", str(epochs), "--storage", url, "--study", study]


def start_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "budgetnas", *args], cwd=cwd, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def load(url: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=Heartbeat(interval=60)))


def retried(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def counted(trials) -> list:
    """Finished trials that count towards --trials (the rule of budgetnas.search.count_finished)."""
    again = retried(trials)
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "interrupted" not in t.user_attrs and t.number not in again)]


def assert_well_formed(trials) -> None:
    """Unique consecutive numbers, nothing left running, every trial with its attributes."""
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    for t in trials:
        if t.state == TrialState.COMPLETE:
            for key in ("spec", "recipe", "params", "mult_adds", "val_accuracy_curve", "train_seconds", "versions"):
                assert key in t.user_attrs, (t.number, key)
            assert t.user_attrs["params"] <= 5000 and len(t.values) == 2
        elif t.state == TrialState.PRUNED:
            assert "params" in t.user_attrs and ("rejected" in t.user_attrs or "stopped_early" in t.user_attrs)


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


def worker_pids(parent: int) -> list[int]:
    path = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds worker processes through /proc (Linux)")
def test_sigkill_a_worker_its_trial_fails_and_is_retried(tiny_npz, pg_storage_url, tmp_path):
    url, study = pg_storage_url
    total = 8
    proc = start_cli([*search_args(tiny_npz, url, study, trials=total, epochs=2), "--workers", "2"], tmp_path,
                     env=FAST_HEARTBEAT)
    victim = None
    deadline = time.time() + 300
    try:
        # Kill when both workers are inside a trial that has run for a while (so its heartbeat is recorded).
        while victim is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                running = load(url, study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except KeyError:  # study not created yet
                continue
            now = time.time()
            settled = [t for t in running if now - t.datetime_start.timestamp() > 0.5]
            pids = worker_pids(proc.pid)
            if len(settled) == 2 and len(pids) == 2:
                victim = pids[0]
                os.kill(victim, signal.SIGKILL)
        assert victim is not None, "never saw both workers training at once"
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
    assert retry.params == dead.params and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
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
