"""A real PostgreSQL server for tests marked ``postgres``.

``postgres_url`` (session fixture) is ``$BUDGETNAS_TEST_POSTGRES_URL`` when set (``.ci/run``
starts a server with ``.ci/postgres.sh``); otherwise it starts a throwaway cluster itself with
that same script when PostgreSQL's binaries are installed (never installs packages), and
skips with the reason when they are not (fails instead under ``CI=true``). ``pg_study_url`` gives each test a URL plus a
unique study name prefix, so tests share one database without seeing each other's studies.

Use it from a test module with ``from pg import postgres_url, pg_storage_url  # noqa: F401``.
The second half holds helpers for tests that run several real search processes on one study.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import REPO
from optuna.trial import TrialState

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


def _skip_or_fail_in_ci(reason: str) -> None:
    """Skip locally; under CI (``CI=true``, as ``.ci/run`` sets) a missing server is a failure, not a skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _start_server() -> tuple[str, str]:
    """Start a throwaway cluster with .ci/postgres.sh; returns (url, folder to stop)."""
    env = {**os.environ, "BUDGETNAS_PG_INSTALL": "0"}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=180)
    if proc.returncode == 3:
        _skip_or_fail_in_ci("PostgreSQL tests need a server: set BUDGETNAS_TEST_POSTGRES_URL or install Debian's "
                    "postgresql package (.ci/postgres.sh starts one)")
    if proc.returncode != 0:
        pytest.fail(f".ci/postgres.sh could not start PostgreSQL:\n{proc.stderr}")
    exports = {}
    for line in proc.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exports[name] = shlex.split(value)[0]
    return exports["BUDGETNAS_TEST_POSTGRES_URL"], exports["BUDGETNAS_TEST_POSTGRES_DIR"]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a live PostgreSQL database the tests may write to."""
    url = os.environ.get("BUDGETNAS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    url, folder = _start_server()
    try:
        yield url
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=60)


@pytest.fixture
def pg_storage_url(postgres_url: str):
    """(url, study) for one test: the shared database and a study name no other test uses."""
    return postgres_url, f"t-{uuid.uuid4().hex[:10]}"


# Helpers for tests that run several real search processes on one study (PostgreSQL or journal).
FAST_HEARTBEAT = {"BUDGETNAS_HEARTBEAT_INTERVAL": "1", "BUDGETNAS_HEARTBEAT_GRACE": "3"}


def search_args(npz: Path, url: str, study: str, trials: int, epochs: int = 1) -> list[str]:
    return ["search", "--budget", "5k", "--family", "cnn", "--dataset", f"npz:{npz}", "--trials", str(trials),
            "--epochs", str(epochs), "--storage", url, "--study", study,
            "--workers", "1"]  # one process each: these tests start, kill and count processes themselves


def start_cli(args: list[str], cwd: Path, env: dict | None = None, **popen: Any) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "budgetnas", *args], cwd=cwd, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def retried(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def counted(trials) -> list:
    """Finished trials that count towards --trials (the rule of budgetnas.search.count_finished)."""
    again = retried(trials)
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "interrupted" not in t.user_attrs and "surplus" not in t.user_attrs
                and t.number not in again)]


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


def worker_pids(parent: int) -> list[int]:
    path = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def kill_a_training_worker(parent: subprocess.Popen, load_study: Callable[[], Any]) -> int:
    """SIGKILL one worker of ``budgetnas search --workers 2`` while both are inside a trial.

    Waits until two trials have been RUNNING for over half a second (so each worker is
    training and has recorded a heartbeat) and both worker processes exist; returns the pid.
    ``load_study()`` loads the study (KeyError while it does not exist yet).
    """
    deadline = time.time() + 300
    while parent.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            running = [t for t in load_study().get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        except KeyError:
            continue
        now = time.time()
        pids = worker_pids(parent.pid)
        if len([t for t in running if now - t.datetime_start.timestamp() > 0.5]) == 2 and len(pids) == 2:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
    pytest.fail("never saw both workers training at once")


class Server:
    """A private PostgreSQL cluster that a test may stop and start again (outage and soak tests)."""

    def __init__(self) -> None:
        self.url, self.folder = _start_server()

    def _ctl(self, *args: str) -> None:
        folder = Path(self.folder)
        command = [f"{(folder / 'bindir').read_text().strip()}/pg_ctl", "-D", str(folder / "data"), *args]
        if os.getuid() == 0:  # the cluster belongs to the `postgres` user (.ci/postgres.sh)
            command = ["runuser", "-u", (folder / "owner").read_text().strip(), "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        from urllib.parse import urlparse

        self._ctl("-l", f"{self.folder}/server.log", "-w", "-t", "60", "-o",
                  f"-p {urlparse(self.url).port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=200 -c fsync=off", "start")

    def close(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", self.folder], capture_output=True, timeout=60)


@pytest.fixture
def own_postgres():
    """A :class:`Server` of this test's own (stopping the shared one would break other tests)."""
    server = Server()
    try:
        yield server
    finally:
        server.close()
