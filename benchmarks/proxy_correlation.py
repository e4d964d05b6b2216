"""Do zero-cost proxies rank budgetnas candidates like their trained validation accuracy does?

Samples candidates from the real search space (``budgetnas.space.sample_spec`` with Optuna's
RandomSampler, ``fit`` parameterisation), scores each with every proxy of
:mod:`budgetnas.proxies` at initialisation (the very init the trainer then trains: same seed),
trains it briefly with :func:`budgetnas.trainer.train` and reports Kendall's tau and
Spearman's rho of each proxy (and of two free baselines: parameter count and mult-adds) with
the validation accuracy, per family and budget and pooled per family.

The trained accuracy is a SHORT-TRAINING stand-in for "accuracy after training": ``--epochs``
epochs on a stratified ``--subset`` slice of Fashion-MNIST (90/10 train/validation split of
the slice), the paper's recipe (Adam 1e-3) except batch size ``--batch-size``. Candidates
above ``--max-mult-adds`` (batch 512) are skipped before training and resampled, as a search
with a compute cap would reject them.

It also answers "does a proxy pre-screen pay?" on the same candidates, without more training:
for random groups of ``--group`` candidates of one family and budget it compares the mean
accuracy of the candidate a proxy picks with that of a random pick and of the group's best.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/proxy_correlation.py \
        --out benchmarks/results/proxy_correlation

Writes ``OUT.json`` (every candidate, every score) and ``OUT.md`` (the tables). Validation only:
the test split is never loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

BASELINES = ("params", "mult_adds")
CHANCE = 0.2  # candidates below this val accuracy did not learn (10 classes): "trained" rows leave them out


def parse_plan(text: str) -> list[tuple[str, int, int]]:
    """'cnn:10k:32,fcn:50k:40' -> [(family, budget, candidates), ...]."""
    from budgetnas.budget import parse_budget

    plan = []
    for item in text.split(","):
        family, budget, n = item.split(":")
        plan.append((family, parse_budget(budget), int(n)))
    return plan


def measure(args: argparse.Namespace) -> dict:
    import optuna
    import torch

    from budgetnas import proxies
    from budgetnas.counting import PAPER_BATCH, count_mult_adds, count_params
    from budgetnas.data import load_dataset
    from budgetnas.space import sample_spec
    from budgetnas.trainer import PAPER_RECIPE, train

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_dataset(args.dataset, subset=args.subset)
    x, y = proxies.proxy_batch(data.train.x, data.train.y, data.mean, data.std, seed=args.seed)
    recipe = dataclasses.replace(PAPER_RECIPE, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    rows: list[dict] = []
    skipped: dict[str, int] = {}
    spent = 0.0
    if args.resume and Path(args.out).with_suffix(".json").exists():
        # continue an interrupted run: keep its rows and replay its random draws (same seeds) before going on
        previous = json.loads(Path(args.out).with_suffix(".json").read_text())
        planned = {(family, budget) for family, budget, _ in parse_plan(args.plan)}
        rows = [r for r in previous["rows"] if (r["family"], r["budget"]) in planned]
        skipped, spent = previous["skipped_over_mult_adds_cap"], previous["seconds"]
    started = time.perf_counter() - spent
    for family, budget, n in parse_plan(args.plan):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed + budget))
        key = f"{family}:{budget}"
        skipped.setdefault(key, 0)
        for _ in range(skipped[key] + sum(1 for r in rows if r["family"] == family and r["budget"] == budget)):
            sample_spec(study.ask(), family, budget, data.input_shape, data.num_classes)
        while sum(1 for r in rows if r["family"] == family and r["budget"] == budget) < n:
            spec = sample_spec(study.ask(), family, budget, data.input_shape, data.num_classes)
            mult_adds = count_mult_adds(spec, data.input_shape, data.num_classes, batch=1) * PAPER_BATCH
            if mult_adds > args.max_mult_adds:
                skipped[key] += 1
                continue
            row = {"family": family, "budget": budget, "spec": spec.to_dict(), "describe": spec.describe(),
                   "params": count_params(spec, data.input_shape, data.num_classes), "mult_adds": mult_adds}
            for name in proxies.PROXIES:
                t0 = time.perf_counter()
                row[name] = proxies.score(name, spec, x, y, data.num_classes, seed=args.seed)
                row[f"{name}_seconds"] = time.perf_counter() - t0
            result = train(spec, data, recipe, device="cpu", precision="fp32")
            row["val_accuracy"] = result.val_accuracy
            row["train_seconds"] = result.train_seconds
            rows.append(row)
            print(f"[{len(rows)}] {family} {budget:,} val {result.val_accuracy:.4f} {result.train_seconds:.1f}s "
                  f"{spec.describe()}", file=sys.stderr, flush=True)
            _write(args, rows, skipped, time.perf_counter() - started)
    return {"rows": rows}


def correlations(rows: list[dict]) -> list[dict]:
    """Kendall tau and Spearman rho of each score with val accuracy, per (family, budget) and per family."""
    from scipy.stats import kendalltau, spearmanr

    from budgetnas.proxies import PROXIES

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        for which in ("all", "trained"):
            if which == "trained" and r["val_accuracy"] < CHANCE:
                continue
            groups.setdefault((r["family"], f"{r['budget']:,}", which), []).append(r)
            if len({m["budget"] for m in rows if m["family"] == r["family"]}) > 1:
                groups.setdefault((r["family"], "all budgets", which), []).append(r)
    table = []
    for (family, budget, which), members in sorted(groups.items()):
        acc = np.array([m["val_accuracy"] for m in members])
        for name in (*PROXIES, *BASELINES):
            values = np.array([_finite(m[name]) for m in members], dtype=float)
            tau, tau_p = kendalltau(values, acc)
            rho, rho_p = spearmanr(values, acc)
            table.append({"family": family, "budget": budget, "candidates": which, "n": len(members), "score": name,
                          "kendall_tau": float(tau), "kendall_p": float(tau_p),
                          "spearman_rho": float(rho), "spearman_p": float(rho_p)})
    return table


def screening(rows: list[dict], group: int, draws: int = 2000, seed: int = 0) -> list[dict]:
    """Mean val accuracy of the proxy's pick of ``group`` random candidates vs a random pick and the best."""
    from budgetnas.proxies import PROXIES

    rng = np.random.default_rng(seed)
    out = []
    keys = sorted({(r["family"], r["budget"]) for r in rows})
    for family, budget in keys:
        members = [r for r in rows if r["family"] == family and r["budget"] == budget]
        if len(members) < group:
            continue
        acc = np.array([m["val_accuracy"] for m in members])
        picks = [rng.choice(len(members), group, replace=False) for _ in range(draws)]
        entry = {"family": family, "budget": f"{budget:,}", "group": group, "n": len(members),
                 "random_pick": float(np.mean([acc[p].mean() for p in picks])),
                 "best_of_group": float(np.mean([acc[p].max() for p in picks]))}
        for name in (*PROXIES, *BASELINES):
            values = np.array([_finite(m[name]) for m in members], dtype=float)
            entry[name] = float(np.mean([acc[p[np.argmax(values[p])]] for p in picks]))
        out.append(entry)
    return out


