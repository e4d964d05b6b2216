"""Optuna storages from URLs: SQLite by default, any RDB URL, or ``journal:PATH``.

* ``None`` -> an SQLite file ``budgetnas.db`` in the current folder (printed by the CLI so
  the user finds it again).
* ``sqlite:///PATH.db``, ``postgresql://...`` and other SQLAlchemy URLs -> ``RDBStorage``.
* ``journal:PATH`` -> ``JournalStorage(JournalFileBackend(PATH))``, safe for several local
  processes (SQLite is not, see ``shared/optuna-facts.md``).

Malformed or unreachable storages raise :class:`StorageError` with a one-line message that
never echoes a password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from budgetnas.errors import StorageError

DEFAULT_DB = "budgetnas.db"
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


def default_storage_url() -> str:
    return f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def normalise_url(url: str | None) -> str:
    """The URL to use: the default SQLite file, or ``url`` checked for a known form."""
    if url is None or url == "":
        return default_storage_url()
    if url.startswith("journal:"):
        if not url[len("journal:"):]:
            raise StorageError("journal storage needs a file path: journal:PATH")
        return url
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme not in _RDB_SCHEMES:
        raise StorageError(f"storage URL {redact(url)!r} is not understood; use sqlite:///PATH.db, "
                           "postgresql://USER:PASSWORD@HOST/DB or journal:PATH")
    if scheme == "postgres":  # SQLAlchemy 2 only knows the long spelling
        url = "postgresql" + url[len("postgres"):]
    return url


def open_storage(url: str | None, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, retry_stale: bool = True) -> Any:
    """Open (and create if needed) the Optuna storage that ``url`` names.

    ``heartbeat_interval`` turns on Optuna's heartbeat for RDB storages so that trials of a
    killed worker are failed after ``grace_period`` and (``retry_stale``) re-queued.
    """
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url = normalise_url(url)
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):]).expanduser()
        _check_parent(path)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal file {path}: {exc.strerror or exc}") from None
    if url.startswith("sqlite:///"):
        _check_parent(Path(url[len("sqlite:///"):]))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several readers (dashboard, report) may open the file while a search writes.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30.0}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    if heartbeat_interval and not url.startswith("sqlite"):
        kwargs["heartbeat_interval"] = heartbeat_interval
        kwargs["grace_period"] = grace_period or 2 * heartbeat_interval
        if retry_stale:
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    try:
        return RDBStorage(url, **kwargs)
    except ImportError as exc:
        raise StorageError(f"the database driver for {redact(url).split(':')[0]} is missing ({exc.name}); "
                           "install it, e.g. pip install 'budgetnas[postgres]'") from None
    except Exception as exc:  # sqlalchemy.exc.* carry the URL, with password, in their text
        reason = redact(" ".join(str(getattr(exc, "orig", None) or exc).split()))[:200]
        raise StorageError(f"cannot open storage {redact(url)}: {reason}") from None


def _check_parent(path: Path) -> None:
    parent = path.expanduser().resolve().parent
    if not parent.is_dir():
        raise StorageError(f"folder {parent} for the storage file does not exist; create it or choose another path")
