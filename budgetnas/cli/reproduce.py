"""``budgetnas reproduce``: train the paper's models and write our numbers next to the paper's."""

from __future__ import annotations

import argparse
import shlex
import sys

from budgetnas.cli._common import add_device_options, set_examples

HELP = "train the paper's models and compare with its tables (Markdown + HTML)"


def register(subparsers: argparse._SubParsersAction) -> None:
    from budgetnas.cli.train import add_epoch_options

    parser = subparsers.add_parser("reproduce", help=HELP, description=HELP + ". NAME is a paper config "
                                   "(fcn-50k, fcn-100k, fcn-100k-default, fcn-200k, cnn-10k, cnn-20k, cnn-50k, "
                                   "cnn-100k; add +bn for the batch-norm variant) or a CONFIG.toml path.")
    set_examples(parser,
                 'budgetnas reproduce',
                 'budgetnas reproduce fcn-100k cnn-10k --threads 1',
                 'budgetnas reproduce cnn-100k cnn-100k+bn --epochs 5 --out runs/reproduce-bn')
    parser.add_argument("names", nargs="*", metavar="NAME", help="configs to train (default: all paper configs)")
    add_epoch_options(parser)
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="override every recipe's seed")
    parser.add_argument("--out", metavar="DIR", default="runs/reproduce",
                        help="where RESULTS.md, results.html, results.json and models/ go (default runs/reproduce)")
    add_device_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import format_table, progress
    from budgetnas.cli.train import check_epoch_options
    from budgetnas.reproduce import AS_COUNTED_NOTE, COMPARISON_COLUMNS, reproduce

    check_epoch_options(args)
    command = "budgetnas " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    done = reproduce(args.names, epochs=args.epochs, device=args.device, precision=args.precision, out=args.out,
                     subset=args.subset, data_root=args.data_root, dataset=args.dataset, seed=args.seed,
                     threads=args.threads, command=command, progress=progress)
    print(format_table(done.rows, COMPARISON_COLUMNS))
    print()
    print(AS_COUNTED_NOTE)
    if args.subset:
        print(f"Trained on a {args.subset}-image slice: a smoke run, not comparable to the paper.")
    print(f"Tables: {done.files['markdown']} and {done.files['html']}")
    return 0
