"""Parameter budgets: parse ``100k``-style strings and format counts back."""

from __future__ import annotations

import re
from decimal import Decimal

from budgetnas.errors import UsageError

_ACCEPTED = "accepted forms: 100k, 100K, 0.1M, 100000, 100_000"
# ASCII digits only: Python's \d (and float()) would also take full-width or Arabic-Indic digits,
# which a budget typed by mistake in another script should not silently become.
_PATTERN = re.compile(r"^\s*(\d[\d_]*(?:\.\d+)?|\.\d+)\s*([kKmMgG]?)\s*$", re.ASCII)


def parse_budget(text: str | int, what: str = "budget") -> int:
    """Return the parameter budget that ``text`` names, as a positive integer.

    >>> parse_budget("100k"), parse_budget("0.1M"), parse_budget("100_000")
    (100000, 100000, 100000)
    """
    if isinstance(text, bool):
        raise UsageError(f"{what} {text!r} is not a number; {_ACCEPTED}")
    if isinstance(text, int):
        value = Decimal(text)
    else:
        match = _PATTERN.match(str(text))
        if not match or "__" in match.group(1) or match.group(1).endswith("_"):
            ascii_only = "" if str(text).isascii() else " (digits must be ASCII 0-9)"
            raise UsageError(f"{what} {text!r} is not understood{ascii_only}; {_ACCEPTED}")
        number, suffix = match.groups()
        scale = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}[suffix.lower()]
        value = Decimal(number.replace("_", "")) * scale  # exact: 1.005k is 1005, not 1004.9999
    if value != value.to_integral_value():
        raise UsageError(f"{what} {text!r} is not a whole number of parameters; {_ACCEPTED}")
    if value <= 0:
        raise UsageError(f"{what} {text!r} must be positive; {_ACCEPTED}")
    return int(value)


def format_budget(value: int) -> str:
    """Short human form of a budget: 100000 -> '100k', 1500000 -> '1.5M', 9192 -> '9192'."""
    if value >= 1_000_000 and value % 100_000 == 0:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000 and value % 1_000 == 0:
        return f"{value // 1_000}k"
    return str(value)
