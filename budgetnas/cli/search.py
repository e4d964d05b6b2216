"""``budgetnas search``: options -> :class:`budgetnas.search.SearchConfig` -> printed summary."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from budgetnas.cli._common import (absolute_storage, add_data_options, add_device_options, add_json_option,
                                   add_storage_option, data_options, family_path, format_table, invocation,
                                   parse_duration, print_json, progress)
from budgetnas.choices import PARAMETERISATIONS, RECIPE_SPACES, SAMPLERS, VALIDATIONS
from budgetnas.objectives import NAMES as OBJECTIVE_NAMES
from budgetnas.stopping import PRUNERS
from budgetnas.workers import DEFAULT_WORKERS

if TYPE_CHECKING:
    from budgetnas.search import SearchConfig, SearchSummary

EXAMPLES = """examples:
  budgetnas search --budget 100k --family cnn --trials 30 --epochs 3
  budgetnas search --budget 200k --family fcn --timeout 30m --sampler nsga2
  budgetnas search --budget 50k --family mbconv --recipe-space search --timeout 40m   # efficient CNN (README)
  budgetnas search --budget 50k --storage postgresql://user:pw@db/nas --study shared --workers 2  # see examples/
  budgetnas search --budget 20k --objectives accuracy          # single objective, median pruner
  budgetnas search --budget 10k --recipe-space search --timeout 30m   # tune the training recipe too
  budgetnas search --config search.toml --trials 40   # keys as the options (budget = "100k"); flags win

