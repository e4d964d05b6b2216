"""Optuna storages from URLs: SQLite by default, any RDB URL, or ``journal:PATH``.

* ``None`` -> an SQLite file ``budgetnas.db`` in the current folder (printed by the CLI so
  the user finds it again). One process at a time: SQLite has no row locks, so several
  writers get "database is locked" (Optuna's FAQ); :mod:`budgetnas.workers` refuses it.
* ``sqlite:///PATH.db``, ``postgresql://...``, ``mysql://...`` -> ``RDBStorage``. PostgreSQL
  (or MySQL) is the storage for many workers on many machines. A URL without a driver uses
  whichever driver is installed (SQLAlchemy 2.1 would insist on psycopg 3; budgetnas's
  ``postgres`` extra installs psycopg2).
* ``journal:PATH`` -> ``JournalStorage`` on a checked file, safe for several processes on
  one machine (file locks; not over NFS for many nodes). A file torn by a crash during a
  write is refused, never appended to, and repaired on request (:mod:`budgetnas.journal`,
  ``python -m budgetnas.storage repair journal:PATH``).

Crash safety. RDB storages are opened with Optuna's heartbeat: while a trial runs inside
``Study.optimize`` a thread records a heartbeat every ``interval`` seconds; a trial whose
heartbeat is older than ``grace_period`` (a worker killed with SIGKILL, a machine that lost
power) is marked FAIL the next time any worker of the study asks for a trial, and
``RetryHeartbeatStaleTrialCallback`` queues a WAITING copy with the same parameters, linked
to the original by the system attributes ``failed_trial`` (first failed trial's number) and
``retry_history``. The heartbeat does not work with ask/tell, only with ``optimize``.

Journal storage has no heartbeat: the trial of a killed worker stays RUNNING for ever. When
no worker of the study is alive any more (or with ``older_than`` for trials that cannot
still be running), :func:`fail_running_trials` marks them FAIL and queues the same retries
(command line: ``python -m budgetnas.storage fail-running --storage URL --study NAME``).

Malformed or unreachable storages raise :class:`StorageError` with a one-line message that
never echoes a password.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from budgetnas.errors import StorageError

DEFAULT_DB = "budgetnas.db"
JOURNAL_PREFIX = "journal:"

# Drivers tried, in order, for a URL that names none (``postgresql://``): (module, SQLAlchemy name).
_DRIVERS = {
    "postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000")),
    "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql"), ("mysql.connector", "mysqlconnector")),
}
_PIP_HINT = {"postgresql": "pip install 'budgetnas[postgres]' (psycopg2-binary)", "mysql": "pip install pymysql"}
_UNREACHABLE = re.compile(r"connection refused|could not translate host|name or service not known|timeout expired|"
                          r"timed out|no route to host|network is unreachable|can't connect|could not connect|"
                          r"no such file or directory", re.I)


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's heartbeat settings for RDB storages (seconds).

    ``interval`` is how often a running trial says it is alive; ``grace_period`` how long
    after its last heartbeat it is declared dead (keep it well above ``interval``: a
    heartbeat can be late when the machine is busy); ``max_retry`` how often one
    architecture is retried after its worker died (``None``: for ever).
    The defaults come from the environment (``BUDGETNAS_HEARTBEAT_INTERVAL``,
    ``BUDGETNAS_HEARTBEAT_GRACE``) so that tests and impatient users can shorten them
    without a new command-line option.
    """

    interval: int = 60
    grace_period: int = 180
    max_retry: int | None = 3

    @classmethod
    def from_env(cls) -> "Heartbeat":
        interval = _env_seconds("BUDGETNAS_HEARTBEAT_INTERVAL", cls.interval)
        grace = _env_seconds("BUDGETNAS_HEARTBEAT_GRACE", 3 * interval)  # 60 s -> 180 s by default
        return cls(interval=interval, grace_period=grace)


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    if not text.isdigit() or int(text) <= 0:
        raise StorageError(f"{name}={text!r} must be a positive whole number of seconds")
    return int(text)


