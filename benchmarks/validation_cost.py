"""What ``--validation full`` costs a search trial: one epoch with 6,000 validation images against 2,000.

A search with ``--subset 20000`` trains each candidate on 18,000 images and validates it after
every epoch. ``--validation slice`` (the default) validates on the slice's own 2,000 images;
``--validation full`` on the whole 6,000-image validation split that replays use, a steadier
yardstick (standard error 0.37 instead of 0.64 points at 91% accuracy) for 4,000 more forward
passes per epoch. This script measures that price on the models the search found (the configs
in ``studies/found/searched/``), the way a trial runs them (``budgetnas.trainer.train``, one
thread, ``--precision auto``):

    python benchmarks/validation_cost.py --out benchmarks/results/validation_cost.json

For each config it trains one epoch on the same 18,000 images with each validation set, in
alternating order, ``--repeats`` times, and reports the median epoch seconds (training plus
validation, as a trial's epoch is timed) and their ratio, full over slice.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = ("cnn-10k", "cnn-20k", "cnn-50k", "cnn-100k")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="names in studies/found/searched/")
    parser.add_argument("--subset", type=int, default=20000, help="the search's slice (default 20000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1, as a search worker)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)

    import torch

    from budgetnas.config import load_config
    from budgetnas.data import load_dataset
    from budgetnas.device import cpu_has_native_bf16
    from budgetnas.trainer import train

    torch.set_num_threads(args.threads)
    data = {mode: load_dataset("fashion-mnist", args.data_root, subset=args.subset, validation=mode)
            for mode in ("slice", "full")}
    rows = []
    for name in args.configs.split(","):
        config = load_config(REPO / "studies" / "found" / "searched" / f"{name}.toml")
        recipe = replace(config.recipe, epochs=1)
        seconds: dict[str, list[float]] = {"slice": [], "full": []}
        for repeat in range(args.repeats):
            for mode in (("slice", "full") if repeat % 2 == 0 else ("full", "slice")):
                result = train(config.spec, data[mode], recipe, device="cpu", precision="auto")
                seconds[mode].append(result.epochs[0].seconds)
        row = {"config": name, "train_images": len(data["slice"].train),
               "val_images": {m: len(d.val) for m, d in data.items()},
               "epoch_seconds_median": {m: round(statistics.median(s), 2) for m, s in seconds.items()},
               "epoch_seconds": {m: [round(x, 2) for x in s] for m, s in seconds.items()}}
        median = row["epoch_seconds_median"]
        row["ratio_full_over_slice"] = round(median["full"] / median["slice"], 3)
        rows.append(row)
        print(f"{name}: epoch {row['epoch_seconds_median']['slice']:.2f} s with {len(data['slice'].val):,} validation "
              f"images, {row['epoch_seconds_median']['full']:.2f} s with {len(data['full'].val):,}: "
              f"x{row['ratio_full_over_slice']:.3f}", flush=True)
    document = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
                or platform.machine(), "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__,
                "threads": args.threads, "repeats": args.repeats, "rows": rows,
                "note": "median epoch seconds (training on the slice plus validation) of the found searched configs"}
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
