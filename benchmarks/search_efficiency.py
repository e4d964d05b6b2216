"""Which search finds the best model for the same CPU time? Variants side by side, anytime curves.

Every variant is the ordinary ``budgetnas.search.run_search`` (single objective, validation
accuracy) with a few :class:`~budgetnas.search.SearchConfig` fields changed (:data:`VARIANTS`).
Each (dataset, variant, seed) runs in its own fresh interpreter with one thread and the same
budget of *process CPU seconds* (not wall seconds: the machine may be shared and loaded, and CPU
time is what a search spends): a watcher thread interrupts the search like Ctrl-C the moment the
budget is used up, so the trial in training is discarded and no variant gets extra time. Then:

* the anytime curve: best validation accuracy of the completed trials against the CPU seconds
  at which each completed (interpolated from the watcher's samples);
* the best trial replayed (``budgetnas.replay``, same epochs and data slice as the search) and its
  test accuracy, the only time the test split is touched.

Variants: ``random`` (RandomSampler, no early stopping), ``tpe-median`` (TPE + Optuna's median
pruner, the single-objective default), ``tpe-sha`` (TPE + successive halving; only where the
branch has the ``pruner`` option of issue 13, else listed as unavailable), ``tpe-proxy`` (TPE +
median + the zero-cost pre-screen ``--proxy PROXY --proxy-screen 0.5``), ``tpe-transfer``
(TPE + median + ``--transfer-from`` the found configs of the neighbouring budgets), and
``tpe-halfway`` / ``tpe-transfer-halfway`` (the same with ``--pruner halfway``, one verdict at half
the epochs against every trial's median). Add a variant by adding a line to :data:`VARIANTS`.

Datasets: ``fashion-mnist`` (a stratified ``--subset``) and ``digits``, scikit-learn's bundled
8x8 handwritten digits (1,797 images, available offline; written once as an npz with a
stratified 1,500/297 train/test split; pixels 0..16 scaled to 0..255).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/search_efficiency.py --cpu-seconds 50 --seeds 0,1 \\
        --out benchmarks/results/search_efficiency

Writes OUT.json (every trial of every run), OUT.md (the table) and OUT.html (plotly anytime curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> SearchConfig overrides; a variant whose fields this branch lacks is reported as unavailable
VARIANTS: dict[str, dict] = {
    "random": {"sampler": "random", "early_stop": False},
    "tpe-median": {"sampler": "tpe", "early_stop": True},
    "tpe-sha": {"sampler": "tpe", "early_stop": True, "pruner": "sha"},
    "tpe-halfway": {"sampler": "tpe", "early_stop": True, "pruner": "halfway"},
    "tpe-transfer-halfway": {"sampler": "tpe", "early_stop": True, "pruner": "halfway", "transfer_from": "{transfer}"},
    "tpe-proxy": {"sampler": "tpe", "early_stop": True, "proxy": "{proxy}", "proxy_screen": 0.5},
    "tpe-transfer": {"sampler": "tpe", "early_stop": True, "transfer_from": "{transfer}"},
}

# dataset -> (budget, epochs, subset, batch size, found configs to transfer from). The transfer sources are
# the winners of searches without starting points (studies/found/searched), so no hand-designed model
# reaches the benchmark through them.
DATASETS = {
    "fashion-mnist": (20_000, 2, 3000, 128, ("studies/found/searched/cnn-10k.toml",
                                             "studies/found/searched/cnn-50k.toml")),
    "digits": (3_000, 3, None, 64, ("studies/found/searched/cnn-10k.toml", "studies/found/searched/cnn-20k.toml")),
}


def available(variant: str) -> bool:
    from budgetnas.search import SearchConfig

    names = {f.name for f in dataclasses.fields(SearchConfig)}
    return set(VARIANTS[variant]) <= names


def digits_npz(folder: Path) -> Path:
    """scikit-learn's 8x8 digits as an npz dataset (stratified 1,500 train / 297 test)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    path = folder / "digits.npz"
    if not path.exists():
        digits = load_digits()
        x = np.round(digits.images * (255 / 16)).astype(np.uint8)
        y = digits.target.astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=297, random_state=0, stratify=y)
        np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def config_for(args: argparse.Namespace, dataset: str, variant: str, seed: int, workdir: Path):
    from budgetnas.search import SearchConfig

    from budgetnas.trainer import PAPER_RECIPE

    budget, epochs, subset, batch, transfer = DATASETS[dataset]
    name = f"{dataset}-{variant}-s{seed}"
    overrides = {}
    for key, value in VARIANTS[variant].items():
        if value == "{proxy}":
            value = args.proxy
        elif value == "{transfer}":
            value = tuple(str(REPO / t) for t in transfer)
        overrides[key] = value
    data = f"npz:{digits_npz(workdir)}" if dataset == "digits" else dataset
    return SearchConfig(budget=budget, family="cnn", dataset=data, subset=subset, trials=None,
                        timeout=args.cpu_seconds * 20, epochs=epochs, device="cpu", precision="fp32",
                        storage=f"sqlite:///{workdir}/{name}.db", study=name, objectives=("accuracy",),
                        seed=seed, recipe=dataclasses.replace(PAPER_RECIPE, batch_size=batch), **overrides)


