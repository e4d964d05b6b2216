"""pytest plugin: at the end of a run, list the budgetnas modules the run never imported in-process.

    PYTHONPATH=.:tools python -m pytest -m "not slow and not cli" -p touched

Used to check that the quick tier still touches every module (subprocess runs do not count).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "budgetnas"


def pytest_terminal_summary(terminalreporter):
    names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
             for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    missing = sorted(n for n in names if n not in sys.modules)
    terminalreporter.write_line(f"budgetnas modules not imported in-process: {', '.join(missing) or 'none'}")
