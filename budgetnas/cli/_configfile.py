"""``--config FILE.toml``: a command's options read from a file, flags on the command line winning.

Why defaults: the file's values become the parser's defaults before the command line is
parsed, so a flag given on the command line overrides its key exactly as it would override
a built-in default, and argparse's own conversions (``type=``) apply to both. Keys are the
long option names, with dashes or underscores (``max-mult-adds`` or ``max_mult_adds``);
repeatable options take a list, switches such as ``--early-stop/--no-early-stop`` a boolean.
Values are checked the way the flag would be, so a bad file is one ``error:`` line (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from budgetnas.errors import UsageError

SKIP = {"help", "config", "json", "quiet"}  # options that describe this invocation, not the search


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """{key: action} for every long option a file may set (key = the option name without dashes)."""
    result = {}
    for action in parser._actions:  # argparse offers no public list of a parser's options
        longs = [s[2:] for s in action.option_strings if s.startswith("--") and not s.startswith("--no-")]
        if longs and longs[0] not in SKIP:
            result[longs[0]] = action
    return result


def config_path(argv: Sequence[str]) -> str | None:
    """The FILE of ``--config FILE`` / ``--config=FILE`` in ``argv`` (the last one wins, as for any flag)."""
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    return path


def file_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The file's values as {dest: value}, checked against the options of ``parser``."""
    from budgetnas.config import read_toml

    data = read_toml(path, "--config file")
    actions = option_actions(parser)
    values: dict[str, Any] = {}
    for key, value in data.items():
        action = actions.get(key.replace("_", "-"))
        if action is None:
            raise UsageError(f"--config {path}: unknown key {key!r}; allowed: {', '.join(sorted(actions))}")
        values[action.dest] = _checked(action, key, value, path)
    return values


def _checked(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    where = f"--config {path}: {key}"
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_one(action, where, item) for item in items]
    return _one(action, where, value)


def _one(action: argparse.Action, where: str, value: Any) -> Any:
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise UsageError(f"{where} must be a single value, got {value!r}")
    if action.type is not None:
        try:  # as text, exactly as the flag would be given: 1.5 is then refused by an integer option, not cut to 1
            value = action.type(str(value))
        except (TypeError, ValueError):
            raise UsageError(f"{where}: invalid value {value!r}") from None
    elif not isinstance(value, str):
        value = str(value)
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def apply(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Make the values of ``--config FILE`` in ``argv`` the defaults of ``parser`` (before it parses)."""
    path = config_path(argv)
    if path is None:
        return
    values = file_defaults(parser, path)
    for action in parser._actions:
        if action.dest in values:
            action.required = False  # e.g. --budget given by the file
    parser.set_defaults(**values)


def resolved(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """{key: value} of every option the file could set, as this run resolved them (for --json)."""
    return {key: getattr(args, action.dest) for key, action in sorted(option_actions(parser).items())}
