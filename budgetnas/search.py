"""``run_search``: the multi-objective architecture search, callable from Python.

    from budgetnas.search import SearchConfig, run_search
    summary = run_search(SearchConfig(budget=100_000, family="cnn", trials=20, epochs=2))
    print(summary.front)

The command ``budgetnas search`` only parses options into a :class:`SearchConfig` and prints
the :class:`SearchSummary`. ``trials`` is the total for the study: trials already finished
(complete, pruned or rejected, or failed by an error) count, so rerunning an interrupted
search finishes the same study.

Ctrl-C (or SIGTERM, answered the same way; exit code 130): during training it interrupts at
once; the trial is recorded FAIL with an ``interrupted`` user attribute. Elsewhere (while
Optuna writes to the storage) it is only noted, and the search stops before the next trial
starts, so the storage is never left half-written. Either way :class:`SearchInterrupted` is
raised and the study can be resumed by running the same search again.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import AbstractSet, Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from budgetnas import records
from budgetnas.budget import format_budget
from budgetnas.counting import human_count
from budgetnas.data import check_dataset_name, dataset_info, load_dataset
from budgetnas.device import resolve_placement
from budgetnas.errors import RunFailure, UsageError
from budgetnas.limits import check_search_edges
from budgetnas.objective import Objective
from budgetnas.space import SPACE_VERSION, check_choices, minimal_spec, smallest_count
from budgetnas.storage import normalise_url, open_storage, redact
from budgetnas.study import create_or_load, default_study_name, parse_objectives
from budgetnas.trainer import PAPER_RECIPE, Recipe
from budgetnas.workers import GiveWay, StopAtTotal, retried_numbers

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; the CLI options map one to one onto these fields."""

    budget: int
    family: str = "cnn"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    subset: int | None = None  # stratified sample of the training images (quick runs)
    trials: int | None = 20  # total for the study, finished trials included; None = until timeout
    timeout: float | None = None  # seconds for this run
    epochs: int = 3  # per trial; the paper trains 20, a search ranks candidates with fewer
    device: str = "auto"
    precision: str = "auto"
    storage: str | None = None  # Optuna storage URL; None = ./budgetnas.db
    study: str | None = None  # None = e.g. "cnn-100k-fashion-mnist"
    sampler: str = "tpe"
    objectives: tuple[str, ...] = ("accuracy", "runtime")
    parameterisation: str = "fit"
    seed: int = 0
    early_stop: bool = True  # Median pruner (single objective) or the front rule (stopping.py)
    recipe: Recipe = PAPER_RECIPE  # its epochs and seed are replaced by ``epochs`` and ``seed``
    max_mult_adds: int | None = None  # reject candidates above this many mult-adds (batch 512) before training
    recipe_space: str = "paper"  # "search": sample lr, schedule, decay, smoothing, augment, batch per trial
    enqueue: tuple[str, ...] = ()  # run configs (paths or paper names) to train first, e.g. ("cnn-50k+bn",)
    worker: int = 0  # index among --workers N processes; offsets the sampler seed so workers differ (workers.py)

    def __post_init__(self) -> None:
        # Checked here so that a bad option fails before anything is opened or loaded.
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        check_config(self)

    @property
    def study_name(self) -> str:
        return self.study or default_study_name(self.family, self.budget, self.dataset)

    @property
    def storage_url(self) -> str:
        return normalise_url(self.storage)

    def training_recipe(self) -> Recipe:
        return replace(self.recipe, epochs=self.epochs, seed=self.seed)

    def settings(self) -> records.StudySettings:
        return records.StudySettings(family=self.family, budget=self.budget, dataset=self.dataset,
                                     epochs=self.epochs, objectives=tuple(self.objectives), sampler=self.sampler,
                                     parameterisation=self.parameterisation, space_version=SPACE_VERSION,
                                     subset=self.subset, max_mult_adds=self.max_mult_adds,
                                     recipe_space=self.recipe_space)