def default_storage_url() -> str:
    return f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; also ``?password=...``.

    Every credential form is hidden: the password of the user-info part, and query or libpq
    keyword parameters that carry one (``password``, ``sslpassword``, ``passwd``, ``pwd``,
    ``secret``, ``token``, ``api_key``).
    """
    # Greedy up to the last '@', so a raw '@' in a password stays hidden; also "user:pw@host" without a scheme.
    text = re.sub(r"(://[^:/@\s]*):\S*@", r"\1:***@", url)
    if "://" not in url and not url.startswith(JOURNAL_PREFIX):
        text = re.sub(r"^([^:/@\s]*):\S*@", r"\1:***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)


_SECRET_PARAM = re.compile(r"(?i)((?:^|[?&;\s])[a-z_]*(?:password|passwd|pwd|secret|token|api_?key)\s*=)[^&;#\s]*")
STORAGE_ENV = "BUDGETNAS_STORAGE"  # the storage URL when --storage is left out (keeps a password off command lines)


def has_secret(url: str) -> bool:
    """Whether ``url`` holds a credential (or is an already redacted URL that held one)."""
    return redact(url) != url or "***" in url


def command_storage(url: str) -> str:
    """The storage as printed commands should name it: the URL, or ``$BUDGETNAS_STORAGE`` if it holds a secret.

    A redacted URL (``***``) cannot be pasted back; :func:`shell_join` writes the variable so
    that the shell expands it (``export BUDGETNAS_STORAGE=URL`` first, or keep it set).
    """
    return f"${STORAGE_ENV}" if has_secret(url) else url


def shell_join(parts: list[str]) -> str:
    """``shlex.join``, except that ``$BUDGETNAS_STORAGE`` stays an expandable ``"$BUDGETNAS_STORAGE"``."""
    import shlex

    return " ".join(f'"${STORAGE_ENV}"' if part == f"${STORAGE_ENV}" else shlex.quote(part) for part in parts)


def fail_running_command(url: str, study: str) -> str:
    """The command that fails a study's RUNNING trials and queues their retries (for a killed worker's trial on a
    storage without heartbeats), as a shell runs it: a storage with a password is read from the variable."""
    return shell_join(["budgetnas", "storage", "fail-running", "--storage", command_storage(url), "--study", study])


def storage_kind(url: str | None) -> str:
    """``"sqlite"``, ``"journal"``, or the RDB backend (``"postgresql"``, ``"mysql"``)."""
    url = normalise_url(url)
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    return _parse(url).get_backend_name()


def supports_many_workers(url: str | None) -> bool:
    """Whether several processes may write this storage at once (everything but SQLite)."""
    return storage_kind(url) != "sqlite"


def normalise_url(url: str | None) -> str:
    """The URL to use: ``$BUDGETNAS_STORAGE`` or the default SQLite file, or ``url`` checked for a known form.

    ``postgres://`` becomes ``postgresql://`` and a URL without a driver gets an installed
    one (``postgresql+psycopg2://``); raises StorageError for anything else.
    """
    if url is None:
        url = os.environ.get(STORAGE_ENV) or None
        if url is None:
            return default_storage_url()
    if not url.strip():
        raise StorageError("the storage URL is empty; give one (sqlite:///PATH.db, postgresql://..., journal:PATH) "
                           "or leave --storage out for ./budgetnas.db")
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX):].strip():
            raise StorageError("journal storage needs a file path: journal:PATH")
        return url
    if "://" not in url:
        raise StorageError(f"storage URL {redact(url)!r} is not understood; use sqlite:///PATH.db, "
                           "postgresql://USER:PASSWORD@HOST:PORT/DB or journal:PATH")
    if url.split("://", 1)[0].split("+", 1)[0].lower() == "postgres":  # SQLAlchemy knows only the long name
        url = "postgresql" + url[len("postgres"):]
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"storage URL {redact(url)!r} names the database {backend!r}; budgetnas supports "
                           "sqlite:///PATH.db, postgresql://..., mysql://... and journal:PATH")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StorageError("an in-memory SQLite database would be lost when the command ends; "
                           "use sqlite:///PATH.db")
    if parsed.host and "@" in parsed.host:
        raise StorageError(f"storage URL {redact(url)!r} has an '@' in its password; write it as %40")
    if "+" not in parsed.drivername and backend in _DRIVERS:
        parsed = parsed.set(drivername=f"{backend}+{_installed_driver(backend)}")
        url = parsed.render_as_string(hide_password=False)
    return url


def _parse(url: str) -> Any:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url)
    except Exception as exc:  # ArgumentError, or ValueError for a port that is not a number
        reason = "the port is not a number" if isinstance(exc, ValueError) else "it is not a database URL"
        raise StorageError(f"storage URL {redact(url)!r} is malformed ({reason}); expected "
                           "postgresql://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH.db or journal:PATH") from None


def _installed_driver(backend: str) -> str:
    for module, name in _DRIVERS[backend]:
        try:
            if importlib.util.find_spec(module) is not None:
                return name
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            continue
    raise StorageError(f"no {backend} database driver is installed; {_PIP_HINT[backend]}")


def where(url: str) -> str:
    """``host:port/db`` of an RDB URL (for messages; never the password)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    default_port = {"postgresql": 5432, "mysql": 3306}.get(parsed.get_backend_name(), "")
    return f"{parsed.host or 'localhost'}:{parsed.port or default_port}/{parsed.database or ''}"


def storage_file(url: str | None) -> Path | None:
    """The file a SQLite or journal storage keeps its study in (None for a database server).

    Parsed as SQLAlchemy parses the URL, so a driver (``sqlite+pysqlite:///``) or a query string
    (``?timeout=5``) names the same file the storage opens.
    """
    url = normalise_url(url)
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).expanduser()
    parsed = _parse(url)
    return Path(parsed.database).expanduser() if parsed.get_backend_name() == "sqlite" else None


