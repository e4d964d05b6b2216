"""Trials per hour: the default search (one process, one intra-op thread per core) against one trial per core.

For each budget, in one invocation and one after the other (so both arms see the same machine,
as far as a shared machine allows), this runs the real command line twice with identical
settings:

* ``default``: ``budgetnas search --workers 1`` on the default SQLite storage, torch's default
  intra-op threads (one per core): what a search was before ``--workers auto``;
* ``per-core``: ``budgetnas search --workers CORES`` on a journal file: CORES single-threaded
  worker processes on one study (what ``--workers auto`` resolves to on such a storage).

Each arm gets the same wall-clock time, measured from starting the command (interpreter start,
data loading and worker start-up are part of what a user waits for), then it is stopped with
SIGINT (Ctrl-C: the trials still running are recorded as interrupted and do not count). The
result counts the trials each arm finished within that time (trials per hour) and the best
validation accuracy among them, and, for the architectures both arms trained, the seconds
per epoch of each (:func:`paired_epochs`). Everything selects on validation data; the test split is
never loaded.

    nice -n 10 python benchmarks/search_throughput.py --budgets 10k,100k --seconds 150 \\
        --subset 6000 --epochs 2 --out benchmarks/results/search_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_arm(name: str, budget: str, workers: int, storage: str, args: argparse.Namespace) -> dict:
    """Run one search for ``args.seconds`` of wall time, stop it with SIGINT, and read its study back."""
    import optuna
    from optuna.trial import TrialState

    from budgetnas.storage import open_storage

    study = f"{name}-{budget}"
    command = [sys.executable, "-m", "budgetnas", "search", "--budget", budget, "--family", "cnn",
               "--subset", str(args.subset), "--epochs", str(args.epochs), "--trials", "100000",
               "--timeout", f"{args.seconds}s", "--device", "cpu", "--precision", args.precision,
               "--storage", storage, "--study", study, "--seed", str(args.seed), "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)  # the default arm gets torch's default threads; workers set their own
    env.pop("MKL_NUM_THREADS", None)
    print(f"[{study}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=args.workdir, stdout=subprocess.DEVNULL)
    try:
        process.wait(timeout=args.seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # Ctrl-C: running trials are saved as interrupted
        process.wait(timeout=600)
    wall = time.perf_counter() - clock
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
    limit = started + timedelta(seconds=args.seconds)

    def done_in_time(t: optuna.trial.FrozenTrial) -> bool:
        if t.datetime_complete is None or "interrupted" in t.user_attrs:
            return False
        # Optuna stores naive local times; compare in UTC.
        return t.datetime_complete.astimezone(timezone.utc) <= limit

    within = [t for t in trials if done_in_time(t)]
    complete = [t for t in within if t.state == TrialState.COMPLETE]
    accuracies = [t.user_attrs["val_accuracy_curve"][-1] for t in complete]
    return {"arm": name, "budget": budget, "workers": workers,
            "threads_per_process": 1 if workers > 1 else cores(), "storage": storage.split(":")[0],
            "exit_code": process.returncode, "wall_seconds_until_stopped": round(wall, 1),
            "finished_trials": len(within), "complete": len(complete),
            "stopped_early": sum(1 for t in within if t.state == TrialState.PRUNED and "rejected" not in t.user_attrs),
            "rejected": sum(1 for t in within if "rejected" in t.user_attrs),
            "epochs_trained": sum(len(t.user_attrs.get("val_accuracy_curve", [])) for t in within),
            "trials_per_hour": round(len(within) / args.seconds * 3600, 1),
            "best_val_accuracy": max(accuracies, default=None)}


def paired_epochs(budget: str, default_storage: str, per_core_storage: str) -> dict:
    """The same architectures in both arms (both start from the same sampler seed, so the first
    worker proposes what the single process proposes): seconds per epoch of each, side by side.

    This isolates the trainer's speed in the two set-ups from what the sampler happened to
    propose, which dominates trials per hour after a few trials (the runtime objective steers
    a search towards small, fast candidates sooner the more trials it has seen).
    """
    import statistics

    import optuna

    from budgetnas.storage import open_storage

    def epochs(storage: str, study: str) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for t in optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False):
            if t.user_attrs.get("epoch_seconds") and "interrupted" not in t.user_attrs:
                key = json.dumps([t.user_attrs["spec"], t.user_attrs["recipe"]], sort_keys=True)
                found.setdefault(key, []).extend(t.user_attrs["epoch_seconds"])
        return found

    one, many = epochs(default_storage, f"default-{budget}"), epochs(per_core_storage, f"per-core-{budget}")
    pairs = [{"params_spec": json.loads(key)[0], "default_epoch_seconds": statistics.median(one[key]),
              "per_core_epoch_seconds": statistics.median(many[key])} for key in one if key in many]
    ratios = [p["default_epoch_seconds"] / p["per_core_epoch_seconds"] for p in pairs]
    return {"architectures": len(pairs), "pairs": pairs,
            "median_default_over_per_core": statistics.median(ratios) if ratios else None}


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="10k,100k", help="comma-separated CNN budgets (default 10k,100k)")
    parser.add_argument("--seconds", type=float, default=150.0, help="wall-clock time of each arm (default 150)")
    parser.add_argument("--subset", type=int, default=6_000, help="training images (stratified; 10%% validation)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="per-core arm's processes (default: the cores)")
    parser.add_argument("--workdir", default=None, help="folder for the studies (default: a new temporary one)")
    parser.add_argument("--note", default="", help="free text stored with the result (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="budgetnas-throughput-")  # kept for inspection
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workers = args.workers or cores()

    arms, paired = [], {}
    storages = {"default": f"sqlite:///{args.workdir}/default.db", "per-core": f"journal:{args.workdir}/per-core.log"}
    for budget in args.budgets.split(","):
        for name, count in (("default", 1), ("per-core", workers)):
            before = load_average()
            arm = run_arm(name, budget, count, storages[name], args)
            arm["load_average_before"], arm["load_average_after"] = before, load_average()
            arms.append(arm)
            print(json.dumps(arm), file=sys.stderr, flush=True)
        paired[budget] = paired_epochs(budget, storages["default"], storages["per-core"])
    import torch

    result = {"command": shlex.join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cores": cores(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "niceness": os.nice(0)},
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")} | {"workers": workers},
              "note": args.note, "arms": arms, "same_architecture_in_both_arms": paired}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