architecture notation (how trials, tables and the dashboard describe a model):
  conv 67k3p2bn,15k5bn | gap | fc 76,77,191 | relu
    conv ...    the conv blocks in order, comma-separated: OUT channels, 'k' + kernel size, then
                'p' + N for an N x N max-pool after the block and 'bn' for batch norm
                (67k3p2bn = 67 channels, 3x3 kernel, 2x2 max-pool, batch norm)
    gap         global average pooling before the dense layers (absent: the maps are flattened)
    fc ...      the hidden dense layers' widths ('-' for none); the output layer (one unit per
                class) is not listed
    relu ...    activation, then 'fc-bn' (batch norm on dense layers), 'dropout P', a non-default init
  an FCN reads 'fc 512,256 | relu bn'; parameter counts printed beside a model are exact"""

HELP = "search architectures under an exact parameter budget (multi-objective Optuna study)"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("search", help=HELP, description=HELP + ". Rerunning the same command "
                                   "resumes the study; --trials is the study's total.", epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", required=True, help="parameter budget, e.g. 100k, 0.1M, 100000")
    parser.add_argument("--config", default=None, metavar="FILE.toml",
                        help="read options from a TOML file (keys as the long options: budget = \"100k\", "
                             "trials = 30, early-stop = false); flags on the command line override it")
    parser.add_argument("--quiet", action="store_true",
                        help="print nothing while searching (errors and the result only)")
    add_search_options(parser)
    parser.reads_config_file = True  # see cli/__init__.ArgumentParser and cli/_configfile.py
    parser.set_defaults(handler=run, parser=parser)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """Every search option except --budget (``budgetnas sweep`` reuses them with --budgets)."""
    from budgetnas.families import available_families

    parser.add_argument("--family", default="cnn", type=family_arg, metavar="FAMILY",
                        help=f"architecture family: {', '.join(available_families())} (default cnn), or a plug-in "
                             "family as package.module:Name (see README, 'Families')")
    add_data_options(parser)
    parser.add_argument("--validation", default="slice", choices=VALIDATIONS,
                        help="with --subset, what trials are validated on: slice (default): 10%% of the subset; "
                             "full: the whole validation split that replays use (6,000 images on Fashion-MNIST, a "
                             "steadier yardstick for choosing between close candidates), training on as many "
                             "images as slice would (90%% of --subset), drawn from the rest")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="total trials in the study, finished ones included (default: no limit, --timeout 15m)")
    parser.add_argument("--timeout", default=None, metavar="DURATION",
                        help="stop starting new trials after this long: 90s, 30m, 2h "
                             "(default 15m when --trials is not given either)")
    parser.add_argument("--epochs", type=int, default=3, metavar="E", help="training epochs per trial (default 3)")
    add_device_options(parser)
    add_storage_option(parser)
    parser.add_argument("--study", default=None, metavar="NAME",
                        help="study name (default: FAMILY-BUDGET-DATASET, e.g. cnn-100k-fashion-mnist)")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="default tpe")
    parser.add_argument("--objectives", default="accuracy,runtime", metavar="LIST",
                        help=f"comma-separated from {', '.join(OBJECTIVE_NAMES)} (default accuracy,runtime); "
                             "'accuracy' alone = single-objective mode with Optuna's median pruner")
    parser.add_argument("--parameterisation", default="fit", choices=PARAMETERISATIONS,
                        help="fit (default): widths scaled so every candidate fits the budget; "
                             "direct: widths sampled as such, over-budget candidates rejected")
    parser.add_argument("--max-mult-adds", default="auto", metavar="N|auto|none",
                        help="also reject, before building them, candidates above N mult-adds at batch 512 "
                             "(e.g. 5G; the paper's CNN-100K has 2.37G): the budget bounds parameters, not compute. "
                             "auto (default): 2 x budget x the area of the map after the always-made pools, per image "
                             "(5.0G at 100k on 28x28; 4 x for mbconv); none: no bound. "
                             "May be changed when resuming a study")
    parser.add_argument("--max-memory", default="auto", metavar="BYTES|auto|none",
                        help="reject, before building them, candidates whose estimated training activations exceed "
                             "BYTES (e.g. 2G). auto (default): 15%% of the memory available at the start; none: no "
                             "bound. May be changed when resuming a study")
    parser.add_argument("--pruner", default="auto", choices=PRUNERS,
                        help="rule that stops unpromising trials after an epoch: median, halfway (one verdict at half "
                             "the epochs against every trial's median), sha (successive halving) or "
                             "hyperband with --objectives accuracy (auto = median); front or sha (rungs ranked by "
                             "non-dominated sorting) with several objectives (auto = the measured better one); "
                             "none = train every candidate to the end (as --no-early-stop)")
    parser.add_argument("--recipe-space", default="paper", choices=RECIPE_SPACES,
                        help="paper (default): train every candidate with the paper's recipe; search: also sample "
                             "lr, schedule, weight decay, label smoothing, augmentation and batch size per trial")
    parser.add_argument("--enqueue", action="append", default=[], metavar="CONFIG",
                        help="train this model first, then search around it: a run config TOML or a paper name "
                             "such as cnn-50k+bn (its recipe too with --recipe-space search); repeatable")
    parser.add_argument("--transfer-from", action="append", default=[], metavar="SOURCE",
                        help="also start from the best trials of neighbouring budgets re-fitted to this one: 'auto' "
                             "(this storage), another storage URL, or a found config such as "
                             "studies/found/cnn-50k.toml; repeatable")
    parser.add_argument("--proxy", default=None, choices=("synflow", "naswot", "grad_norm"),
                        help="score every candidate with this zero-cost proxy before training (recorded as "
                             "user attribute proxy_score)")
    parser.add_argument("--proxy-screen", type=float, default=0.0, metavar="FRACTION",
                        help="with --proxy: reject, before training, candidates scoring below this quantile of the "
                             "earlier candidates (default 0: off; see benchmarks/results/proxy_correlation.md)")
    parser.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True,
                        help="stop trials whose learning curve cannot reach the front (default on)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampler and training seed (default 0)")
    parser.add_argument("--workers", default=DEFAULT_WORKERS, metavar="N",
                        help="local worker processes on the same study, each with cores/N CPU threads; more than 1 "
                             "needs --storage journal:PATH or postgresql://..., not SQLite. 'auto': one "
                             "single-threaded worker per core on such a storage, else 1 "
                             f"(default {DEFAULT_WORKERS})")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="CPU threads per worker process (default: torch's, one per core; cores/N with "
                             "--workers N). On a small shared machine --threads 1 is often fastest")
    add_json_option(parser)


def family_arg(text: str) -> str:
    """argparse type of --family: a known family name, or a ``module:Name`` reference (loaded later)."""
    from budgetnas.families import available_families

    if text in available_families() or ":" in text:
        return text
    raise argparse.ArgumentTypeError(f"unknown family {text!r}; choose one of {', '.join(available_families())}, "
                                     "or give a plug-in family as package.module:Name")


def config_from_args(args: argparse.Namespace, budget: int | None = None) -> "SearchConfig":
    from budgetnas.search import SearchConfig

    timeout = parse_duration(args.timeout) if args.timeout is not None else None
    trials = args.trials  # neither given: the library's default time limit
    budget = budget if budget is not None else args.budget  # the library parses and checks it
    return SearchConfig(budget=budget, family=args.family, dataset=args.dataset,
                        data_root=args.data_root, subset=args.subset, validation=args.validation, trials=trials,
                        timeout=timeout,
                        epochs=args.epochs, device=args.device, precision=args.precision, storage=args.storage,
                        study=args.study, sampler=args.sampler, objectives=args.objectives,
                        parameterisation=args.parameterisation, seed=args.seed, early_stop=args.early_stop,
                        max_mult_adds=args.max_mult_adds, max_memory=args.max_memory, pruner=args.pruner,
                        recipe_space=args.recipe_space, enqueue=tuple(args.enqueue), threads=args.threads,
                        transfer_from=tuple(args.transfer_from), proxy=args.proxy, proxy_screen=args.proxy_screen)


def run(args: argparse.Namespace) -> int:
    from budgetnas.cli import _configfile
    from budgetnas.progress import monitor
    from budgetnas.search import SearchInterrupted
    from budgetnas.storage import STORAGE_ENV, has_secret, redact
    from budgetnas.workers import run_workers

    config = config_from_args(args)
    say = monitor(quiet=args.quiet)  # live on a terminal, one line per event elsewhere, nothing with --quiet
    say(f"storage: {redact(config.storage_url)}  study: {config.study_name}")
    if has_secret(config.storage_url):
        say(f"note: the storage URL holds a password, so the commands printed below read it from "
            f"${STORAGE_ENV}: export {STORAGE_ENV}='<the URL>' before running them")
    if any(has_secret(ref) and not _is_storage(ref, config.storage_url) for ref in config.transfer_from):
        say("note: a --transfer-from URL holds a password, which printed commands show as ***: "
            "put it back before running them")
    try:
        summary = run_workers(config, args.workers, progress=None if args.quiet else say)  # 1 worker: run_search
    except SearchInterrupted as stop:
        progress(f"interrupted; the study is saved ({stop.summary.trials} finished trials). "
                 f"Resume with:\n  {resume_command(args, config)}")
        return 130
    if args.json:
        say(f"storage: {summary.storage_url}")
        document = summary.to_dict()
        document["commands"] = commands(summary, config)
        document["config"] = resolved = _configfile.resolved(args.parser, args)
        # --json never prints a password either: the two options that may hold a URL
        resolved["storage"] = redact(resolved["storage"]) if resolved["storage"] else resolved["storage"]
        resolved["transfer-from"] = [redact(ref) for ref in resolved["transfer-from"]]
        print_json(document)
        return 0
    print(render(summary, config))
    return 0


def render(summary: "SearchSummary", config: "SearchConfig") -> str:
    from budgetnas.counting import human_count
    from budgetnas.fmt import percent
    from budgetnas.trainer import PAPER_RECIPE

    rows = [{"trial": r["trial"], "params": f"{r['params']:,}", "acc": percent(r["val_accuracy"]),
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
    for label, command in commands(summary, config).items():
        lines.append(f"{label}: {command}")
    return "\n".join(lines)


def commands(summary: "SearchSummary", config: "SearchConfig") -> dict[str, str]:
    """The exact follow-up commands (dashboard always; replay of the most accurate front trial), each as
    the user's shell runs it: this program's executable, absolute paths, the data root spelled out, and
    never a password (a secret storage URL is read from $BUDGETNAS_STORAGE instead)."""
    from budgetnas.storage import shell_join

    where = ["--storage", absolute_storage(summary.storage_url)]
    result = {"dashboard": shell_join([*invocation(), "dashboard", *where])}
    if summary.front:
        data_root = data_options(config.dataset, config.data_root)[2:]  # replay reads the dataset from the study
        result["replay"] = family_path(config.family) + shell_join(
            [*invocation(), "replay", *where, "--study", summary.study, "--trial", str(summary.front[0]["trial"]),
             *data_root])
    return result


def _is_storage(ref: str, storage_url: str) -> bool:
    """Whether a --transfer-from source is the search's own storage (then printed as the storage is)."""
    from budgetnas.errors import UsageError
    from budgetnas.storage import normalise_url

    try:
        return normalise_url(ref) == storage_url
    except UsageError:  # a config file path, or not a URL at all
        return False