@dataclass
class SearchSummary:
    """What a search found; ``front`` rows are sorted by validation accuracy, best first."""

    study: str
    storage_url: str  # password redacted
    objectives: tuple[str, ...]
    trials: int  # finished trials in the study (all runs)
    complete: int
    stopped_early: int
    rejected: int
    failed: int
    wall_seconds: float  # this run
    front: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.trials if self.trials else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objectives"] = list(self.objectives)
        data["rejection_rate"] = self.rejection_rate
        return data


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the search; ``summary`` describes the (resumable) study so far."""

    def __init__(self, summary: SearchSummary) -> None:
        super().__init__("search interrupted")
        self.summary = summary


def run_search(config: SearchConfig, progress: Progress | None = None) -> SearchSummary:
    """Run (or resume) the search that ``config`` describes and summarise the study."""
    say = progress or (lambda message: None)
    resolve_placement(config.device, config.precision)  # a missing GPU fails before any study is made
    input_shape, num_classes = dataset_info(config.dataset, config.data_root)
    check_budget(config, input_shape, num_classes)

    starts = start_params(config, input_shape, num_classes)  # bad --enqueue fails before a study exists

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's (with tracebacks)
    try:
        return _optimize(config, input_shape, say, starts)
    finally:
        optuna.logging.set_verbosity(verbosity)


def start_params(config: SearchConfig, input_shape: tuple[int, int, int],
                 num_classes: int) -> list[tuple[str, dict[str, Any]]]:
    """(reference, trial parameters) of each ``--enqueue`` config, checked against the space and budget."""
    from budgetnas.reproduce import resolve_config
    from budgetnas.space import params_of

    starts = []
    for ref in config.enqueue:
        run = resolve_config(ref)
        if run.spec.family != config.family:
            raise UsageError(f"--enqueue {ref} is a {run.spec.family} config; this search is {config.family}")
        try:
            values = params_of(run.spec, run.recipe if config.recipe_space == "search" else None, config.budget,
                               input_shape, num_classes, config.parameterisation)
        except UsageError as exc:
            raise UsageError(f"--enqueue {ref}: {exc}") from None
        starts.append((ref, values))
    return starts


def _optimize(config: SearchConfig, input_shape: tuple[int, int, int], say: Progress,
              starts: list[tuple[str, dict[str, Any]]] = ()) -> SearchSummary:
    storage = open_storage(config.storage_url)
    # No verdict before half the epochs: an annealed schedule (cosine, one-cycle) or augmentation learns
    # late, and judging epoch 1 against a constant-lr run would prune exactly those recipes.
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=config.epochs // 2)
              if config.early_stop else optuna.pruners.NopPruner())
    study = create_or_load(storage, config.study_name, config.settings(), config.sampler,
                           config.seed + 10_007 * config.worker, pruner=pruner)
    done_before = count_finished(study)
    if config.trials is not None and done_before >= config.trials:
        say(f"study {config.study_name} already has {done_before} finished trials (--trials {config.trials}); "
            "raise --trials to continue it")
        return summarise(study, config, 0.0)

    for ref, values in starts:  # skip_if_exists: rerunning the command does not queue them again
        study.enqueue_trial(values, user_attrs={"enqueued": ref}, skip_if_exists=True)
    data = load_dataset(config.dataset, config.data_root, subset=config.subset)
    guard = _CtrlC()
    objective = Objective(config, data, config.training_recipe(), progress=say, interruptible=guard.training)
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [_Reporter(config, say)]
    if config.trials is not None:
        callbacks.insert(0, StopAtTotal(config.trials, _counts, say=say))
        objective = GiveWay(objective, config.trials, _counts)  # exactly --trials, even when workers race
    start = time.perf_counter()
    try:
        with guard.installed(study):
            while not optimize_once(study, objective, config.timeout, start, callbacks, say):
                pass  # this worker's trial was failed as stale by another one: go on with the next trial
    except KeyboardInterrupt:
        guard.requested = True
    except Exception:
        lost = getattr(storage, "unavailable", None)  # budgetnas.resilience gave up on the database
        if lost is not None:  # Optuna's own clean-up then fails too (e.g. an UnboundLocalError): report the cause
            raise lost from None
        raise
    summary = summarise(study, config, time.perf_counter() - start)
    if guard.requested:
        summary.interrupted = True
        raise SearchInterrupted(summary)
    return summary


def optimize_once(study: optuna.Study, objective: Callable[[Any], Any], timeout: float | None, start: float,
                  callbacks: list[Callable[[optuna.Study, FrozenTrial], None]], say: Progress) -> bool:
    """``study.optimize`` for what is left of ``timeout``; False if it must be called again.

    While the database is away a trial's heartbeat cannot be recorded; if that lasts longer
    than the grace period, another worker fails the trial as stale and queues its retry. When
    this worker then reports its result, Optuna refuses ("Cannot tell a FAIL trial", or its
    "Should not reach" assertion) and ``optimize`` ends. The result is dropped (the retry runs
    elsewhere) and the search goes on.
    """
    left = None if timeout is None else timeout - (time.perf_counter() - start)
    if left is not None and left <= 0:
        return True
    try:
        study.optimize(objective, timeout=left, catch=(RunFailure,), callbacks=callbacks)
    except (ValueError, AssertionError) as exc:
        if "Cannot tell a FAIL trial" not in str(exc) and "Should not reach" not in str(exc):
            raise
        say("this worker's trial was failed as stale by another worker while the database was away (its "
            "heartbeat could not be recorded); its retry runs there, so this result is dropped")
        return False
    return True


def check_config(config: SearchConfig) -> None:
    """Fail fast on options that are wrong whatever the data (before anything is loaded)."""
    check_choices(config.family, config.parameterisation, config.recipe_space)
    check_dataset_name(config.dataset)
    if isinstance(config.budget, bool) or not isinstance(config.budget, int) or config.budget <= 0:
        raise UsageError(f"budget must be a positive number of parameters, got {config.budget!r}")
    check_search_edges(config)
    if config.trials is not None and config.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {config.trials}")
    if config.trials is None and config.timeout is None:
        raise UsageError("give --trials or --timeout (or both) so the search knows when to stop")
    if config.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {config.epochs}")
    if config.max_mult_adds is not None and config.max_mult_adds <= 0:
        raise UsageError(f"--max-mult-adds must be positive, got {config.max_mult_adds}")


def check_budget(config: SearchConfig, input_shape: tuple[int, int, int], num_classes: int) -> None:
    smallest = smallest_count(config.family, config.parameterisation, input_shape, num_classes)
    if config.budget < smallest:
        spec = minimal_spec(config.family, config.parameterisation, input_shape)
        raise UsageError(f"budget {config.budget:,} is smaller than the smallest {config.family} the search space "
                         f"can build for {config.dataset} ({smallest:,} parameters: {spec.describe()}); "
                         f"use --budget {format_budget(smallest)} or more")


def count_finished(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: every finished trial except ones cut by Ctrl-C,
    ones of a killed worker that were queued again (their retry counts instead) and ones that
    gave way to another worker's (``surplus``, :class:`budgetnas.workers.GiveWay`)."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials if _counts(t, retried))


def _counts(trial: FrozenTrial, retried: AbstractSet[int] = frozenset()) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    attrs = trial.user_attrs
    return trial.state == TrialState.FAIL and "interrupted" not in attrs and "surplus" not in attrs and \
        trial.number not in retried


def summarise(study: optuna.Study, config: SearchConfig, wall_seconds: float) -> SearchSummary:
    everything = study.get_trials(deepcopy=False)
    retried = retried_numbers(everything)
    trials = [t for t in everything if _counts(t, retried)]
    rejected = sum(1 for t in trials if "rejected" in t.user_attrs)
    stopped = sum(1 for t in trials if t.state == TrialState.PRUNED and "rejected" not in t.user_attrs)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    front = study.best_trials if complete else []
    rows = sorted((front_row(t) for t in front), key=lambda r: -r["val_accuracy"])
    return SearchSummary(study=study.study_name, storage_url=redact(config.storage_url),
                         objectives=tuple(config.objectives), trials=len(trials), complete=len(complete),
                         stopped_early=stopped, rejected=rejected,
                         failed=sum(1 for t in trials if t.state == TrialState.FAIL),
                         wall_seconds=wall_seconds, front=rows)


def front_row(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    curve = attrs.get("val_accuracy_curve") or [math.nan]
    spec = records.spec_of(trial)
    return {"trial": trial.number, "params": attrs.get("params"), "val_accuracy": curve[-1],
            "train_seconds": attrs.get("train_seconds"), "mult_adds": attrs.get("mult_adds"),
            "spec": spec.describe(),
            "recipe": records.recipe_of(trial).describe() if "recipe" in attrs else ""}


class _Reporter:
    """One progress line per finished trial: i of N, outcome, best so far, elapsed and ETA."""

    def __init__(self, config: SearchConfig, say: Progress) -> None:
        self.config = config
        self.say = say
        self.start = time.perf_counter()
        self.run_trials = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not _counts(trial):
            return
        self.run_trials += 1
        elapsed = time.perf_counter() - self.start
        done = count_finished(study)
        total = self.config.trials
        eta = math.inf
        if total is not None:
            eta = elapsed / self.run_trials * max(total - done, 0)
        if self.config.timeout is not None:
            eta = min(eta, max(self.config.timeout - elapsed, 0.0))
        attrs = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            outcome = f"val acc {attrs['val_accuracy_curve'][-1]:.4f}, {attrs['train_seconds']:.1f}s"
        elif "rejected" in attrs:
            outcome = "rejected before training"
        elif trial.state == TrialState.PRUNED:
            outcome = "stopped early"
        else:
            outcome = f"failed: {attrs.get('failed', 'error')}"
        best = max((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                   key=lambda t: t.user_attrs["val_accuracy_curve"][-1], default=None)
        best_text = (f"best val acc {best.user_attrs['val_accuracy_curve'][-1]:.4f} (trial {best.number}, "
                     f"{human_count(best.user_attrs['params'])} params)" if best else "no complete trial yet")
        of = f"/{total}" if total is not None else ""
        self.say(f"[{done}{of}] trial {trial.number} {outcome} | {best_text} | elapsed {_clock(elapsed)}"
                 + (f", ETA {_clock(eta)}" if math.isfinite(eta) else ""))


class _CtrlC:
    """SIGINT handling that never interrupts a storage write (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False
        self.in_training = False
        self.study: optuna.Study | None = None

    def training(self, flag: bool) -> None:
        self.in_training = flag
        if flag and self.requested:
            raise KeyboardInterrupt

    def _handle(self, signum: int, frame: Any) -> None:
        already = self.requested
        self.requested = True
        if self.in_training or already:  # a second Ctrl-C always interrupts at once
            raise KeyboardInterrupt
        if self.study is not None:
            try:
                self.study.stop()
            except RuntimeError:  # optimize() already returned; the flag above is enough
                pass

    def installed(self, study: optuna.Study) -> "_CtrlC":
        self.study = study
        return self

    def __enter__(self) -> "_CtrlC":
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            # SIGTERM (kill, a batch system, timeout) is answered like Ctrl-C: trial marked, exit 130.
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
