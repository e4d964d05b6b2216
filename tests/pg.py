"""A real PostgreSQL server for tests marked ``postgres``.

``postgres_url`` (session fixture) is ``$BUDGETNAS_TEST_POSTGRES_URL`` when set (``.ci/run``
starts a server with ``.ci/postgres.sh``); otherwise it starts a throwaway cluster itself with
that same script when PostgreSQL's binaries are installed (never installs packages), and
skips with the reason when they are not. ``pg_study_url`` gives each test a URL plus a
unique study name prefix, so tests share one database without seeing each other's studies.

Use it from a test module with ``from pg import postgres_url, pg_storage_url  # noqa: F401``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


def _start_server() -> tuple[str, str]:
    """Start a throwaway cluster with .ci/postgres.sh; returns (url, folder to stop)."""
    env = {**os.environ, "BUDGETNAS_PG_INSTALL": "0"}
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=180)
    if proc.returncode == 3:
        pytest.skip("PostgreSQL tests need a server: set BUDGETNAS_TEST_POSTGRES_URL or install Debian's "
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