def resume_command(args: argparse.Namespace, config: "SearchConfig") -> str:
    """The same search as a command line with every setting spelled out (and the storage made explicit)."""
    from budgetnas.storage import command_storage, redact, shell_join

    parts = [*invocation(), "search", "--budget", str(config.budget), "--family", config.family,
             *data_options(config.dataset, config.data_root)]
    if config.subset:
        parts += ["--subset", str(config.subset)]
    if config.validation != "slice":
        parts += ["--validation", config.validation]
    if config.trials is not None:
        parts += ["--trials", str(config.trials)]
    if args.timeout:
        parts += ["--timeout", args.timeout]
    parts += ["--epochs", str(config.epochs), "--storage", absolute_storage(config.storage_url),
              "--study", config.study_name,
              "--sampler", config.sampler, "--objectives", ",".join(config.objectives),
              "--parameterisation", config.parameterisation, "--seed", str(config.seed)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.precision != "auto":
        parts += ["--precision", args.precision]
    for flag, value in (("--max-mult-adds", getattr(args, "max_mult_adds", "auto")),
                        ("--max-memory", getattr(args, "max_memory", "auto"))):
        if value not in ("auto", None):
            parts += [flag, str(value)]
    if getattr(args, "pruner", "auto") != "auto":
        parts += ["--pruner", args.pruner]
    if config.recipe_space != "paper":
        parts += ["--recipe-space", config.recipe_space]
    for ref in config.enqueue:
        parts += ["--enqueue", ref]
    for ref in config.transfer_from:  # a storage URL with a password: the variable, or *** (see run's note)
        same = _is_storage(ref, config.storage_url)
        parts += ["--transfer-from", command_storage(ref) if same else redact(ref)]
    if config.proxy:
        parts += ["--proxy", config.proxy, "--proxy-screen", f"{config.proxy_screen:g}"]
    if not config.early_stop:
        parts.append("--no-early-stop")
    if str(getattr(args, "workers", DEFAULT_WORKERS)) != str(DEFAULT_WORKERS):
        parts += ["--workers", str(args.workers)]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    return family_path(config.family) + shell_join(parts)
