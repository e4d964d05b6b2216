"""Journal files (``journal:PATH``): checked before use, never written after a torn record, repairable.

Optuna's ``JournalFileBackend`` appends one JSON record per line. A process killed while
writing (SIGKILL, power loss, a full disk) can leave a last line without its newline: a
*torn tail*. Optuna's reader skips such a tail, but its next append lands on the same
line, and the glued line is invalid JSON in the middle of the file: from then on every
read of the journal fails and every finished trial is out of reach. So budgetnas:

* checks the whole file in :func:`open_journal` before Optuna reads it: a torn tail or an
  unreadable line is a :class:`StorageError` (exit 2) naming the repair command, and
  random bytes are "not an Optuna journal"; nothing is written, so a refused call leaves
  the file byte-identical;
* refuses to append, under the journal's own lock, when the file does not end with a
  newline (a writer that died mid-record while this process was running);
* repairs on request (:func:`repair_journal`, ``python -m budgetnas.storage repair
  journal:PATH``): every complete record is kept (also one that a later append glued onto
  a torn one), the torn bytes are dropped, the result is replayed by Optuna before it
  replaces the file, and the original is first copied to ``PATH.torn-<time>``.

Reading a journal is as costly as Optuna's own replay (it parses every line), and is
done once per open.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import get_lock_file
from optuna.storages.journal._storage import JournalOperation

from budgetnas.errors import StorageError

_RECORD_START = b'{"op_code":'
_OP_CODES = frozenset(int(op) for op in JournalOperation)  # the operations this Optuna replays


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`check_journal` found: complete records, bad lines (1-based) and torn-tail bytes."""

    records: int
    bad_lines: tuple[int, ...]
    torn_bytes: int

    @property
    def healthy(self) -> bool:
        return not self.bad_lines and not self.torn_bytes


@dataclass(frozen=True)
class RepairResult:
    """A repaired journal: records kept, bytes dropped, and where the original was copied."""

    path: Path
    kept: int
    dropped_bytes: int
    dropped_lines: int  # whole lines that held no record (a torn tail not counted)
    backup: Path | None  # None: the file was healthy and left untouched


def _record(line: bytes) -> Any:
    """The record a line holds, or None (not UTF-8, not JSON, or not an Optuna operation)."""
    try:
        value = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    if not isinstance(value, dict) or value.get("op_code") not in _OP_CODES:  # Optuna asserts on an unknown one
        return None
    return value


def check_journal(path: Path) -> JournalCheck:
    """Scan a journal file without changing it."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # the bytes after the last newline (b"" in a healthy file)
    bad = tuple(i for i, line in enumerate(lines, start=1) if _record(line) is None)
    return JournalCheck(records=len(lines) - len(bad), bad_lines=bad, torn_bytes=len(tail))


def repair_command(path: Path) -> str:
    return f"python -m budgetnas.storage repair journal:{path}"


def problem(path: Path, check: JournalCheck) -> str | None:
    """The one-line message for an unhealthy journal (None when it is healthy)."""
    if check.healthy:
        return None
    if check.records == 0 and (check.bad_lines or check.torn_bytes):
        return (f"journal file {path} is not an Optuna journal (no line holds a journal record); "
                "pass the journal a search wrote, or a new file name")
    if check.bad_lines:
        where = ", ".join(map(str, check.bad_lines[:5])) + (" ..." if len(check.bad_lines) > 5 else "")
        what = f"unreadable line(s) {where}"
    else:
        what = f"a partial last record ({check.torn_bytes} bytes without a newline: a process died while writing it)"
    return (f"journal file {path} has {what}; nothing is written to it until it is repaired with: "
            f"{repair_command(path)} (keeps all {check.records} complete records, backs up the original first)")


class GuardedBackend(JournalFileBackend):
    """Optuna's file backend, except that it never appends to a file that ends mid-record."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock):  # the lock Optuna's own append takes
            with open(self._file_path, "rb") as reader:
                size = reader.seek(0, os.SEEK_END)
                torn = size > 0 and reader.seek(size - 1) >= 0 and reader.read(1) != b"\n"
            if torn:
                path = Path(self._file_path)
                raise StorageError(problem(path, check_journal(path)) or f"journal file {path} ends mid-record")
            with open(self._file_path, "ab") as writer:
                writer.write(text.encode("utf-8"))
                writer.flush()
                os.fsync(writer.fileno())


def open_journal(path: Path, check_parent: Callable[[Path], None]) -> Any:
    """A ``JournalStorage`` on ``path`` after checking the file (see the module docstring)."""
    check_parent(path)
    try:
        if path.exists():
            if not path.is_file():
                raise StorageError(f"journal path {path} is not a regular file")
            message = problem(path, check_journal(path))
            if message:
                raise StorageError(message)
        return JournalStorage(GuardedBackend(str(path)))  # replays every record already in the file
    except StorageError:
        raise
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError) as exc:
        # Every line is a JSON operation (checked above) but one lacks what Optuna needs to replay it: a file
        # made or edited by something else. Nothing was written to it.
        raise StorageError(f"journal file {path} holds a record Optuna cannot replay ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:120]}); it is not a study's journal as Optuna wrote it: "
                           "point --storage at another file") from None
    except OSError as exc:
        raise StorageError(f"cannot open journal file {path}: {exc.strerror or exc}") from None


def repair_journal(path: str | Path) -> RepairResult:
    """Keep every complete record of a journal, drop torn bytes; back up the original first.

    Run it when no worker writes the journal (it takes the journal's lock, so a running
    writer waits, but a worker that read the torn file keeps its own view). A healthy file is
    left untouched (``backup`` is None). Raises StorageError, leaving the file as it was, if
    the file is missing, holds no record at all, or the kept records do not replay.
    """
    path = Path(str(path).removeprefix("journal:")).expanduser()
    if not path.is_file():
        raise StorageError(f"journal file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    with get_lock_file(JournalFileSymlinkLock(str(path))):
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()
        kept: list[bytes] = []
        dropped_lines = 0
        for line, is_tail in [(line, False) for line in lines] + ([(tail, True)] if tail else []):
            if _record(line) is not None:
                kept.append(line)  # also a last record that lost only its newline
                continue
            start = line.rfind(_RECORD_START)  # a whole record appended after a torn one
            if start > 0 and _record(line[start:]) is not None:
                kept.append(line[start:])
            elif not is_tail:  # a torn tail is counted in bytes only
                dropped_lines += 1
        if not kept:
            raise StorageError(f"journal file {path} holds no journal record; nothing to keep")
        body = b"\n".join(kept) + b"\n"
        if body == data:
            return RepairResult(path, kept=len(kept), dropped_bytes=0, dropped_lines=0, backup=None)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        fresh = path.with_name(f"{path.name}.repair-{stamp}")
        fresh.write_bytes(body)
        try:
            _replay(fresh)
        except Exception as exc:
            fresh.unlink()
            raise StorageError(f"journal file {path}: the complete records do not replay "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); left unchanged") from None
        backup = path.with_name(f"{path.name}.torn-{stamp}")
        shutil.copy2(path, backup)
        os.replace(fresh, path)
    return RepairResult(path, kept=len(kept), dropped_bytes=len(data) - len(body), dropped_lines=dropped_lines,
                        backup=backup)


def _replay(path: Path) -> None:
    """Load every study and trial of a journal through Optuna (raises if it cannot)."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    for study in storage.get_all_studies():
        storage.get_all_trials(study._study_id, deepcopy=False)