def open_storage(url: str | None, *, heartbeat: Heartbeat | None = None, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> Any:
    """Open (and create if needed) the Optuna storage that ``url`` names.

    RDB storages get Optuna's heartbeat (``heartbeat``, default :meth:`Heartbeat.from_env`;
    ``heartbeat_interval``/``grace_period`` override single fields) so the trials of a
    killed worker are failed and retried; see the module docstring.
    Raises StorageError with one line (no password) if the URL is malformed, the driver is
    missing or the database cannot be reached.
    """
    from optuna.exceptions import ExperimentalWarning

    from budgetnas.resilience import RetryingRDBStorage, RetryStaleTrial

    url = normalise_url(url)
    if url.startswith(JOURNAL_PREFIX):
        from budgetnas.journal import open_journal

        return open_journal(Path(url[len(JOURNAL_PREFIX):]).expanduser(), _check_parent)
    backend = _parse(url).get_backend_name()
    if backend == "sqlite":
        _check_parent(storage_file(url))
        # Several readers (dashboard, report) may open the file while a search writes.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 30.0}}
    else:
        # Fail fast on a host that does not answer; survive connections the server dropped.
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    heartbeat = heartbeat or Heartbeat.from_env()
    if heartbeat_interval is not None:
        heartbeat = replace(heartbeat, interval=heartbeat_interval,
                            grace_period=grace_period or 3 * heartbeat_interval)
    elif grace_period is not None:
        heartbeat = replace(heartbeat, grace_period=grace_period)
    def connect() -> Any:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8; we rely on it knowingly
            warnings.simplefilter("ignore", ExperimentalWarning)
            # Retries lost connections, then fails with one line (budgetnas.resilience).
            return RetryingRDBStorage(url, where=where(url), engine_kwargs=engine_kwargs,
                                      heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                                      heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=heartbeat.max_retry))

    try:
        # Workers on several machines started at once all create Optuna's tables on an empty
        # database; PostgreSQL lets one win and fails the others ("duplicate key ...
        # pg_type_typname_nsp_index" / "already exists"). The tables then exist, so a later
        # attempt connects; the fifth attempt's error is final.
        for attempt in range(4):
            try:
                return connect()
            except Exception as exc:
                text = str(getattr(exc, "orig", None) or exc)
                if "already exists" not in text and "duplicate key" not in text:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return connect()
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or "its module"
        hint = _PIP_HINT.get(backend, "install it")
        raise StorageError(f"the database driver for {_parse(url).drivername} is not installed "
                           f"(no module {missing!r}); {hint}") from None
    except Exception as exc:  # sqlalchemy.exc.* carry the URL, with password, in their text
        raise StorageError(_connection_message(url, exc)) from None


