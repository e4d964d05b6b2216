"""Exception types that carry a user-facing message.

The CLI turns :class:`UsageError` into exit code 2 and :class:`RunFailure` into exit
code 1, printing only ``error: <message>`` (no traceback). Library users get ordinary
exceptions with the same one-line messages.
"""

from __future__ import annotations


class BudgetNASError(Exception):
    """Base class of every error budgetnas raises on purpose."""


class UsageError(BudgetNASError, ValueError):
    """Bad input: a malformed option, file or setting. The message says what to do."""


class FieldError(UsageError):
    """Bad value of named settings (``fields``), e.g. ``FieldError("trials must be at least 1, got 0", "trials")``.

    The library names its own fields; the CLI spells each as the flag that sets it
    (:func:`budgetnas.cli.flag_message`: ``--trials must be at least 1, got 0``).
    """

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


class DataError(UsageError):
    """A dataset that is missing, cannot be downloaded, or has the wrong shape."""


class StorageError(UsageError):
    """A storage URL that is malformed or unreachable, or a study that does not fit."""


class RunFailure(BudgetNASError, RuntimeError):
    """A failure while running (e.g. a diverged training run)."""


class TrainingDiverged(RunFailure):
    """The training loss became NaN or infinite."""


class StorageUnavailable(RunFailure):
    """The database went away while running and did not come back within the retry window."""
