"""The ``budgetnas`` command line: parses, calls the library, prints.

Each subcommand lives in its own module of this package with two functions:
``register(subparsers)`` (argparse only; no heavy imports, so ``--help`` is instant) and
the handler it installs with ``set_defaults(handler=...)``, which returns an exit code.

Exit codes (as the README and ``budgetnas --help`` state): 0 success, 2 bad input (one ``error:`` line on
stderr, no traceback), 1 a failure while running, 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import textwrap

from budgetnas.errors import RunFailure, UsageError

COMMANDS = ("search", "dashboard", "replay", "report", "count", "train", "reproduce", "bench", "sweep", "storage")

EPILOG = textwrap.dedent("""\
    examples:
      budgetnas search --budget 100k --family cnn --trials 30 --epochs 3
      budgetnas dashboard
      budgetnas replay --trial best --out runs/best
      budgetnas reproduce cnn-100k --epochs 20

    Data: --data-root or $BUDGETNAS_DATA (torchvision layout). Exit codes: 0 ok, 2 bad input,
    1 failure while running, 130 interrupted (the study stays resumable).""")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if getattr(self, "reads_config_file", False) and args is not None:
            from budgetnas.cli import _configfile

            try:
                _configfile.apply(self, args)  # --config FILE: its values become defaults, flags still win
            except UsageError as exc:
                _fail(exc, 2)
                raise SystemExit(2) from None
        return super().parse_known_args(args, namespace)


def build_parser() -> ArgumentParser:
    from budgetnas import __version__

    parser = ArgumentParser(prog="budgetnas", description="Neural architecture search under an exact "
                            "parameter budget.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"budgetnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"budgetnas.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"budgetnas.cli.{name}":
                continue  # command not built yet; tests/test_cli_basics.py requires every COMMANDS entry
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        _fail(flag_message(exc), 2)
        return 2
    except RunFailure as exc:
        _fail(exc, 1)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except PermissionError as exc:
        _fail(f"permission denied: {exc.filename or exc}; choose a writable location", 2)
        return 2
    except Exception as exc:  # a bug: one line unless debugging is asked for
        if os.environ.get("BUDGETNAS_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with BUDGETNAS_DEBUG=1 for a traceback)", 1)
        return 1


def flag_message(exc: UsageError) -> str:
    """The message of ``exc`` with each field it names (:class:`~budgetnas.errors.FieldError`) spelled as
    its flag: ``max_mult_adds must be positive`` -> ``--max-mult-adds must be positive``."""
    text = str(exc)
    for name in getattr(exc, "fields", ()):
        text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", "--" + name.replace("_", "-"), text, count=1)
    return text


def _fail(message: object, code: int) -> None:
    text = " ".join(str(message).split())  # always exactly one line
    sys.stderr.write(f"error: {text}\n")
