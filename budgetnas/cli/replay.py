"""``budgetnas replay``: retrain a trial of a study and test it (see budgetnas.replay)."""

from __future__ import annotations

import argparse

from budgetnas.cli._common import (add_device_options, add_json_option, add_seed_workers_option, add_seeds_option,
                                   add_storage_option,
                                   set_examples)
from budgetnas.recipe import AUGMENTS

HELP = "retrain the best (or a chosen) trial of a study and report its test accuracy"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help=HELP, description=HELP + ". Everything needed is read from "
                                   "the storage; artifacts (weights, spec.toml, metrics.json, learning curve, "
                                   "feature maps, torch.export model) go to --out.")
    set_examples(parser,
                 'budgetnas replay --trial best --epochs 20 --out runs/best',
                 'budgetnas replay --storage sqlite:///budgetnas.db --study cnn-100k-fashion-mnist --trial 16 --json',
                 'budgetnas replay --subset full --device cuda --precision fp32 --seed 1',
                 'budgetnas replay --trial best --epochs 20 --subset full --seeds 0,1')
    add_storage_option(parser)
    parser.add_argument("--study", metavar="NAME", default=None,
                        help="study to read (default: the only study in the storage)")
    parser.add_argument("--trial", default="best", metavar="best|N",
                        help="'best' (highest validation accuracy on the Pareto front, ties to fewer "
                             "parameters; the default) or a trial number")
    parser.add_argument("--epochs", type=int, default=None, metavar="E", help="override the trial's epochs")
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="override the trial's seed")
    add_seeds_option(parser, "each into --out/seed-S")
    add_seed_workers_option(parser, "--workers", "--seeds")
    parser.add_argument("--augment", default=None, choices=AUGMENTS,
                        help="override the trial's training-image augmentation")
    add_device_options(parser)
    parser.add_argument("--out", metavar="DIR", default=None, help="artifact folder (default: runs/STUDY-trialN)")
    parser.add_argument("--data-root", metavar="DIR", default=None,
                        help="folder with datasets in torchvision's layout (default: $BUDGETNAS_DATA, else ./data)")
    parser.add_argument("--subset", default="study", metavar="N|full|study",
                        help="training images: 'study' (the search's slice, default), 'full', or a number; "
                             "test accuracy is always on the whole test split")
    parser.add_argument("--images", default=None, metavar="I,J,...",
                        help="test-image indices for feature maps (default: the first image of each class)")
    parser.add_argument("--no-record", action="store_true", help="do not store the result in the study")
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli._common import parse_seeds, print_json, progress
    from budgetnas.errors import UsageError
    from budgetnas.replay import parse_trial, replay

    subset: int | str | None = {"study": "study", "full": None}.get(args.subset, args.subset)
    if isinstance(subset, str) and subset != "study":
        if not subset.isdigit():
            raise UsageError(f"--subset must be 'study', 'full' or a number of images, got {args.subset!r}")
        subset = int(subset)
    images = None
    if args.images:
        try:
            images = [int(part) for part in args.images.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--images must be comma-separated test-image indices, got {args.images!r}") from None
    options = dict(epochs=args.epochs, augment=args.augment, device=args.device, precision=args.precision,
                   out=args.out, data_root=args.data_root, subset=subset, images=images, record=not args.no_record,
                   progress=progress)
    if args.seeds is not None:
        return _run_seeds(args, parse_seeds(args.seeds, args.seed), options)
    result = replay(args.storage, args.study, parse_trial(args.trial), seed=args.seed, **options)
    if args.json:
        print_json(result.to_dict())
        return 0
    from budgetnas.counting import human_count
    from budgetnas.fmt import percent, plural

    m = result.metrics
    print(f"study {result.study}, {result.reason}")
    print(f"  test accuracy   {percent(m['test_accuracy'])}   ({m['test_images']} test images)")
    print(f"  val accuracy    {percent(m['val_accuracy'])}   (search recorded {percent(m['search_val_accuracy'])})")
    print(f"  parameters      {m['params']:,}")
    print(f"  mult-adds       {human_count(m['mult_adds'])} (batch 512)")
    print(f"  train time      {m['train_seconds']:.1f}s on {m['device']} ({m['precision']}), "
          f"{plural(m['epochs_run'], 'epoch')}")
    print(f"  lowest loss     {m['lowest_loss']:.4f} in epoch {m['lowest_loss_epoch']}")
    print(f"  artifacts       {result.out}")
    return 0


def _run_seeds(args: argparse.Namespace, seeds: list[int], options: dict) -> int:
    from budgetnas.cli._common import print_json, seed_table
    from budgetnas.replay import parse_trial, replay_seeds

    runs = replay_seeds(args.storage, args.study, parse_trial(args.trial), seeds=seeds, workers=args.workers,
                        **options)
    if args.json:
        print_json(runs.to_dict())
        return 0
    print(f"study {runs.study}, {runs.reason}")
    print(seed_table([r.metrics for r in runs.results], runs.summary(), [str(r.out) for r in runs.results]))
    return 0
