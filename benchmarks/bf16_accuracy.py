"""Does bf16 autocast cost test accuracy? The same trainings in fp32 and bf16, same seeds, paired.

``--precision auto`` picks bf16 autocast on CPUs with native bf16 (``budgetnas.device``), because
it is faster there. That is only a good default if it does not cost accuracy: this script
trains each config once per seed in fp32 and once in bf16 (same seed: same initial weights,
same batch order, same split) for the paper's 20 epochs on the full training split, tests
each on the test split, and reports the paired difference bf16 - fp32 in percentage points.
The rule of issue 17: if bf16 costs more than 0.2 points (mean paired difference over the
seeds, for any config), ``auto`` must not pick it.

    # the full measurement (8 trainings of 20 epochs on 54,000 images; about an hour on 2 idle
    # cores, minutes with --jobs 8 on a 16-core machine):
    python benchmarks/bf16_accuracy.py --configs studies/paper/cnn-10k.toml,studies/paper/cnn-100k.toml \\
        --seeds 0,1 --epochs 20 --jobs 2 --out benchmarks/results/bf16_accuracy.json

    # a quick end-to-end check of the script (numbers mean nothing):
    python benchmarks/bf16_accuracy.py --epochs 1 --subset 2000 --out /tmp/bf16-check.json

Each training runs in its own process (``--jobs`` at a time, ``--threads`` intra-op threads
each), so runs on a busy machine slow fp32 and bf16 alike; accuracies do not depend on it.
This reports the test split on purpose: it is the replay/reproduce kind of measurement, not
a search, and nothing here selects anything on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")
MAX_COST_POINTS = 0.2  # issue 17: more than this and auto must not pick bf16


def train_one(job: tuple[str, int, str, int, int | None, int, str | None]) -> dict:
    """One training (runs in a worker process): config, seed, precision -> its test accuracy."""
    ref, seed, precision, epochs, subset, threads, data_root = job
    sys.path.insert(0, str(REPO))
    from budgetnas.reproduce import resolve_config, train_config

    config = resolve_config(ref)
    config = replace(config, recipe=replace(config.recipe, epochs=epochs, seed=seed))
    report = train_config(config, device="cpu", precision=precision, subset=subset, data_root=data_root,
                          threads=threads)
    m = report.metrics
    print(f"{config.name} seed {seed} {m['precision']}: test {100 * m['test_accuracy']:.2f}% "
          f"in {m['train_seconds']:.0f}s", file=sys.stderr, flush=True)
    return {"config": config.name, "seed": seed, "precision": m["precision"], "epochs": m["epochs_run"],
            "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"],
            "train_seconds": m["train_seconds"], "train_images": m["train_images"],
            "test_images": m["test_images"], "threads": m["threads"]}


def summarise(runs: list[dict]) -> dict:
    """Per config: mean test accuracy of each precision and the paired difference bf16 - fp32 (points)."""
    configs: dict[str, dict] = {}
    for name in dict.fromkeys(r["config"] for r in runs):
        by = {(r["seed"], r["precision"]): r["test_accuracy"] for r in runs if r["config"] == name}
        seeds = sorted({seed for seed, _ in by})
        diffs = [100 * (by[(s, "bf16")] - by[(s, "fp32")]) for s in seeds]
        configs[name] = {"seeds": seeds,
                         "fp32_mean": 100 * statistics.mean(by[(s, "fp32")] for s in seeds),
                         "bf16_mean": 100 * statistics.mean(by[(s, "bf16")] for s in seeds),
                         "paired_differences_points": diffs,
                         "mean_difference_points": statistics.mean(diffs)}
    worst = min(c["mean_difference_points"] for c in configs.values())
    return {"configs": configs, "worst_mean_difference_points": worst,
            "bf16_costs_more_than_threshold": worst < -MAX_COST_POINTS, "threshold_points": MAX_COST_POINTS}


def markdown(result: dict) -> str:
    settings = result["settings"]
    title = (f"bf16 vs fp32 test accuracy ({settings['epochs']} epoch(s), seeds {settings['seeds']}, "
             f"subset {settings['subset'] or 'none (full split)'}; native bf16: {result['machine']['native_bf16']})")
    lines = [title, "",
             "| config | fp32 mean | bf16 mean | bf16 - fp32 per seed (points) | mean |", "|---|---|---|---|---|"]
    for name, c in result["summary"]["configs"].items():
        per_seed = ", ".join(f"{d:+.2f}" for d in c["paired_differences_points"])
        lines.append(f"| {name} | {c['fp32_mean']:.2f}% | {c['bf16_mean']:.2f}% | {per_seed} | "
                     f"{c['mean_difference_points']:+.2f} |")
    verdict = ("costs more than" if result["summary"]["bf16_costs_more_than_threshold"] else "costs at most")
    worst = result["summary"]["worst_mean_difference_points"]
    lines += ["", f"bf16 {verdict} {MAX_COST_POINTS} points (worst config mean {worst:+.2f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="studies/paper/cnn-10k.toml,studies/paper/cnn-100k.toml",
                        help="comma-separated run configs (TOML paths or paper names)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per training (default 20, the paper's)")
    parser.add_argument("--subset", type=int, default=None, help="train on a stratified slice (checks only)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per training (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, each its own process (default 1)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (and a .md next to it)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    refs = [str(REPO / r) if r.endswith(".toml") and not Path(r).is_absolute() else r
            for r in args.configs.split(",")]
    jobs = [(ref, seed, precision, args.epochs, args.subset, args.threads, args.data_root)
            for ref in refs for seed in seeds for precision in PRECISIONS]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(train_one, jobs))

    sys.path.insert(0, str(REPO))
    import torch

    from budgetnas.device import cpu_has_native_bf16

    if any(r["precision"] != want for r, (_, _, want, *_) in zip(runs, jobs)):
        sys.exit("a run did not train in the precision it asked for")
    result = {"command": " ".join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__},
              "settings": {"configs": args.configs, "seeds": seeds, "epochs": args.epochs, "subset": args.subset,
                           "threads": args.threads, "jobs": args.jobs},
              "runs": runs, "summary": summarise(runs)}
    text = json.dumps(result, indent=2)
    print(text)
    print(markdown(result), file=sys.stderr)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
