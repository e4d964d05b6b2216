"""How many small trials should train at once on one GPU? Aggregate images/second for K = 1, 2, 4, 8.

A tiny candidate (CNN-10K: 9,192 parameters) cannot fill a datacenter GPU: each step is a
handful of small kernels, so the GPU mostly waits for Python to launch them. Several trials
at once (separate processes, as ``budgetnas search --workers K`` runs them) can overlap their
launches. For each K this starts K processes that each load the data and warm up (not
timed), then releases them together and times until the last one has trained ``--epochs``
epochs; it reports the aggregate training images per second of the K runs and the speedup
over K = 1. ``--workers auto`` stays one process on a GPU until this has been measured.

    python benchmarks/gpu_concurrency.py --device cuda --levels 1,2,4,8 --out gpu-results/concurrency.json
    python benchmarks/gpu_concurrency.py --device cpu --levels 1,2 --subset 1000 --epochs 1   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One trial: load, warm up, say 'ready', wait for 'go' on stdin, train, print one JSON line."""
    sys.path.insert(0, str(REPO))
    import torch

    from budgetnas.data import load_dataset
    from budgetnas.reproduce import resolve_config
    from budgetnas.trainer import train

    if args.device == "cpu":
        torch.set_num_threads(1)
    config = resolve_config(args.config)
    data = load_dataset(config.dataset, args.data_root, subset=args.subset)
    recipe = replace(config.recipe, epochs=args.epochs, seed=args.index)
    train(config.spec, data, replace(recipe, epochs=1), device=args.device, precision=args.precision)  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    result = train(config.spec, data, recipe, device=args.device, precision=args.precision)
    print(json.dumps({"index": args.index, "seconds": time.perf_counter() - start, "images": len(data.train) * args.epochs,
                      "precision": result.precision, "val_accuracy": result.val_accuracy}), flush=True)


def level(k: int, args: argparse.Namespace) -> dict:
    """K trials at once: the wall time from releasing them together until the last one finished."""
    command = [sys.executable, __file__, "--child", "--config", args.config, "--device", args.device,
               "--precision", args.precision, "--epochs", str(args.epochs)]
    if args.subset:
        command += ["--subset", str(args.subset)]
    if args.data_root:
        command += ["--data-root", args.data_root]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([*command, "--index", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env) for i in range(k)]
    for p in processes:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.wait()
            raise SystemExit(f"a trial process failed before training (exit {p.returncode})")
    start = time.perf_counter()
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    runs = [json.loads(p.stdout.readline()) for p in processes]
    wall = time.perf_counter() - start
    for p in processes:
        p.wait()
    images = sum(r["images"] for r in runs)
    return {"concurrent": k, "wall_seconds": wall, "images": images, "images_per_second": images / wall,
            "per_trial_seconds": [r["seconds"] for r in runs], "precision": runs[0]["precision"],
            "val_accuracies": [r["val_accuracy"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cnn-10k", help="the small candidate (paper name or TOML)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--levels", default="1,2,4,8", help="trials at once, comma-separated")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per trial")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = []
    for k in (int(x) for x in args.levels.split(",")):
        results.append(level(k, args))
        print(f"{k} at once: {results[-1]['images_per_second']:,.0f} img/s in all "
              f"({results[-1]['wall_seconds']:.1f}s)", file=sys.stderr, flush=True)
    base = results[0]["images_per_second"]
    for r in results:
        r["speedup_over_first"] = r["images_per_second"] / base
    best = max(results, key=lambda r: r["images_per_second"])
    document = {"config": args.config, "device": args.device, "epochs": args.epochs, "subset": args.subset,
                "levels": results, "fastest_concurrency": best["concurrent"]}
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
