"""``budgetnas count``: exact parameters and mult-adds of a config, without training."""

from __future__ import annotations

import argparse

from budgetnas.cli._common import add_json_option, set_examples

HELP = "exact trainable parameters and mult-adds of a config (no training)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("count", help=HELP, description=HELP + ". CONFIG is a TOML path or a paper "
                                   "config name such as cnn-100k (add +bn for its batch-norm variant).")
    set_examples(parser,
                 'budgetnas count cnn-100k',
                 'budgetnas count cnn-100k+bn --json',
                 'budgetnas count runs/best/spec.toml --batch 1')
    parser.add_argument("config", metavar="CONFIG", help="CONFIG.toml, or a paper name (cnn-100k, fcn-100k+bn, ...)")
    parser.add_argument("--batch", type=int, default=512, metavar="B",
                        help="batch size for the mult-adds, as torchinfo reports them (default 512, the paper's)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="only needed for npz datasets: where to read them")
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import format_table, print_json
    from budgetnas.reproduce import count_config, format_count, format_mult_adds, resolve_config

    counted = count_config(resolve_config(args.config), batch=args.batch, data_root=args.data_root)
    if args.json:
        print_json(counted)
        return 0
    paper = counted["paper"]
    row = {"model": counted["name"], "spec": counted["spec"], "params": format_count(counted["params"]),
           "mult_adds": f"{format_mult_adds(counted['mult_adds'])} ({counted['mult_adds']:,})"}
    columns = [("model", "Model"), ("spec", "Spec"), ("params", "Weights"),
               ("mult_adds", f"Mult-adds (batch {counted['batch']})")]
    if paper:
        row["paper"] = f"{format_count(paper.get('weights'))} / {paper.get('mult_adds', '-')}"
        columns.append(("paper", "Paper weights / mult-adds"))
    print(format_table([row], columns))
    return 0
