"""``budgetnas report``: one self-contained HTML report of a study (see budgetnas.report)."""

from __future__ import annotations

import argparse

from budgetnas.cli._common import add_storage_option, set_examples

HELP = "write one self-contained HTML report of a study (Pareto front, history, curves, feature maps)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help=HELP, description=HELP + ". Opens offline: plotly is inlined.")
    set_examples(parser,
                 'budgetnas report --out runs/report.html',
                 'budgetnas report --storage postgresql://user:pw@db/nas --study cnn-100k-shared --out report.html')
    add_storage_option(parser)
    parser.add_argument("--study", metavar="NAME", default=None,
                        help="study to report (default: the only study in the storage)")
    parser.add_argument("--out", metavar="FILE.html", default=None, help="where to write (default: STUDY-report.html)")
    parser.add_argument("--json", action="store_true", help="print {\"report\": PATH, ...} as one JSON document")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import print_json
    from budgetnas.report import write_report

    path = write_report(args.storage, args.study, args.out)
    if args.json:
        print_json({"report": str(path.resolve()), "bytes": path.stat().st_size})
    else:
        print(f"report written to {path.resolve()}")
    return 0
