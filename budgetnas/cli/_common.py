"""Options and output helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from budgetnas.choices import DEVICES, PRECISIONS
from budgetnas.datasets import DATASETS
from budgetnas.errors import UsageError


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="fashion-mnist",
                        help=f"{', '.join(DATASETS)} or npz:PATH (default fashion-mnist)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="folder with datasets in torchvision's layout (default: $BUDGETNAS_DATA, else ./data)")
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="use a stratified sample of N training images (quick runs)")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where to train (default: auto = cuda, then mps, then cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bf16/mixed where the hardware has it natively, else fp32")


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="sqlite:///PATH.db, postgresql://..., or journal:PATH (default: ./budgetnas.db)")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout and nothing else")


def add_seeds_option(parser: argparse.ArgumentParser, each_into: str) -> None:
    parser.add_argument("--seeds", default=None, metavar="S,T,...",
                        help=f"train once per seed ({each_into}) and report every run and the mean: one run's "
                             "test accuracy carries a few tenths of a point of luck")


def add_seed_workers_option(parser: argparse.ArgumentParser, flag: str, seeds_flag: str) -> None:
    parser.add_argument(flag, default="1", metavar="N|auto",
                        help=f"with {seeds_flag}: train N seeds at once, each in its own process with its share "
                             "of the CPU cores (auto: one per seed, up to the cores; 1 on a GPU). Default 1: "
                             "each run's train time is then measured alone")


def parse_seeds(text: str, seed: int | None, flag: str = "--seeds") -> list[int]:
    """``--seeds 0,1`` (or ``flag``'s value) as a list (the library refuses empty, negative and repeated seeds)."""
    if seed is not None:
        raise UsageError("--seed and --seeds cannot be used together; give every seed to --seeds, e.g. --seeds 0,1")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise UsageError(f"{flag} must be comma-separated non-negative integers, e.g. 0,1, got {text!r}")
    return [int(part) for part in parts]


def seed_table(runs: list[dict[str, Any]], summary: dict[str, Any], places: list[str]) -> str:
    """Each seed's run (validation and test accuracy, training seconds, where it went) and the mean."""
    from budgetnas import tables
    from budgetnas.fmt import percent

    rows = [[str(m["seed"]), percent(m["val_accuracy"]), percent(m["test_accuracy"]), f"{m['train_seconds']:.1f}",
             place] for m, place in zip(runs, places)]
    rows.append(["mean", percent(summary["mean_val_accuracy"]), percent(summary["mean_test_accuracy"]),
                 f"{summary['mean_train_seconds']:.1f}", ""])
    return tables.text(["seed", "val acc", "test acc", "train s", "artifacts"], rows)


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
    """A plain-text table; ``columns`` is [(key, header)]. Values are str()-ed as given (see budgetnas.tables)."""
    from budgetnas import tables

    return tables.text(*tables.select(rows, columns))


def set_examples(parser: argparse.ArgumentParser, *lines: str) -> None:
    """Show ``lines`` as an 'examples:' section at the end of the command's --help."""
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def invocation() -> list[str]:
    """How the user's shell starts this very program again, for commands printed to be pasted.

    ``budgetnas`` only when that name on PATH is the running script; the script's absolute path
    when it is not on PATH (a venv that is not activated); ``python -m budgetnas`` with the running
    interpreter when started that way.
    """
    import os
    import shutil

    script = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if os.path.basename(script).startswith("budgetnas") and not script.endswith(".py"):
        on_path = shutil.which("budgetnas")
        if on_path and os.path.realpath(on_path) == os.path.realpath(script):
            return ["budgetnas"]
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "budgetnas"]


def family_path(family: str) -> str:
    """``PYTHONPATH=... `` to put before a printed command when the family is a plug-in module
    (``package.module:Name``) that was imported from outside the installed packages (from ``PYTHONPATH``
    or the current folder): pasted in another folder or shell, the command would not find it. The module's
    import root comes first, then this run's own ``PYTHONPATH`` entries, all absolute. Else ``""``."""
    import os
    import shlex
    import site
    from pathlib import Path

    module_name, colon, _ = family.partition(":")
    file = getattr(sys.modules.get(module_name), "__file__", None) if colon else None
    if not file:
        return ""
    path = Path(file).resolve()
    root = path.parents[module_name.count(".") + (path.name == "__init__.py")]  # the folder the import starts in
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root in installed:
        return ""
    entries = [str(root), *(str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return f"PYTHONPATH={shlex.quote(os.pathsep.join(dict.fromkeys(entries)))} "


def absolute_storage(url: str) -> str:
    """``url`` as a printed command names it: a relative SQLite or journal path made absolute (it works
    from any folder), and a URL holding a password replaced by ``$BUDGETNAS_STORAGE`` (storage.command_storage)."""
    import os

    from budgetnas.storage import command_storage

    url = command_storage(url)

    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix) and not os.path.isabs(url[len(prefix):]):
            return prefix + os.path.abspath(url[len(prefix):])
    return url


def data_options(dataset: str, data_root: str | None) -> list[str]:
    """``--dataset``/``--data-root`` as a printed command needs them (absolute; $BUDGETNAS_DATA spelled out)."""
    import os

    from budgetnas.data import resolve_root

    if dataset.startswith("npz:"):
        return ["--dataset", "npz:" + os.path.abspath(dataset[4:])]
    return ["--dataset", dataset, "--data-root", str(resolve_root(data_root).resolve())]
