"""``budgetnas dashboard``: serve optuna-dashboard on a study storage."""

from __future__ import annotations

import argparse
from typing import Any

from budgetnas.cli._common import add_storage_option, progress, set_examples

HELP = "browse studies in optuna-dashboard (trials, Pareto front, curves, user attributes)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboard", help=HELP, description=HELP + ". Stop it with Ctrl-C.")
    set_examples(parser,
                 'budgetnas dashboard',
                 'budgetnas dashboard --storage sqlite:///runs/budgetnas.db --port 8081',
                 'budgetnas dashboard --storage journal:runs/journal.log --host 0.0.0.0  # other machines see it')
    parser.add_argument("storage_arg", nargs="?", default=None, metavar="STORAGE",
                        help="storage URL (same as --storage)")
    add_storage_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.dashboard import dashboard_url, serve
    from budgetnas.errors import UsageError
    from budgetnas.storage import normalise_url, redact

    if args.storage_arg and args.storage and args.storage_arg != args.storage:
        raise UsageError("give the storage once: either as an argument or with --storage")
    storage = args.storage or args.storage_arg
    progress(f"storage: {redact(normalise_url(storage))}")
    try:
        serve(storage, host=args.host, port=args.port,
              on_ready=lambda: progress(f"dashboard: {dashboard_url(args.host, args.port)}  (Ctrl-C to stop)"))
    except KeyboardInterrupt:
        progress("dashboard stopped")
        return 130  # interrupted, as every command reports it
    return 0
