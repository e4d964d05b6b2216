"""``budgetnas train``: train one config (paper or user-written) and print a row in the paper's columns."""

from __future__ import annotations

import argparse
from pathlib import Path

from budgetnas.cli._common import (add_device_options, add_json_option, add_seed_workers_option, add_seeds_option,
                                   set_examples)
from budgetnas.datasets import DATASETS

HELP = "train a config and print weights, test accuracy, time, mult-adds and lowest loss"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help=HELP, description=HELP + ". CONFIG is a TOML path or a paper "
                                   "config name such as cnn-100k (add +bn for its batch-norm variant).")
    set_examples(parser,
                 'budgetnas train cnn-10k',
                 'budgetnas train studies/paper/fcn-100k.toml --epochs 5 --out runs/fcn-100k',
                 'budgetnas train runs/best/spec.toml --device cuda --json',
                 'budgetnas train studies/found/searched/cnn-50k.toml --seeds 0,1 --workers auto --out runs/cnn-50k')
    parser.add_argument("config", metavar="CONFIG", help="CONFIG.toml, or a paper name (cnn-100k, fcn-100k+bn, ...)")
    add_epoch_options(parser)
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="override the recipe's seed")
    add_seeds_option(parser, "each into --out/seed-S")
    add_seed_workers_option(parser, "--workers", "--seeds")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write model.pt, metrics.json and config.toml (with the results) here")
    add_device_options(parser)
    add_json_option(parser)
    parser.set_defaults(handler=run)


def add_epoch_options(parser: argparse.ArgumentParser) -> None:
    """--epochs and the data overrides shared by train and reproduce."""
    parser.add_argument("--epochs", type=int, default=None, metavar="E", help="override the recipe's epochs")
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help=f"override the config's dataset ({', '.join(DATASETS)}, npz:PATH)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="folder with datasets in torchvision's layout (default: $BUDGETNAS_DATA, else ./data)")
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="train on a stratified N-image slice (quick runs; not comparable to the paper)")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="CPU threads (default: one per core; 1 is faster while other jobs share the cores)")


def check_epoch_options(args: argparse.Namespace) -> None:
    """The options the library does not check before it loads data (--epochs and --seed: the recipe does)."""
    from budgetnas.limits import check_subset, check_threads

    check_threads(args.threads)
    check_subset(args.subset)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import format_table, parse_seeds, print_json, progress
    from budgetnas.families import describe as describe_spec
    from budgetnas.replay import check_writable
    from budgetnas.reproduce import PAPER_COLUMNS, override, paper_row, resolve_config, save_run, train_config

    check_epoch_options(args)
    seeds = parse_seeds(args.seeds, args.seed) if args.seeds is not None else None  # the library checks them
    if args.out:
        check_writable(Path(args.out))  # before training, not after
    config = override(resolve_config(args.config), epochs=args.epochs, seed=args.seed, dataset=args.dataset)
    from budgetnas.fmt import epoch_line, plural

    progress(f"training {config.name}: {describe_spec(config.spec)} on {config.dataset}, "
             f"{plural(config.recipe.epochs, 'epoch')}")

    def on_epoch(e) -> None:
        progress(f"  {epoch_line(e, config.recipe.epochs)}")

    if seeds is not None:
        return _run_seeds(args, config, seeds, on_epoch)

    report = train_config(config, device=args.device, precision=args.precision, subset=args.subset,
                          data_root=args.data_root, on_epoch=on_epoch, threads=args.threads)
    _caveats(report.metrics, args.subset)
    if args.out:
        paths = save_run(report, Path(args.out))
        progress(f"wrote {', '.join(str(p) for p in paths.values())}")
    if args.json:
        print_json({k: v for k, v in report.metrics.items() if k != "curve"} | {"curve": report.metrics["curve"]})
        return 0
    print(format_table([paper_row(report.metrics)], PAPER_COLUMNS))
    return 0


def _run_seeds(args: argparse.Namespace, config, seeds: list[int], on_epoch) -> int:
    from budgetnas.cli._common import print_json, progress, seed_table
    from budgetnas.families import describe as describe_spec
    from budgetnas.reproduce import train_config_seeds
    from budgetnas.runs import seed_summary

    reports = train_config_seeds(config, seeds, device=args.device, precision=args.precision, subset=args.subset,
                                 data_root=args.data_root, on_epoch=on_epoch, threads=args.threads,
                                 progress=progress, out=args.out, workers=args.workers)
    places = [str(Path(r.metrics["artifacts"]["config"]).parent) if args.out else "-" for r in reports]
    summary = seed_summary([r.metrics for r in reports])
    # every seed trains on the same slice and tests on the same images: one caveat, on the mean
    _caveats(reports[0].metrics | {"test_accuracy": summary["mean_test_accuracy"]}, args.subset)
    if args.json:
        print_json({"name": config.name, **summary, "runs": [r.metrics for r in reports]})
        return 0
    print(f"{config.name}: {describe_spec(config.spec)}")
    print(seed_table([r.metrics for r in reports], summary, places))
    return 0


def _caveats(metrics: dict, subset: int | None) -> None:
    """Say when a test figure is near chance or comes from a slice of the test split (--subset), so that it is
    not read like a replay's figure on all test images."""
    from budgetnas.cli._common import progress
    from budgetnas.fmt import chance_hint

    hint = chance_hint(metrics["test_accuracy"], metrics.get("num_classes") or 10, metrics["epochs_run"])
    if hint:
        progress(f"hint: {hint}")
    if subset:
        progress(f"note: --subset {subset}: trained on a slice and tested on {metrics.get('test_images', 0):,} "
                 "test images; not comparable to the paper or a replay")


