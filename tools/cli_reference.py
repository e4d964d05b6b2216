"""Write the command-line reference, ``docs/cli.md``, from the parser itself.

    python tools/cli_reference.py            # print it
    python tools/cli_reference.py --write    # update docs/cli.md

The contract (``shared/cli.md``, kept outside this repository) names what may never be renamed;
this reference is everything the commands accept today, a superset of it, generated so that it
cannot drift from the code: tests/test_structure.py fails when it is stale.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = "100"

HEADER = """# budgetnas command-line reference

Generated from the parser by `python tools/cli_reference.py --write`; the test suite checks it is
current. The project's contract (the names that are never renamed) is a subset of this: every
command and option below that it does not name is an extension. Conventions (storage URLs,
`--json`, exit codes 0 / 1 / 2 / 130, progress on stderr) are the contract's. Environment:
`BUDGETNAS_DATA` (default `--data-root`), `BUDGETNAS_STORAGE` (default `--storage`; printed
commands read a password-holding URL from it), `BUDGETNAS_STORAGE_RETRY` (seconds a lost database
is retried, default 60), `BUDGETNAS_DEBUG=1` (a traceback instead of the one-line internal error).
"""


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
                found += [(f"{name} {n}", s) for n, s in _subparsers(sub)]
    return found


def reference() -> str:
    os.environ["COLUMNS"] = WIDTH  # argparse wraps usage lines to the terminal: fix it
    from budgetnas.cli import build_parser

    parts = [HEADER]
    for name, parser in _subparsers(build_parser()):
        parts.append(f"## budgetnas {name}\n")
        if parser.description:
            parts.append(" ".join(parser.description.split()) + "\n")
        parts.append("```\n" + parser.format_usage().strip().removeprefix("usage: ") + "\n```\n")
        rows = []
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or "-h" in action.option_strings:
                continue
            flags = ", ".join(f"`{o}`" for o in action.option_strings)
            help_text = " ".join((action.help or "").split()).replace("|", "\\|") % {"default": action.default}
            rows.append(f"| {flags} | {help_text} |")
        if rows:
            parts.append("| option | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    text = reference()
    if "--write" in sys.argv[1:]:
        OUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUT}")
    else:
        sys.stdout.write(text)
