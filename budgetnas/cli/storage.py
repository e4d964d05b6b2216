"""``budgetnas storage ACTION``: maintenance of a study's storage.

``fail-running`` is the command-line face of :func:`budgetnas.storage.fail_running_trials`,
for journal storages after a worker was killed (RDB storages do this themselves through the
heartbeat). ``repair`` is that of :func:`budgetnas.storage.repair`, for a journal file whose
last record a crash cut in half (see :mod:`budgetnas.journal`). Each action is one subparser
and one small function. ``python -m budgetnas.storage ACTION ...`` still works: it forwards here.
"""

from __future__ import annotations

import argparse

from budgetnas.cli._common import parse_duration, set_examples

HELP = ("storage maintenance: fail-running (trials left RUNNING by killed workers on a journal file), "
        "repair (a journal file torn by a crash)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("storage", help=HELP, description=HELP + ".")
    set_examples(parser, "budgetnas storage fail-running --storage journal:runs/s.log --study cnn-100k-fashion-mnist")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    fail = actions.add_parser("fail-running", help="mark trials left RUNNING by killed workers FAIL and queue "
                              "them again (for journal storages, which have no heartbeat)",
                              description="Mark trials left RUNNING by killed workers FAIL and queue them "
                                          "again (for journal storages, which have no heartbeat).")
    set_examples(fail, "budgetnas storage fail-running --storage journal:runs/s.log --study cnn-100k-fashion-mnist",
                 "budgetnas storage fail-running --storage journal:runs/s.log --study NAME --older-than 2h")
    fail.add_argument("--storage", required=True, metavar="URL")
    fail.add_argument("--study", required=True, metavar="NAME")
    fail.add_argument("--older-than", default=None, metavar="DURATION",
                      help="only trials started longer ago than this (90s, 30m, 2h): safe while workers run")
    fail.add_argument("--no-retry", action="store_true", help="do not queue the failed trials again")
    fail.set_defaults(handler=fail_running)
    fix = actions.add_parser("repair", help="keep every complete record of a journal file torn by a crash "
                             "(the original is kept as PATH.torn-TIME)",
                             description="Keep every complete record of a journal file whose end a crash cut "
                                         "(the original is kept beside it as PATH.torn-TIME).")
    set_examples(fix, "budgetnas storage repair journal:runs/s.log")
    fix.add_argument("url", nargs="?", default=None, metavar="journal:PATH", help="the journal (same as --storage)")
    fix.add_argument("--storage", default=None, metavar="URL")
    fix.set_defaults(handler=repair)


def fail_running(args: argparse.Namespace) -> int:
    from budgetnas.storage import fail_running_trials
    from budgetnas.studyio import open_existing_storage

    older = parse_duration(args.older_than) if args.older_than else None
    storage, _ = open_existing_storage(args.storage)  # never a new, empty storage file
    numbers = fail_running_trials(storage, args.study, older_than=older, retry=not args.no_retry)
    queued = "" if args.no_retry else "; each is queued again and runs with the next search"
    print(f"failed {len(numbers)} running trial(s){': ' + ', '.join(map(str, numbers)) if numbers else ''}"
          + (queued if numbers else ""))
    return 0


def repair(args: argparse.Namespace) -> int:
    from budgetnas.errors import UsageError
    from budgetnas.storage import repair as repair_storage

    url = args.storage or args.url
    if not url:
        raise UsageError("give the journal to repair: budgetnas storage repair journal:PATH")
    print(repair_storage(url))
    return 0
