"""Wall time of a replay's seeds: one after another (``--workers 1``) against side by side (``--workers N``).

One invocation makes a study whose trial 0 is CONFIG (a one-trial search with ``--enqueue``, the
recipe included), then replays that trial with ``--seeds`` through the real command line, the two
arms alternating ``--repeats`` times so that both see the same machine as far as a shared one allows:

* ``sequential``: ``budgetnas replay --seeds 0,1 --workers 1``: each seed in turn, torch's default
  intra-op threads (one per core);
* ``parallel``: ``budgetnas replay --seeds 0,1 --workers N``: N single-threaded processes.

Each run's wall time is measured from starting the command to its exit (interpreter start and data
loading are part of what a user waits for). The result is the median of each arm and their ratio,
and each arm's test accuracies: the same in every repeat of an arm, but not across arms, whose runs
differ in thread count and so in the order of float sums (runs with equal threads are identical:
``tests/test_replay.py``); a run's few tenths of a point of seed luck is of that size too.
Results: ``benchmarks/results/replay_workers.md``.

    python benchmarks/replay_workers.py --epochs 2 --repeats 3 --out benchmarks/results/replay_workers.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "budgetnas", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.exit(f"budgetnas {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "studies/found/searched/mbconv-20k.toml"))
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each replay (whole training split)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel arm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="replay-workers-") as folder:
        work = Path(folder)
        storage = f"journal:{work / 'study.log'}"
        cli("search", "--budget", "30000", "--family", "mbconv", "--enqueue", args.config, "--recipe-space",
            "search", "--trials", "1", "--epochs", "1", "--subset", "2000", "--storage", storage, "--study", "bench",
            "--workers", "1", "--quiet", cwd=work)
        arms = {"sequential": 1, "parallel": args.workers}
        runs: dict[str, list[dict]] = {name: [] for name in arms}
        for repeat in range(args.repeats):
            for name, workers in arms.items():
                out = work / f"{name}-{repeat}"
                start = time.perf_counter()
                proc = cli("replay", "--storage", storage, "--study", "bench", "--trial", "0", "--epochs",
                           str(args.epochs), "--subset", "full", "--seeds", args.seeds, "--workers", str(workers),
                           "--no-record", "--json", "--out", str(out), cwd=work)
                seconds = time.perf_counter() - start
                document = json.loads(proc.stdout)
                runs[name].append({"seconds": round(seconds, 2),
                                   "test_accuracy": [r["test_accuracy"] for r in document["runs"]]})
                print(f"{name:10s} repeat {repeat}: {seconds:6.1f} s, test accuracy "
                      + ", ".join(f"{a:.4f}" for a in runs[name][-1]["test_accuracy"]), flush=True)
    median = {name: statistics.median(r["seconds"] for r in runs[name]) for name in arms}
    result = {"config": args.config, "epochs": args.epochs, "seeds": args.seeds, "workers": args.workers,
              "repeats": args.repeats, "cores": len(os.sched_getaffinity(0)), "machine": platform.processor()
              or platform.machine(), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "median_seconds": median, "speedup": round(median["sequential"] / median["parallel"], 3), "runs": runs}
    print(f"median: sequential {median['sequential']:.1f} s, parallel {median['parallel']:.1f} s, "
          f"speed-up {result['speedup']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
