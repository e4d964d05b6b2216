"""Does a search option find a better accuracy/runtime front in the same wall-clock time?

Runs two searches side by side (two processes, one thread each, so both see the same machine
load) with identical settings except the option under test, each for the same wall-clock
budget, then compares the Pareto fronts of the trials each finished within that budget by
2-D hypervolume (validation accuracy above ``--ref-accuracy`` x training seconds below a
reference shared by both; larger is better).

    python benchmarks/early_stopping.py --minutes 8                      # --early-stop vs --no-early-stop
    python benchmarks/early_stopping.py --vary parameterisation --minutes 8   # fit vs direct
    python benchmarks/early_stopping.py --vary pruner --minutes 2 --seed 1    # --pruner front vs sha

Everything runs on the validation split; the test split is never loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

VARIANTS = {
    "early_stop": {"early-stop": {"early_stop": True}, "no-early-stop": {"early_stop": False}},
    "parameterisation": {"fit": {"parameterisation": "fit"}, "direct": {"parameterisation": "direct"}},
    "pruner": {"front": {"pruner": "front"}, "sha": {"pruner": "sha"}},  # issue 13: front rule vs rung rule
}


def run_variant(args: argparse.Namespace) -> None:
    """Child process: one search with the variant's settings."""
    import dataclasses

    import torch

    from budgetnas.search import SearchConfig, run_search
    from budgetnas.trainer import PAPER_RECIPE

    torch.set_num_threads(1)
    overrides = VARIANTS[args.vary][args.variant]
    config = SearchConfig(budget=args.budget, family=args.family, dataset=args.dataset, subset=args.subset,
                          trials=None, timeout=args.minutes * 60, epochs=args.epochs, device="cpu",
                          precision="fp32", storage=f"sqlite:///{args.workdir}/{args.variant}.db",
                          study=args.variant, seed=args.seed,
                          recipe=dataclasses.replace(PAPER_RECIPE, batch_size=args.batch_size), **overrides)
    run_search(config, progress=lambda m: print(f"[{args.variant}] {m}", file=sys.stderr, flush=True))


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (accuracy up, seconds down) points, sorted by seconds."""
    result: list[tuple[float, float]] = []
    for acc, secs in sorted(points, key=lambda p: (p[1], -p[0])):
        if not result or acc > result[-1][0]:
            result.append((acc, secs))
    return result


def hypervolume(points: list[tuple[float, float]], ref_accuracy: float, ref_seconds: float) -> float:
    """Area dominated by ``points`` and bounded by (ref_accuracy, ref_seconds)."""
    area, best = 0.0, ref_accuracy
    staircase = [p for p in front(points) if p[0] > ref_accuracy and p[1] < ref_seconds]
    for i, (acc, secs) in enumerate(staircase):
        right = staircase[i + 1][1] if i + 1 < len(staircase) else ref_seconds
        best = max(best, acc)
        area += (best - ref_accuracy) * (right - secs)
    return area


def analyse(args: argparse.Namespace, names: list[str]) -> dict:
    import optuna
    from optuna.trial import TrialState

    results = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{args.workdir}/{name}.db")
        trials = [t for t in study.trials if t.datetime_start is not None]
        start = min(t.datetime_start for t in trials)
        limit = start + timedelta(minutes=args.minutes)
        within = [t for t in trials if t.datetime_complete is not None and t.datetime_complete <= limit]
        complete = [t for t in within if t.state == TrialState.COMPLETE]
        results[name] = {
            "finished": len(within), "complete": len(complete),
            "stopped_early": sum(1 for t in within if t.state == TrialState.PRUNED and "rejected" not in t.user_attrs),
            "rejected": sum(1 for t in within if "rejected" in t.user_attrs),
            "epochs_trained": sum(len(t.user_attrs.get("val_accuracy_curve", [])) for t in within),
            "points": [(t.values[0], t.values[1]) for t in complete],
        }
    ref_seconds = 1.1 * max((p[1] for r in results.values() for p in r["points"]), default=1.0)
    for r in results.values():
        r["front"] = front(r.pop("points"))
        r["best_accuracy"] = max((p[0] for p in r["front"]), default=None)
        r["hypervolume"] = hypervolume(r["front"], args.ref_accuracy, ref_seconds)
    return {"settings": {k: v for k, v in vars(args).items() if k not in ("variant", "out")},
            "reference": {"accuracy": args.ref_accuracy, "seconds": ref_seconds}, "variants": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vary", choices=tuple(VARIANTS), default="early_stop")
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of each search")
    parser.add_argument("--budget", type=int, default=20_000)
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128,
                        help="smaller than the paper's 512 so a small slice still gives enough steps per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-accuracy", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help="folder for the two studies (default: a new temporary one)")
    args = parser.parse_args()
    if args.variant:
        return run_variant(args)

    names = list(VARIANTS[args.vary])
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="budgetnas-bench-")  # kept: the studies stay inspectable
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(f"studies in {args.workdir}", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--variant", name,
                                  "--workdir", args.workdir], env=env) for name in names]
    codes = [child.wait() for child in children]
    if any(codes):
        sys.exit(f"a search failed (exit codes {codes})")
    result = analyse(args, names)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
