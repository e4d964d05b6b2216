"""Storage URLs, their one-line errors, and the journal's stale-trial helper (no server needed).

An unreachable PostgreSQL is a real closed TCP port on this machine, not a mock: the
driver really tries to connect and fails.
"""

from __future__ import annotations

import socket

import optuna
import pytest
from conftest import assert_one_line_error, run_cli

from budgetnas.errors import StorageError
from budgetnas.storage import (Heartbeat, fail_running_trials, normalise_url, open_storage, redact, storage_kind,
                               supports_many_workers)

SECRET = "s3cr3t-Pw"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and SECRET not in text, text
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)
    return text


def test_redact_hides_password_even_with_raw_at_sign():
    assert redact(f"postgresql://me:{SECRET}@db.example:5432/nas") == "postgresql://me:***@db.example:5432/nas"
    assert SECRET not in redact(f"postgresql://me:{SECRET}@extra@db/nas")
    assert redact("sqlite:///runs/a@b.db") == "sqlite:///runs/a@b.db"


def test_normalise_picks_installed_driver_and_long_scheme():
    url = normalise_url(f"postgres://me:{SECRET}@db:5433/nas")
    assert url.startswith("postgresql+psycopg2://me:") and url.endswith("@db:5433/nas")
    assert SECRET in url  # the real URL keeps the password; only messages hide it
    assert normalise_url("postgresql+psycopg2://a@b/c") == "postgresql+psycopg2://a@b/c"
    assert normalise_url(None).startswith("sqlite:///") and normalise_url(None).endswith("budgetnas.db")
    assert storage_kind("journal:x.log") == "journal" and storage_kind("sqlite:///x.db") == "sqlite"
    assert storage_kind("postgresql://a@b/c") == "postgresql"
    assert supports_many_workers("journal:x.log") and not supports_many_workers(None)


@pytest.mark.parametrize("url, needle", [
    (f"postgresql://me:{SECRET}@127.0.0.1:notaport/nas", "port is not a number"),
    (f"oracle://me:{SECRET}@db/nas", "oracle"),
    (f"me:{SECRET}@db/nas", "not understood"),
    (f"postgresql://me:{SECRET}@x@db/nas", "%40"),
    ("sqlite://", "in-memory"),
    ("journal:", "journal:PATH"),
])
def test_malformed_urls_are_one_line_errors(url, needle):
    with pytest.raises(StorageError) as exc:
        open_storage(url)
    assert_one_line(exc, needle)


def test_unreachable_postgres_names_host_and_port_not_password():
    port = closed_port()
    with pytest.raises(StorageError) as exc:
        open_storage(f"postgresql://me:{SECRET}@127.0.0.1:{port}/nas")
    text = assert_one_line(exc, f"cannot reach database at 127.0.0.1:{port}/nas", "refused")
    assert "driver" not in text


def test_unknown_host_is_unreachable_not_a_driver_problem():
    with pytest.raises(StorageError) as exc:
        open_storage(f"postgresql://me:{SECRET}@no-such-host.invalid/nas")
    assert_one_line(exc, "cannot reach database at no-such-host.invalid:5432/nas")


def test_missing_driver_names_the_module():
    with pytest.raises(StorageError) as exc:
        open_storage(f"postgresql+asyncpg://me:{SECRET}@127.0.0.1/nas")
    assert_one_line(exc, "not installed", "asyncpg")


def test_missing_folder_for_files(tmp_path):
    for url in (f"sqlite:///{tmp_path}/nope/x.db", f"journal:{tmp_path}/nope/x.log"):
        with pytest.raises(StorageError) as exc:
            open_storage(url)
        assert_one_line(exc, "does not exist")


def test_sqlite_gets_heartbeat_and_retry(tmp_path, monkeypatch):
    monkeypatch.setenv("BUDGETNAS_HEARTBEAT_INTERVAL", "2")
    storage = open_storage(f"sqlite:///{tmp_path}/a.db")
    assert (storage.heartbeat_interval, storage.grace_period) == (2, 6)  # grace: 3 intervals unless set
    monkeypatch.setenv("BUDGETNAS_HEARTBEAT_GRACE", "10")
    assert open_storage(f"sqlite:///{tmp_path}/a.db").grace_period == 10
    monkeypatch.delenv("BUDGETNAS_HEARTBEAT_INTERVAL")
    monkeypatch.delenv("BUDGETNAS_HEARTBEAT_GRACE")
    assert open_storage(f"sqlite:///{tmp_path}/a.db").heartbeat_interval == 60
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)
    storage = open_storage(f"sqlite:///{tmp_path}/a.db", heartbeat=Heartbeat(interval=1, grace_period=3))
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 3)
    monkeypatch.setenv("BUDGETNAS_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(StorageError) as exc:
        open_storage(f"sqlite:///{tmp_path}/a.db")
    assert_one_line(exc, "BUDGETNAS_HEARTBEAT_INTERVAL")


def test_fail_running_trials_on_journal_retries_with_link(tmp_path):
    url = f"journal:{tmp_path}/study.log"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    done = study.ask()
    done.suggest_int("width", 8, 64)
    study.tell(done, 0.5)
    orphan = study.ask()  # a worker that was killed while training this one
    width = orphan.suggest_int("width", 8, 64)
    orphan.set_user_attr("spec", {"width": width})

    assert fail_running_trials(url, "s", older_than=3600) == []  # too young: might still be running
    assert fail_running_trials(url, "s") == [orphan.number]
    assert fail_running_trials(url, "s") == []  # nothing RUNNING any more

    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "WAITING"]
    retry = trials[2]
    assert retry.system_attrs["failed_trial"] == orphan.number
    assert retry.system_attrs["retry_history"] == [orphan.number]
    assert retry.params == {"width": width} and retry.user_attrs["spec"] == {"width": width}


