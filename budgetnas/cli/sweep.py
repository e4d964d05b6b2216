"""``budgetnas sweep``: one search per budget, each best trial replayed, one report."""

from __future__ import annotations

import argparse
from typing import Any

from budgetnas.cli._common import add_seed_workers_option, parse_duration, print_json, progress

HELP = "search several budgets (one study each), replay each best trial, and report accuracy vs budget"
EXAMPLES = """examples:
  budgetnas sweep --family cnn --budgets 10k,20k,50k,100k,200k --trials 30 --epochs 3 --budget-timeout 45m
  budgetnas sweep --family fcn --budgets 50k,100k,200k --replay-epochs 20 --out runs/sweep-fcn
  budgetnas sweep --family cnn --budgets 50k --budget-timeout 40m --finalist-augments none,flip \
      --finalists-within-timeout       # 40 minutes for search and finalists together
  budgetnas sweep --family mbconv --budgets 20k --replay-seeds 0,1   # each winner replayed with two seeds"""


def register(subparsers: Any) -> None:
    from budgetnas.cli.search import add_search_options

    parser = subparsers.add_parser("sweep", help=HELP, description=HELP + ". Rerunning resumes every study.",
                                   epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", required=True, metavar="LIST", help="comma-separated budgets, e.g. 10k,20k,50k")
    parser.add_argument("--budget-timeout", default=None, metavar="DURATION",
                        help="wall-clock search time per budget: 90s, 30m, 2h")
    parser.add_argument("--finalists-within-timeout", action="store_true",
                        help="count the finalists' full-length runs in --budget-timeout: each search ends early "
                             "enough to leave them their time, estimated from the epochs it measured (with no "
                             "finalist runs to make, it keeps each trial within the time)")
    parser.add_argument("--replay-epochs", type=int, default=20, metavar="E",
                        help="epochs of each best trial's replay (default 20, the paper's)")
    parser.add_argument("--replay-seeds", default=None, metavar="S,T,...",
                        help="replay each winner once per seed (e.g. 0,1) and record every run and the mean in its "
                             "found config (default: once, with the search's --seed)")
    add_seed_workers_option(parser, "--replay-workers", "--replay-seeds")
    parser.add_argument("--replay-subset", type=int, default=None, metavar="N",
                        help="replay on a stratified N-image slice (quick looks; default: the whole training split)")
    parser.add_argument("--finalists", type=int, default=1, metavar="K",
                        help="retrain the K most accurate trials for --replay-epochs on all training images and "
                             "replay the one with the best validation accuracy (default 1: the search's best)")
    parser.add_argument("--finalist-augments", default=None, metavar="LIST|all",
                        help="train each finalist once per augmentation (e.g. none,shift; all: every one) and "
                             "replay the best on validation: short search runs under-rate augmentation (one "
                             "finalist and one augmentation: no run to rank, the replay trains with it)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where SWEEP.md, sweep.html and the replays go (default runs/sweep-FAMILY)")
    add_search_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from budgetnas.cli._common import parse_seeds
    from budgetnas.cli.search import config_from_args
    from budgetnas.errors import UsageError
    from budgetnas.sweep import SweepConfig, parse_augments, parse_budgets, run_sweep
    from budgetnas.processes import AUTO

    if args.study:
        raise UsageError("sweep names each budget's study itself (FAMILY-BUDGET-DATASET, e.g. cnn-10k-fashion-mnist); "
                         "leave --study out, or search one budget with `budgetnas search --study NAME`")
    if str(args.workers) not in ("1", AUTO):  # auto: as many as a sweep can use, which is one
        raise UsageError("sweep runs one worker; start extra `budgetnas search --budget B --study NAME` "
                         "workers on the same storage to parallelise a budget")
    budgets = parse_budgets(args.budgets)
    template = config_from_args(args, budget=budgets[0])
    config = SweepConfig(budgets=budgets, search=template,
                         budget_timeout=parse_duration(args.budget_timeout) if args.budget_timeout else None,
                         replay_epochs=args.replay_epochs, finalists=args.finalists,
                         finalist_augments=parse_augments(args.finalist_augments) if args.finalist_augments else (),
                         finalists_within_timeout=args.finalists_within_timeout, replay_subset=args.replay_subset,
                         replay_seeds=tuple(parse_seeds(args.replay_seeds, None, "--replay-seeds"))
                         if args.replay_seeds is not None else (),
                         replay_workers=args.replay_workers,  # checked by SweepConfig
                         out=Path(args.out) if args.out else Path("runs") / f"sweep-{template.family}")
    result = run_sweep(config, progress=progress)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(result.markdown.read_text(encoding="utf-8"))
    print(f"report: {result.html}")
    return 0