def child(args: argparse.Namespace) -> None:
    """One (dataset, variant, seed): the search under a CPU-second budget, then the replay of its best trial."""
    import torch

    from budgetnas.records import spec_of
    from budgetnas.replay import replay, trained_trials
    from budgetnas.search import SearchInterrupted, run_search

    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    config = config_for(args, args.dataset, args.variant, args.seed, workdir)
    samples: list[tuple[float, float]] = []  # (wall epoch seconds, process CPU seconds)
    start_cpu = time.process_time()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            used = time.process_time() - start_cpu
            samples.append((time.time(), used))
            if used >= args.cpu_seconds:
                os.kill(os.getpid(), signal.SIGINT)  # the search's own Ctrl-C path: the trial in training is dropped
                return
            time.sleep(0.25)

    lines: list[str] = []
    threading.Thread(target=watch, daemon=True).start()
    try:
        run_search(config, progress=lines.append)
    except SearchInterrupted:
        pass
    done.set()
    samples.append((time.time(), time.process_time() - start_cpu))

    import optuna

    study = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    trials = []
    for t in study.trials:
        if t.datetime_complete is None:
            continue
        finished = t.datetime_complete.timestamp()
        trials.append({"number": t.number, "state": t.state.name, "cpu_seconds": _cpu_at(samples, finished),
                       "val_accuracy": t.value if t.state.name == "COMPLETE" else None,
                       "enqueued": t.user_attrs.get("enqueued"), "rejected": t.user_attrs.get("rejected"),
                       "interrupted": "interrupted" in t.user_attrs,
                       "spec": spec_of(t).describe() if "spec" in t.user_attrs else None})
    result = {"dataset": args.dataset, "variant": args.variant, "seed": args.seed, "trials": trials,
              "cpu_seconds": samples[-1][1], "notes": [m for m in lines if m.startswith("transfer")]}
    complete = [t for t in trained_trials(study) if _cpu_at(samples, t.datetime_complete.timestamp())
                <= args.cpu_seconds]
    if complete:
        replayed = replay(config.storage_url, config.study_name, "best", device="cpu", precision="fp32",
                          out=workdir / f"{config.study_name}-replay", record=False, data_root=None)
        result.update(best_trial=replayed.trial, best_val_accuracy=max(t.value for t in complete),
                      replay_test_accuracy=replayed.metrics.get("test_accuracy"),
                      replay_val_accuracy=replayed.metrics.get("val_accuracy"),
                      best_spec=spec_of(study.trials[replayed.trial]).describe())
    Path(args.result).write_text(json.dumps(result))


def _cpu_at(samples: list[tuple[float, float]], wall: float) -> float:
    """CPU seconds used at wall time ``wall`` (linear between the watcher's samples)."""
    before = [s for s in samples if s[0] <= wall]
    after = [s for s in samples if s[0] >= wall]
    if not before:
        return 0.0
    if not after:
        return before[-1][1]
    (w0, c0), (w1, c1) = before[-1], after[0]
    return c0 if w1 == w0 else c0 + (c1 - c0) * (wall - w0) / (w1 - w0)


