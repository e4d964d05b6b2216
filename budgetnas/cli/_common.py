"""Options and output helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from budgetnas.errors import UsageError


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="fashion-mnist (default), mnist, kmnist, cifar10 or npz:PATH")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="folder with datasets in torchvision's layout (default: $BUDGETNAS_DATA, else ./data)")
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="use a stratified sample of N training images (quick runs)")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where to train (default: auto = cuda, then mps, then cpu)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16/mixed where the hardware has it natively, else fp32")


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="sqlite:///PATH.db, postgresql://..., or journal:PATH (default: ./budgetnas.db)")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout and nothing else")


def parse_duration(text: str) -> float:
    """'90' / '90s' / '30m' / '2h' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text), re.ASCII)  # ASCII digits, as budgets
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"duration {text!r} is not understood; use seconds or a suffix: 90s, 30m, 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def progress(message: str) -> None:
    """Progress and status go to stderr so that stdout stays parseable."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` is [(key, header)]. Values are str()-ed as given."""
    cells = [[str(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, (_, h) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def set_examples(parser: argparse.ArgumentParser, *lines: str) -> None:
    """Show ``lines`` as an 'examples:' section at the end of the command's --help."""
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
