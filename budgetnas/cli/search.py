"""``budgetnas search``: options -> :class:`budgetnas.search.SearchConfig` -> printed summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from budgetnas.cli._common import (add_data_options, add_device_options, add_json_option, add_storage_option,
                                   format_table, parse_duration, print_json, progress)

if TYPE_CHECKING:
    from budgetnas.search import SearchConfig, SearchSummary

EXAMPLES = """examples:
  budgetnas search --budget 100k --family cnn --trials 30 --epochs 3
  budgetnas search --budget 200k --family fcn --timeout 30m --sampler nsga2
  budgetnas search --budget 50k --storage postgresql://user:pw@db/nas --study shared --workers 2  # see examples/
  budgetnas search --budget 20k --objectives accuracy          # single objective, median pruner
  budgetnas search --budget 10k --recipe-space search --timeout 30m   # tune the training recipe too"""

HELP = "search architectures under an exact parameter budget (multi-objective Optuna study)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("search", help=HELP, description=HELP + ". Rerunning the same command "
                                   "resumes the study; --trials is the study's total.", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", required=True, help="parameter budget, e.g. 100k, 0.1M, 100000")
    add_search_options(parser)
    parser.set_defaults(handler=run)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """Every search option except --budget (``budgetnas sweep`` reuses them with --budgets)."""
    parser.add_argument("--family", default="cnn", choices=("cnn", "fcn"), help="architecture family (default cnn)")
    add_data_options(parser)
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="total trials in the study, finished ones included (default 20 unless --timeout)")
    parser.add_argument("--timeout", default=None, metavar="DURATION",
                        help="stop starting new trials after this long: 90s, 30m, 2h")
    parser.add_argument("--epochs", type=int, default=3, metavar="E", help="training epochs per trial (default 3)")
    add_device_options(parser)
    add_storage_option(parser)
    parser.add_argument("--study", default=None, metavar="NAME",
                        help="study name (default: FAMILY-BUDGET-DATASET, e.g. cnn-100k-fashion-mnist)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "random"), help="default tpe")
    parser.add_argument("--objectives", default="accuracy,runtime", metavar="LIST",
                        help="comma-separated from accuracy, runtime, params, mult_adds (default accuracy,runtime); "
                             "'accuracy' alone = single-objective mode with Optuna's median pruner")
    parser.add_argument("--parameterisation", default="fit", choices=("fit", "direct"),
                        help="fit (default): widths scaled so every candidate fits the budget; "
                             "direct: widths sampled as such, over-budget candidates rejected")
    parser.add_argument("--max-mult-adds", default=None, metavar="N",
                        help="also reject, before training, candidates above N mult-adds at batch 512 "
                             "(e.g. 5G; the paper's CNN-100K has 2.37G): the budget bounds parameters, not compute")
    parser.add_argument("--recipe-space", default="paper", choices=("paper", "search"),
                        help="paper (default): train every candidate with the paper's recipe; search: also sample "
                             "lr, schedule, weight decay, label smoothing, augmentation and batch size per trial")
    parser.add_argument("--enqueue", action="append", default=[], metavar="CONFIG",
                        help="train this model first, then search around it: a run config TOML or a paper name "
                             "such as cnn-50k+bn (its recipe too with --recipe-space search); repeatable")
    parser.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True,
                        help="stop trials whose learning curve cannot reach the front (default on)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampler and training seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="local worker processes on the same study, each with cores/N CPU threads (default 1); "
                             "needs --storage journal:PATH or postgresql://..., not SQLite")
    add_json_option(parser)


def config_from_args(args: argparse.Namespace, budget: int | None = None) -> "SearchConfig":
    from budgetnas.budget import parse_budget
    from budgetnas.search import SearchConfig

    timeout = parse_duration(args.timeout) if args.timeout is not None else None
    trials = args.trials if args.trials is not None or timeout is not None else 20
    budget = budget if budget is not None else parse_budget(args.budget)
    return SearchConfig(budget=budget, family=args.family, dataset=args.dataset,
                        data_root=args.data_root, subset=args.subset, trials=trials, timeout=timeout,
                        epochs=args.epochs, device=args.device, precision=args.precision, storage=args.storage,
                        study=args.study, sampler=args.sampler, objectives=args.objectives,
                        parameterisation=args.parameterisation, seed=args.seed, early_stop=args.early_stop,
                        max_mult_adds=parse_budget(args.max_mult_adds, what="--max-mult-adds")
                        if args.max_mult_adds else None, recipe_space=args.recipe_space,
                        enqueue=tuple(args.enqueue))