def anytime(trials: list[dict], horizon: float) -> list[tuple[float, float]]:
    """(CPU seconds, best val accuracy so far) at each improvement within ``horizon``."""
    points, best = [], None
    for t in sorted(trials, key=lambda t: t["cpu_seconds"]):
        if t["val_accuracy"] is None or t["cpu_seconds"] > horizon:
            continue
        if best is None or t["val_accuracy"] > best:
            best = t["val_accuracy"]
            points.append((t["cpu_seconds"], best))
    return points


def best_at(points: list[tuple[float, float]], seconds: float) -> float | None:
    values = [acc for cpu, acc in points if cpu <= seconds]
    return values[-1] if values else None


def report(document: dict, out: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs, horizon = document["runs"], document["settings"]["cpu_seconds"]
    checkpoints = [horizon * f for f in (0.25, 0.5, 1.0)]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    load = document.get("load_average")
    lines = ["# Search efficiency: variants side by side at equal CPU time", "",
             f"Command: `{document['command']}`", "",
             f"Measured {document['date']} on {document['machine']}"
             + (f", load average {load[0]:g} at the start and {load[1]:g} at the end" if load else "")
             + f"; {document['wall_seconds'] / 60:.0f} minutes of wall time. Each search got "
             f"{horizon:g} CPU seconds (one thread, process CPU time, enforced by interrupting the search: "
             "equal compute whatever else ran on the machine).", "",
             "Settings: single objective (validation accuracy), CNN family, `fit` parameterisation, paper recipe "
             "(Adam 1e-3) except the batch size. "
             + "; ".join(f"{d}: budget {b:,}, {e} epochs per trial, batch {bs}, "
                         + (f"stratified {s:,}-image slice" if s else "all 1,797 images (1,500 train+val / 297 test)")
                         for d, (b, e, s, bs, _) in DATASETS.items() if d in datasets)
             + f". Proxy pre-screen: `--proxy {document['settings']['proxy']} --proxy-screen 0.5`. Transfer: "
             "`--transfer-from` the winners of searches without starting points at the neighbouring budgets ("
             + "; ".join(f"{d}: {', '.join(Path(t).name for t in DATASETS[d][4])}" for d in datasets)
             + "; for digits this is a cross-dataset transfer of Fashion-MNIST winners' shapes). "
             "Replay: the best trial retrained with the search's epochs and data slice, test accuracy on the "
             "slice's test images.", "",
             "| dataset | variant | seeds | trials done (mean) | best val @" + " | best val @".join(
                 f"{c:g}s" for c in checkpoints) + " | replayed test acc (mean) | per seed (val / test) |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in checkpoints) + " | ---: | --- |"]
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for col, dataset in enumerate(datasets, start=1):
        for k, variant in enumerate(dict.fromkeys(r["variant"] for r in runs if r["dataset"] == dataset)):
            group = [r for r in runs if r["dataset"] == dataset and r["variant"] == variant]
            cells = []
            for c in checkpoints:
                values = [best_at(anytime(r["trials"], horizon), c) for r in group]
                values = [v for v in values if v is not None]
                cells.append(f"{sum(values) / len(values):.4f}" + ("" if len(values) == len(group) else
                                                                  f" ({len(values)}/{len(group)})")
                             if values else "-")
            tests = [r["replay_test_accuracy"] for r in group if r.get("replay_test_accuracy") is not None]
            done = sum(sum(1 for t in r["trials"] if t["cpu_seconds"] <= horizon and not t["interrupted"])
                       for r in group) / len(group)
            per_seed = ", ".join(f"s{r['seed']}: {r.get('best_val_accuracy', float('nan')):.4f} / "
                                 f"{r.get('replay_test_accuracy', float('nan')):.4f}" for r in group)
            lines.append(f"| {dataset} | {variant} | {len(group)} | {done:.1f} | " + " | ".join(cells)
                         + f" | {sum(tests) / len(tests):.4f} | {per_seed} |" if tests else
                         f"| {dataset} | {variant} | {len(group)} | {done:.1f} | " + " | ".join(cells) + " | - | - |")
            for i, r in enumerate(group):
                points = anytime(r["trials"], horizon)
                if points:
                    xs = [p[0] for p in points] + [horizon]
                    ys = [p[1] for p in points] + [points[-1][1]]
                    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv",
                                             name=f"{variant} (seed {r['seed']})", legendgroup=variant,
                                             showlegend=col == 1, line=dict(color=colours[k % len(colours)],
                                                                            dash="solid" if i == 0 else "dot")),
                                  row=1, col=col)
        fig.update_xaxes(title_text="CPU seconds", row=1, col=col)
        fig.update_yaxes(title_text="best validation accuracy", row=1, col=col)
    missing = document.get("unavailable") or []
    if missing:
        lines += ["", f"Not available on this branch (its options are missing): {', '.join(missing)}."]
    notes = sorted({n for r in runs for n in r.get("notes", [])})
    if notes:
        lines += ["", "Transfer notes:", *[f"- {n}" for n in notes]]
    fig.update_layout(title=f"Best validation accuracy against CPU time ({horizon:g} CPU seconds per search)",
                      height=500, width=1100)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig.write_html(out.with_suffix(".html"), include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-seconds", type=float, default=60.0, help="CPU seconds per search (default 60)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--datasets", default="fashion-mnist,digits")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--proxy", default="synflow", help="the proxy of the tpe-proxy variant (default synflow)")
    parser.add_argument("--parallel", type=int, default=2, help="searches at once (default 2)")
    parser.add_argument("--out", default="benchmarks/results/search_efficiency")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--report-only", action="store_true",
                        help="write OUT from the runs already finished in --workdir (e.g. after an interrupted run)")
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from budgetnas.reproduce import machine_description

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="search-efficiency-"))
    workdir.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    unavailable = [v for v in variants if not available(v)]
    jobs = [(d, v, int(s)) for s in args.seeds.split(",") for d in args.datasets.split(",")
            for v in variants if v not in unavailable]
    started, load_at_start = time.time(), os.getloadavg()[0]
    running: list[tuple[subprocess.Popen, Path, tuple]] = []
    runs: list[dict] = []
    if args.report_only:
        runs = [json.loads(p.read_text()) for p in sorted(workdir.glob("*-s[0-9]*.json"))]
        runs = [r for r in runs if r["variant"] in variants]
        jobs = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    while jobs or running:
        while jobs and len(running) < args.parallel:
            dataset, variant, seed = jobs.pop(0)
            result = workdir / f"{dataset}-{variant}-s{seed}.json"
            cmd = [sys.executable, __file__, "--child", "--dataset", dataset, "--variant", variant, "--seed",
                   str(seed), "--cpu-seconds", str(args.cpu_seconds), "--proxy", args.proxy, "--workdir",
                   str(workdir), "--result", str(result)]
            print(f"start {dataset} {variant} seed {seed}", file=sys.stderr, flush=True)
            running.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL), result,
                            (dataset, variant, seed)))
        time.sleep(1)
        for item in list(running):
            process, result, job = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode != 0 or not result.exists():
                print(f"FAILED {job} (exit {process.returncode})", file=sys.stderr, flush=True)
                continue
            runs.append(json.loads(result.read_text()))
            r = runs[-1]
            print(f"done {job}: best val {r.get('best_val_accuracy')}, test {r.get('replay_test_accuracy')}",
                  file=sys.stderr, flush=True)
    document = {"command": "python benchmarks/search_efficiency.py " + shlex.join(sys.argv[1:] if argv is None
                                                                                    else argv),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
                "wall_seconds": time.time() - started, "unavailable": unavailable,
                "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],  # 1-minute, start and end
                "settings": {"cpu_seconds": args.cpu_seconds, "seeds": args.seeds, "proxy": args.proxy,
                             "datasets": {d: DATASETS[d][:4] for d in args.datasets.split(",")},
                             "variants": {v: VARIANTS[v] for v in variants}},
                "runs": sorted(runs, key=lambda r: (r["dataset"], variants.index(r["variant"]), r["seed"]))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    report(document, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