def test_fail_running_trials_unknown_study(tmp_path):
    with pytest.raises(StorageError) as exc:
        fail_running_trials(f"journal:{tmp_path}/x.log", "missing")
    assert_one_line(exc, "'missing'")


# The same errors through the real command line: exit 2, one 'error:' line, no traceback, no password.
def test_cli_search_unreachable_postgres(cli, tiny_npz):
    port = closed_port()
    proc = cli("search", "--budget", "5k", "--dataset", f"npz:{tiny_npz}", "--trials", "1",
               "--storage", f"postgresql://me:{SECRET}@127.0.0.1:{port}/nas")
    last = assert_one_line_error(proc, 2, f"cannot reach database at 127.0.0.1:{port}")
    assert SECRET not in proc.stderr + proc.stdout and last


def test_cli_search_malformed_url(cli, tiny_npz):
    proc = cli("search", "--budget", "5k", "--dataset", f"npz:{tiny_npz}", "--trials", "1",
               "--storage", f"postgresql://me:{SECRET}@127.0.0.1:port/nas")
    assert_one_line_error(proc, 2, "malformed")
    assert SECRET not in proc.stderr + proc.stdout


def test_cli_several_workers_refuse_sqlite(cli, tiny_npz, tmp_path):
    for storage in ([], ["--storage", f"sqlite:///{tmp_path}/s.db"]):
        proc = cli("search", "--budget", "5k", "--dataset", f"npz:{tiny_npz}", "--trials", "2", "--workers", "2",
                   *storage)
        assert_one_line_error(proc, 2, "journal:")
    assert not list(tmp_path.glob("*.db"))  # refused before anything was created
    assert_one_line_error(cli("search", "--budget", "5k", "--trials", "2", "--workers", "0"), 2, "--workers")


def test_cli_dashboard_unreachable_postgres(cli):
    port = closed_port()
    proc = cli("dashboard", "--storage", f"postgresql://me:{SECRET}@127.0.0.1:{port}/nas", "--port", str(closed_port()))
    assert_one_line_error(proc, 2, "cannot reach database")
    assert SECRET not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_sqlite_search_killed_then_rerun_retries_the_dead_trial(tiny_npz, tmp_path):
    """The heartbeat helps one user too: a search SIGKILLed mid-trial, rerun, retries that trial."""
    import os
    import signal
    import time

    from optuna.trial import TrialState
    from pg import FAST_HEARTBEAT, assert_well_formed, counted, search_args, start_cli

    url, study = f"sqlite:///{tmp_path}/s.db", "killed"
    proc = start_cli(search_args(tiny_npz, url, study, trials=3, epochs=2), tmp_path, env=FAST_HEARTBEAT)
    dead = None
    try:
        deadline = time.time() + 300
        while dead is None and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            try:
                running = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.RUNNING,))
            except Exception:  # no database or study yet
                continue
            if running and time.time() - running[0].datetime_start.timestamp() > 0.5:
                os.kill(proc.pid, signal.SIGKILL)
                dead = running[0].number
    finally:
        proc.kill()
        proc.communicate()
    assert dead is not None, "the search never trained"
    time.sleep(4)  # past the 3 s grace period

    again = run_cli(*search_args(tiny_npz, url, study, trials=3, epochs=2), cwd=tmp_path, env=FAST_HEARTBEAT)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    assert_well_formed(trials)
    assert trials[dead].state == TrialState.FAIL and len(counted(trials)) == 3
    assert [t.number for t in trials if t.system_attrs.get("failed_trial") == dead]


@pytest.mark.parametrize("url", ["sqlite+pysqlite:///{}/absent.db", "sqlite:///{}/absent.db?timeout=5",
                                 "journal:{}/absent.log"])
def test_readers_never_create_the_storage_file_however_the_url_spells_it(tmp_path, url):
    """report, replay and fail-running open existing storages only; the file is found as SQLAlchemy parses the
    URL (a driver or a query string used to slip past a prefix check and leave an empty database behind)."""
    from budgetnas.storage import storage_file
    from budgetnas.studyio import open_existing_storage

    url = url.format(tmp_path)
    assert storage_file(url) == tmp_path / ("absent.log" if url.startswith("journal:") else "absent.db")
    with pytest.raises(StorageError, match="does not exist"):
        open_existing_storage(url)
    assert list(tmp_path.iterdir()) == []
