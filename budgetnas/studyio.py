"""Open an existing study for reading: replay, report and sweep start here.

Unlike the search, readers never create anything: a storage file that does not exist is
an error (not a new empty database), and ``study=None`` picks the only study in the
storage, or fails with a one-line list of the studies to choose from.
"""

from __future__ import annotations

import re
from typing import Any

from budgetnas.errors import StorageError
from budgetnas.storage import normalise_url, open_storage, redact, storage_file


def open_existing_storage(url: str | None) -> tuple[Any, str]:
    """(storage, normalised URL) of a storage that must already exist."""
    url = normalise_url(url)
    path = storage_file(url)
    if path is not None and not path.is_file():
        hint = "" if url != normalise_url(None) else " (the default; pass --storage to choose one)"
        raise StorageError(f"storage file {path} does not exist{hint}; run 'budgetnas search' first "
                           "or pass the --storage URL the search printed")
    return open_storage(url), url


def study_names(storage: Any) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def load_existing_study(storage_url: str | None = None, study_name: str | None = None) -> tuple[Any, str]:
    """(optuna.Study, normalised storage URL) of an existing study.

    ``study_name=None`` picks the only study in the storage; with none or several it raises
    :class:`StorageError` saying which names exist.
    """
    import optuna

    storage, url = open_existing_storage(storage_url)
    names = study_names(storage)
    if not names:
        raise StorageError(f"storage {redact(url)} has no studies; run 'budgetnas search' first")
    if study_name is None:
        if len(names) > 1:
            raise StorageError(f"storage {redact(url)} has {len(names)} studies; choose one with --study: "
                               + ", ".join(names))
        study_name = names[0]
    elif study_name not in names:
        raise StorageError(f"no study {study_name!r} in {redact(url)}; studies there: {', '.join(names)}")
    return optuna.load_study(study_name=study_name, storage=storage), url


def safe_name(study_name: str) -> str:
    """``study_name`` usable as one file name (default output paths are built from it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", study_name).strip("-.")[:100] or "study"  # file names stop at 255