def _connection_message(url: str, exc: BaseException) -> str:
    parsed = _parse(url)
    text = str(getattr(exc, "orig", None) or exc).strip()
    # The first line says what happened; libpq's next lines are generic advice.
    reason = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    reason = redact(reason)
    # psycopg2 puts the useful part after "failed:" ("connection to server at ... failed: Connection refused").
    short = re.sub(r"^(FATAL|ERROR):\s*", "", reason.split(" failed: ", 1)[-1])[:200]
    if parsed.get_backend_name() == "sqlite":
        return f"cannot open SQLite database {parsed.database}: {short}"
    if _UNREACHABLE.search(reason):
        return (f"cannot reach database at {where(url)} ({short}); is the server running and "
                "accepting TCP connections there, and are host and port right?")
    if "does not exist" in reason:
        return f"cannot open database at {where(url)}: {short}; create it first (e.g. createdb) or fix the URL"
    if "authentication" in reason or "password" in reason:
        return (f"cannot open database at {where(url)}: {short}; check the user name and the password "
                "(in the URL, or in $PGPASSWORD or ~/.pgpass to keep it out of the command line)")
    return f"cannot open database at {where(url)}: {short}"


def _check_parent(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise StorageError(f"folder {parent} for the storage file does not exist; create it or choose another path")


def fail_running_trials(storage: Any, study_name: str, *, older_than: float | None = None,
                        retry: bool = True) -> list[int]:
    """Mark RUNNING trials FAIL (and queue a retry of each); return their numbers.

    For storages without a heartbeat (journal files), where a killed worker's trial stays
    RUNNING for ever and would count against ``--trials``. Run it when no worker of the study
    is alive, or pass ``older_than`` (seconds since the trial started) larger than any trial
    can take, so that live workers' trials are left alone. The retry is the one Optuna's
    heartbeat would make: a WAITING trial with the same parameters and system attributes
    ``failed_trial``/``retry_history`` naming the original.
    """
    import copy

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from budgetnas.resilience import RetryStaleTrial

    if isinstance(storage, str) or storage is None:
        storage = open_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"study {study_name!r} is not in this storage") from None
    cutoff = datetime.now() - timedelta(seconds=older_than) if older_than is not None else None
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if cutoff is not None and trial.datetime_start is not None and trial.datetime_start > cutoff:
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # it finished (or another process failed it) meanwhile
            continue
        failed.append(trial.number)
        if retry:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                RetryStaleTrial()(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return failed


def repair(url: str) -> str:
    """Repair the journal file ``url`` names (see :mod:`budgetnas.journal`); returns a one-line summary."""
    from budgetnas.journal import repair_journal

    if not url.startswith(JOURNAL_PREFIX):
        raise StorageError(f"repair works on journal files (journal:PATH), not {redact(url)!r}")
    result = repair_journal(normalise_url(url)[len(JOURNAL_PREFIX):])
    if result.backup is None:
        return f"journal {result.path} is healthy ({result.kept} records); nothing changed"
    lost = f"{result.dropped_lines} unreadable line(s) and " if result.dropped_lines else ""
    return (f"repaired journal {result.path}: kept {result.kept} complete records, dropped {lost}"
            f"{result.dropped_bytes} bytes in all; the original is at {result.backup}")


if __name__ == "__main__":
    # ``python -m budgetnas.storage ACTION ...``: an alias of ``budgetnas storage ACTION ...`` (budgetnas/cli/storage.py),
    # kept for scripts written before the subcommand. An entry point, not a dependency of this module.
    import sys

    from budgetnas.cli import main

    raise SystemExit(main(["storage", *sys.argv[1:]]))