def run(args: argparse.Namespace) -> int:
    from budgetnas.search import SearchInterrupted
    from budgetnas.storage import STORAGE_ENV, has_secret, redact
    from budgetnas.workers import run_workers

    config = config_from_args(args)
    progress(f"storage: {redact(config.storage_url)}  study: {config.study_name}")
    if has_secret(config.storage_url):
        progress(f"note: the storage URL holds a password, so the commands printed below read it from "
                 f"${STORAGE_ENV}: export {STORAGE_ENV}='<the URL>' before running them")
    try:
        summary = run_workers(config, args.workers, progress=progress)  # 1 worker: run_search here
    except SearchInterrupted as stop:
        progress(f"interrupted; the study is saved ({stop.summary.trials} finished trials). "
                 f"Resume with:\n  {resume_command(args, config)}")
        return 130
    if args.json:
        progress(f"storage: {summary.storage_url}")
        document = summary.to_dict()
        document["commands"] = commands(summary)
        print_json(document)
        return 0
    print(render(summary))
    return 0


def render(summary: "SearchSummary") -> str:
    from budgetnas.counting import human_count
    from budgetnas.trainer import PAPER_RECIPE

    rows = [{"trial": r["trial"], "params": f"{r['params']:,}", "acc": f"{r['val_accuracy']:.4f}",
             "secs": f"{r['train_seconds']:.1f}", "madds": human_count(r["mult_adds"]), "spec": r["spec"],
             "recipe": r.get("recipe", "")}
            for r in summary.front]
    lines = [f"study {summary.study}: {summary.trials} finished trials ({summary.complete} complete, "
             f"{summary.stopped_early} stopped early, {summary.rejected} rejected before training, "
             f"{summary.failed} failed)"
             f" in {summary.wall_seconds:.0f}s this run",
             f"rejection rate: {summary.rejection_rate:.1%}", ""]
    if rows:
        lines.append("Pareto front (" + ", ".join(summary.objectives) + "; validation data only):")
        lines.append(format_table(rows, [("trial", "trial"), ("params", "params"), ("acc", "val acc"),
                                         ("secs", "train s"), ("madds", "mult-adds"), ("spec", "architecture")]
                                 # the recipe column only where trials were trained differently (--recipe-space)
                                 + ([("recipe", "recipe")] if any(r["recipe"] != PAPER_RECIPE.describe()
                                                                  for r in rows) else [])))
    else:
        lines.append("no complete trial yet")
    lines.append("")
    lines.append(f"storage: {summary.storage_url}")
    for label, command in commands(summary).items():
        lines.append(f"{label}: {command}")
    return "\n".join(lines)


def commands(summary: "SearchSummary") -> dict[str, str]:
    """The exact follow-up commands (dashboard always; replay of the most accurate front trial)."""
    from budgetnas.storage import command_storage, shell_join

    where = ["--storage", command_storage(summary.storage_url)]  # never a password, and still runnable
    result = {"dashboard": shell_join(["budgetnas", "dashboard", *where])}
    if summary.front:
        result["replay"] = shell_join(["budgetnas", "replay", *where, "--study", summary.study,
                                       "--trial", str(summary.front[0]["trial"])])
    return result


def resume_command(args: argparse.Namespace, config: "SearchConfig") -> str:
    """The same search as a command line with every setting spelled out (and the storage made explicit)."""
    from budgetnas.storage import command_storage, shell_join

    parts = ["budgetnas", "search", "--budget", str(config.budget), "--family", config.family,
             "--dataset", config.dataset]
    if config.data_root:
        parts += ["--data-root", config.data_root]
    if config.subset:
        parts += ["--subset", str(config.subset)]
    if config.trials is not None:
        parts += ["--trials", str(config.trials)]
    if args.timeout:
        parts += ["--timeout", args.timeout]
    parts += ["--epochs", str(config.epochs), "--storage", command_storage(config.storage_url),
              "--study", config.study_name,
              "--sampler", config.sampler, "--objectives", ",".join(config.objectives),
              "--parameterisation", config.parameterisation, "--seed", str(config.seed)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.precision != "auto":
        parts += ["--precision", args.precision]
    if args.max_mult_adds:
        parts += ["--max-mult-adds", args.max_mult_adds]
    if config.recipe_space != "paper":
        parts += ["--recipe-space", config.recipe_space]
    for ref in config.enqueue:
        parts += ["--enqueue", ref]
    if not config.early_stop:
        parts.append("--no-early-stop")
    if getattr(args, "workers", 1) != 1:
        parts += ["--workers", str(args.workers)]
    return shell_join(parts)
