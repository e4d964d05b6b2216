"""Which precision trains mbconv candidates fastest on this CPU: fp32, bf16, or bf16 with fp32 depthwise convs?

``--precision auto`` picks bf16 autocast on CPUs with native bf16 (``budgetnas.device``), measured
faster there for the plain CNNs. The mbconv family's depthwise convs are the exception: oneDNN's
bf16 depthwise kernels (their backward above all) ran several times slower than fp32 on the
development CPU (AMD EPYC with ``avx512_bf16``), so ``budgetnas.families.mbconv_model.DepthwiseConv2d``
opts out of CPU autocast and the rest of the net keeps bf16. This script is the measurement
behind that choice, to rerun on any CPU:

    python benchmarks/depthwise_precision.py --out benchmarks/results/depthwise_precision.json

It draws candidates the search itself would train (the mbconv ``fit`` space, a seeded random
sampler, within the default compute bound) at each ``--budgets``, and times training steps
(forward, backward, AdamW; batch 128 of 1x28x28, channels-last, as the trainer runs them) in
three modes, one after the other in one process: ``fp32``; ``bf16`` (autocast everywhere,
depthwise convs included, as before the change); ``bf16+fp32dw`` (the default now). Each figure
is the median over ``--repeats`` timings of ``--steps`` steps after a warm-up, with the ratio to
fp32 in the same run. On a CPU without native bf16 both bf16 modes are emulated and slow; that
is why ``auto`` picks fp32 there and why the figures only mean something where bf16 is native.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("fp32", "bf16", "bf16+fp32dw")
SHAPE = (1, 28, 28)


def candidates(budget: int, count: int, seed: int) -> list:
    """``count`` specs from the mbconv fit space at ``budget`` that the default compute bound admits."""
    import optuna

    from budgetnas.cost import default_max_mult_adds
    from budgetnas.counting import PAPER_BATCH, count_mult_adds
    from budgetnas.families import get_family

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    family = get_family("mbconv")
    bound = default_max_mult_adds(budget, SHAPE, factor=family.compute_factor)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs = []
    while len(specs) < count:
        trial = study.ask()
        spec = family.sample(trial, budget, SHAPE, 10, "fit")
        study.tell(trial, 0.0)
        if count_mult_adds(spec, SHAPE, 10, PAPER_BATCH) <= bound:
            specs.append(spec)
    return specs


def time_steps(spec, mode: str, steps: int, repeats: int, batch: int) -> float:
    """Median seconds per training step of ``spec`` in ``mode``."""
    import torch
    from torch import nn

    from budgetnas.families import mbconv_model
    from budgetnas.model import build_model

    own_forward = mbconv_model.DepthwiseConv2d.forward
    if mode == "bf16":  # the depthwise convs under autocast like every other conv (before the change)
        mbconv_model.DepthwiseConv2d.forward = nn.Conv2d.forward
    try:
        torch.manual_seed(0)
        model = build_model(spec, SHAPE, 10).to(memory_format=torch.channels_last)
        optimiser = torch.optim.AdamW(model.parameters())
        x = torch.randn(batch, *SHAPE).to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
                loss = nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

        for _ in range(2):
            step()
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            timings.append((time.perf_counter() - start) / steps)
        return statistics.median(timings)
    finally:
        mbconv_model.DepthwiseConv2d.forward = own_forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", default="10k,50k", help="comma-separated budgets (default: 10k,50k)")
    parser.add_argument("--per-budget", type=int, default=4, help="candidates per budget (default: 4)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timing (default: 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per mode; the median is kept (default: 5)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default: 128, the search recipe's most common)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1, as a search worker)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures here (.json) and a table beside it (.md)")
    args = parser.parse_args(argv)

    import torch

    from budgetnas.budget import parse_budget
    from budgetnas.counting import PAPER_BATCH, count_mult_adds, human_count
    from budgetnas.device import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    rows = []
    for budget_text in args.budgets.split(","):
        budget = parse_budget(budget_text)
        for spec in candidates(budget, args.per_budget, args.seed):
            seconds = {mode: time_steps(spec, mode, args.steps, args.repeats, args.batch) for mode in MODES}
            row = {"budget": budget, "spec": spec.describe(),
                   "mult_adds": count_mult_adds(spec, SHAPE, 10, PAPER_BATCH),
                   "ms_per_step": {m: round(1000 * s, 1) for m, s in seconds.items()},
                   "speed_vs_fp32": {m: round(seconds["fp32"] / s, 2) for m, s in seconds.items()}}
            rows.append(row)
            print(f"{budget_text} {row['spec']}: " + ", ".join(f"{m} {v} ms" for m, v in row["ms_per_step"].items()),
                  file=sys.stderr, flush=True)
    summary = {m: round(statistics.median(r["speed_vs_fp32"][m] for r in rows), 2) for m in MODES}
    doc = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
           or platform.machine(), "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__, "threads": args.threads,
           "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "rows": rows,
           "median_speed_vs_fp32": summary}
    lines = ["# mbconv training steps by precision", "",
             f"Measured {doc['measured']} ({doc['machine']}, native bf16: {doc['native_bf16']}, torch {torch.__version__}, "
             f"{args.threads} thread(s), batch {args.batch}; each figure the median of {args.repeats} timings of "
             f"{args.steps} steps):", "", "    python benchmarks/depthwise_precision.py " + " ".join(argv or sys.argv[1:]), "",
             "| budget | candidate | mult-adds (batch 512) | " + " | ".join(f"{m} ms/step" for m in MODES)
             + " | bf16 / fp32 speed | bf16+fp32dw / fp32 speed |", "|" + "---|" * (5 + len(MODES))]
    for r in rows:
        lines.append(f"| {r['budget']:,} | `{r['spec'].replace('|', '/')}` | {human_count(r['mult_adds'])} | "
                     + " | ".join(str(r["ms_per_step"][m]) for m in MODES)
                     + f" | {r['speed_vs_fp32']['bf16']}x | {r['speed_vs_fp32']['bf16+fp32dw']}x |")
    lines.append(f"\nMedian speed against fp32: bf16 {summary['bf16']}x, bf16 with fp32 depthwise "
                 f"{summary['bf16+fp32dw']}x (native bf16: {doc['native_bf16']}, {args.threads} thread(s)).")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