def _finite(value: float) -> float:
    return -1e300 if value == -math.inf else float(value)  # naswot's singular kernels rank lowest


def markdown(document: dict) -> str:
    from budgetnas.proxies import PROXIES

    s = document["settings"]
    lines = ["# Zero-cost proxies vs trained validation accuracy", "",
             f"Command: `{document['command']}`", "",
             *(["Its rows were measured by these commands (run in parallel, each stopped by hand when the "
                "CPU time allotted to this measurement was used; a group's random draws are seeded, so a "
                "part resumed with `--resume` continues the same sequence): "
                + "; ".join(f"`{c}`" for c in document["parts"]), ""] if document.get("parts") else []),
             f"Measured {document['date']} on {document['machine']} (a shared, loaded 2-core machine: other "
             f"jobs ran at the same time; timings are indicative only). Wall time {document['seconds'] / 60:.1f} min (summed over parts).", "",
             f"**How the accuracies were obtained (a short-training proxy of 'accuracy after training'):** "
             f"{s['epochs']} epochs on a stratified {s['subset']:,}-image slice of {s['dataset']} "
             f"(90/10 train/validation split of the slice: validation accuracy on {int(s['subset'] * 0.1)} images), "
             f"the paper's recipe (Adam 1e-3, no decay) with batch size {s['batch_size']}, seed {s['seed']}, fp32, "
             f"one CPU thread. Candidates: the search space's `fit` parameterisation sampled by Optuna's "
             f"RandomSampler; candidates above {s['max_mult_adds']:,} mult-adds (batch 512) were skipped "
             f"before training and resampled "
             f"(skipped per family:budget: {document['skipped_over_mult_adds_cap']}). Proxies on one batch of {s['proxy_batch']} training images, "
             "the same initialisation (seed) that was then trained.", "",
             "## Rank correlation with validation accuracy", "",
             f"`candidates`: `all` sampled candidates, or only those that `trained` (val accuracy >= {CHANCE}; "
             "the others, e.g. with a 1-unit layer, stayed near chance and are easy to rank).", "",
             "| family | budget | candidates | n | score | Kendall tau | p | Spearman rho | p |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in document["correlations"]:
        lines.append(f"| {r['family']} | {r['budget']} | {r['candidates']} | {r['n']} | {r['score']} | "
                     f"{r['kendall_tau']:+.3f} | "
                     f"{r['kendall_p']:.3g} | {r['spearman_rho']:+.3f} | {r['spearman_p']:.3g} |")
    lines += ["", "`params` and `mult_adds` are free baselines (no proxy needed). Within one budget the `fit` "
              "parameterisation fills 50-100% of it, so `params` mostly measures the sampled fill.", "",
              "## Does a pre-screen pay? (same candidates, no extra training)", "",
              "Mean validation accuracy of the candidate picked out of a random group, 2,000 random groups "
              "per row: by each score (highest), at random, and the group's true best.", "",
              "| family | budget | group | random pick | " + " | ".join(f"{p} pick" for p in (*PROXIES, *BASELINES))
              + " | best of group |",
              "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in (*PROXIES, *BASELINES)) + " | ---: |"]
    for e in document["screening"]:
        lines.append(f"| {e['family']} | {e['budget']} | {e['group']} | {e['random_pick']:.4f} | "
                     + " | ".join(f"{e[p]:.4f}" for p in (*PROXIES, *BASELINES)) + f" | {e['best_of_group']:.4f} |")
    seconds = {p: np.mean([r[f"{p}_seconds"] for r in document["rows"]]) for p in PROXIES}
    lines += ["", "Mean seconds per score (one thread, loaded machine): "
              + ", ".join(f"{p} {v:.2f}s" for p, v in seconds.items())
              + f"; mean training seconds per candidate {np.mean([r['train_seconds'] for r in document['rows']]):.1f}s.",
              ""]
    return "\n".join(lines)


def _write(args: argparse.Namespace, rows: list[dict], skipped: dict[str, int], seconds: float,
           parts: list[list[str]] | None = None) -> None:
    from budgetnas.proxies import PROXY_BATCH
    from budgetnas.reproduce import machine_description

    present = {f"{r['family']}:{r['budget']}" for r in rows}
    skipped = {key: count for key, count in skipped.items() if key in present}
    document = {"command": "python benchmarks/proxy_correlation.py " + shlex.join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine_description(),
                "seconds": seconds,
                "parts": [command for part in parts for command in part] if parts else None,
                "skipped_over_mult_adds_cap": skipped,
                "settings": {"dataset": args.dataset, "subset": args.subset, "epochs": args.epochs,
                             "batch_size": args.batch_size, "seed": args.seed, "plan": args.plan,
                             "max_mult_adds": args.max_mult_adds, "proxy_batch": PROXY_BATCH, "group": args.group},
                "correlations": correlations(rows) if len(rows) >= 3 else [],
                "screening": screening(rows, args.group),
                "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    if document["correlations"]:
        out.with_suffix(".md").write_text(markdown(document))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", default="cnn:10k:32,cnn:100k:32,fcn:50k:40,fcn:200k:40",
                        help="FAMILY:BUDGET:CANDIDATES,... (default: 64 CNNs, 80 FCNs)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-mult-adds", type=int, default=5_000_000_000)
    parser.add_argument("--group", type=int, default=4, help="group size of the pre-screen analysis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/proxy_correlation")
    parser.add_argument("--resume", action="store_true", help="continue the run whose OUT.json exists")
    parser.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                        help="write OUT from the rows of these earlier outputs (runs of one plan split in parts)")
    args = parser.parse_args(argv)
    if args.combine:
        parts = [json.loads(Path(p).read_text()) for p in args.combine]
        rows = [row for part in parts for row in part["rows"]]
        skipped = {k: v for part in parts for k, v in part["skipped_over_mult_adds_cap"].items()}
        _write(args, rows, skipped, sum(part["seconds"] for part in parts),
               parts=[part.get("parts") or [part["command"]] for part in parts])
        return 0
    measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
