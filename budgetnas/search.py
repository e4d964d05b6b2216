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

import _thread
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from budgetnas import records
from budgetnas.budget import format_budget, parse_budget
from budgetnas.cost import Cap, CostBounds, parse_cap
from budgetnas.counting import human_count
from budgetnas.data import Data, check_dataset_name, check_validation, load_dataset
from budgetnas.device import resolve_placement
from budgetnas.errors import DataError, FieldError, RunFailure, UsageError
from budgetnas.families import check_choices, family_key, get_family
from budgetnas.families import describe as describe_spec
from budgetnas.fmt import percent
from budgetnas.limits import check_search_edges, check_threads
from budgetnas.objective import Objective
from budgetnas.progress import Monitor, as_monitor, clock
from budgetnas.proxies import ProxyScreen, check_screen
from budgetnas.recipe import as_field_error
from budgetnas.stopping import make_pruner, resolve_pruner
from budgetnas.storage import normalise_url, open_storage, redact
from budgetnas.study import create_or_load, default_study_name, parse_objectives
from budgetnas.trainer import PAPER_RECIPE, Recipe
from budgetnas.trialcount import GiveWay, StopAtTotal, count_finished, counted_trials, counts

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 15 * 60.0  # seconds, when neither trials nor timeout is given: ends in ~15-20 min on a 2-core CPU


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; the CLI options map one to one onto these fields."""

    budget: int  # or text such as "100k": parsed (once) when the config is made, like max_mult_adds ("5G")
    family: str = "cnn"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    subset: int | None = None  # stratified sample of the training images (quick runs)
    validation: str = "slice"  # with subset: "full" validates on the whole validation split (data.load_dataset)
    trials: int | None = None  # total for the study, finished trials included; None = until timeout
    timeout: float | None = None  # seconds for this run; neither given = DEFAULT_TIMEOUT
    epochs: int = 3  # per trial; the paper trains 20, a search ranks candidates with fewer
    device: str = "auto"
    precision: str = "auto"
    storage: str | None = None  # Optuna storage URL; None = ./budgetnas.db
    study: str | None = None  # None = e.g. "cnn-100k-fashion-mnist"
    sampler: str = "tpe"
    objectives: tuple[str, ...] = ("accuracy", "runtime")
    parameterisation: str = "fit"
    seed: int = 0
    early_stop: bool = True  # False = pruner "none"
    recipe: Recipe = PAPER_RECIPE  # its epochs and seed are replaced by ``epochs`` and ``seed``
    # Caps (cost.py), checked before a model is built: "auto" = the default bound for the budget,
    # input size and machine, None = unbounded. Changing them on an existing study is allowed.
    max_mult_adds: Cap = "auto"  # mult-adds of a forward pass over a batch of 512
    max_memory: Cap = "auto"  # bytes of training activations at the recipe's batch size
    pruner: str = "auto"  # stopping.PRUNERS: which rule stops unpromising trials early
    recipe_space: str = "paper"  # "search": sample lr, schedule, decay, smoothing, augment, batch per trial
    enqueue: tuple[str, ...] = ()  # run configs (paths or paper names) to train first, e.g. ("cnn-50k+bn",)
    threads: int | None = None  # CPU threads for training (torch.set_num_threads); None = torch's default
    proxy: str | None = None  # zero-cost proxy scored (and recorded) per candidate before training (proxies.py)
    proxy_screen: float = 0.0  # reject candidates whose proxy is below this quantile of earlier ones (0 = record only)
    transfer_from: tuple[str, ...] = ()  # "auto", storage URLs or found configs: re-fitted winners (transfer.py)
    worker: int = 0  # index among --workers N processes; offsets the sampler seed so workers differ (workers.py)

    def __post_init__(self) -> None:
        # Checked here so that a bad option fails before anything is opened or loaded.
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        if self.trials is None and self.timeout is None:
            object.__setattr__(self, "timeout", DEFAULT_TIMEOUT)
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
                                     parameterisation=self.parameterisation,
                                     space_version=get_family(self.family).space_version,
                                     subset=self.subset, max_mult_adds=self.max_mult_adds,
                                     max_memory=self.max_memory, recipe_space=self.recipe_space,
                                     validation=self.validation)

    def cost_bounds(self, input_shape: tuple[int, int, int]) -> CostBounds:
        """The compute and memory bounds in force, ``"auto"`` resolved for this input and machine."""
        device = resolve_placement(self.device, self.precision).device.type
        return CostBounds.resolve(self.max_mult_adds, self.max_memory, self.budget, input_shape, device,
                                  family=self.family)

    def pruner_name(self) -> str:
        """The early-stopping rule this search uses (``"auto"`` and ``early_stop=False`` resolved)."""
        return resolve_pruner(self.pruner if self.early_stop else "none", self.objectives)


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


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` checked and worked out; picklable, so ``--workers`` pass it on."""

    input_shape: tuple[int, int, int]
    starts: list[tuple[str, dict[str, Any]]]
    # The dataset as the trials will see it, loaded here so that a bad --subset or --data-root is refused
    # before any study exists; None once handed to --workers processes (each loads its own).
    data: Data | None = None


def prepare(config: SearchConfig, say: Progress | None = None) -> Prepared:
    """The checks that need the machine and the data, before any study exists: device, the budget
    against the smallest net the space can build, and the ``--enqueue`` starting points. Run once per
    search (with workers: in the parent, which hands the result to each worker)."""
    say = say or (lambda message: None)
    resolve_placement(config.device, config.precision)  # a missing GPU fails before any study is made
    data = load_dataset(config.dataset, config.data_root, subset=config.subset, validation=config.validation)
    input_shape, num_classes = data.input_shape, data.num_classes
    smallest = check_budget(config, input_shape, num_classes)
    if config.budget < TIGHT_BUDGET * smallest:  # deeper structures' smallest members are over it: say so up front
        say(f"note: budget {config.budget:,} is close to the smallest {config.family} ({smallest:,} parameters), so "
            f"many sampled structures cannot fit even at width 1 and are rejected before training; "
            f"--budget {format_budget(TIGHT_BUDGET * smallest)} or more leaves room to search")
    starts = start_params(config, input_shape, num_classes)  # bad --enqueue fails before a study exists
    if config.transfer_from:
        from budgetnas.transfer import transfer_starts

        transferred, notes = transfer_starts(config, input_shape, num_classes)
        for note in notes:
            say(redact(note))
        sources = ", ".join(redact(ref) for ref in config.transfer_from)  # a source may be a URL with a password
        say(f"transfer: {len(transferred)} re-fitted starting point(s) from {sources}")
        starts += transferred
    return Prepared(input_shape, starts, data)


def run_search(config: SearchConfig, progress: Progress | None = None, *,
               prepared: Prepared | None = None,
               callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
               admission: Callable[[float | None], str | None] | None = None) -> SearchSummary:
    """Run (or resume) the search that ``config`` describes and summarise the study.

    ``prepared``: the result of :func:`prepare` when the caller already ran it (the workers).
    ``callbacks``: called after each trial of this run as Optuna's ``optimize`` calls its own (a
    sweep's :class:`~budgetnas.sweep.FinalistReserve` ends the search with ``study.stop()``).
    ``admission``: asked with each candidate's training activations per image before it trains;
    a reason refuses it for this run (the same reserve's :meth:`~budgetnas.sweep.FinalistReserve.refusal`).
    """
    say = as_monitor(progress)
    if config.threads:  # in this process: each --workers worker applies it to itself
        import torch

        torch.set_num_threads(config.threads)
    prepared = prepared or prepare(config, say)

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's (with tracebacks)
    try:
        return _optimize(config, prepared, say, callbacks, admission)
    finally:
        optuna.logging.set_verbosity(verbosity)


def start_params(config: SearchConfig, input_shape: tuple[int, int, int],
                 num_classes: int) -> list[tuple[str, dict[str, Any]]]:
    """(reference, trial parameters) of each ``--enqueue`` config, checked against the space and budget."""
    from budgetnas.reproduce import resolve_config

    family = get_family(config.family)
    starts = []
    for ref in config.enqueue:
        run = resolve_config(ref)
        if family_key(run.spec) != config.family:
            raise UsageError(f"--enqueue {ref} is a {family_key(run.spec)} config; this search is {config.family}")
        try:
            values = family.params_of(run.spec, run.recipe if config.recipe_space == "search" else None,
                                      config.budget, input_shape, num_classes, config.parameterisation)
        except UsageError as exc:
            raise UsageError(f"--enqueue {ref}: {exc}") from None
        starts.append((ref, values))
    return starts


def _optimize(config: SearchConfig, prepared: Prepared, say: Monitor,
              extra: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
              admission: Callable[[float | None], str | None] | None = None) -> SearchSummary:
    data = prepared.data
    if data is None:  # a --workers process: the parent checked the options on its own copy
        data = load_dataset(config.dataset, config.data_root, subset=config.subset, validation=config.validation)
    storage = open_storage(config.storage_url)
    pruner = make_pruner(config.pruner_name(), config.epochs)
    study = create_or_load(storage, config.study_name, config.settings(), config.sampler,
                           config.seed + 10_007 * config.worker, pruner=pruner)
    done_before = count_finished(study)
    if config.trials is not None and done_before >= config.trials:
        say(f"study {config.study_name} already has {done_before} finished trials (--trials {config.trials}); "
            "raise --trials to continue it")
        return summarise(study, config, 0.0)
    if done_before:
        say(f"resuming: {done_before} of {config.trials if config.trials is not None else '?'} trials finished")

    for ref, values in prepared.starts:  # skip_if_exists: rerunning the command does not queue them again
        study.enqueue_trial(values, user_attrs={"enqueued": ref}, skip_if_exists=True)
    guard = _CtrlC()
    screen = (ProxyScreen(config.proxy, config.proxy_screen, data.train.x, data.train.y, data.mean, data.std,
                          data.num_classes, seed=config.seed) if config.proxy else None)
    objective = Objective(config.settings(), data, config.training_recipe(), device=config.device,
                          precision=config.precision, pruner=config.pruner_name(),
                          bounds=config.cost_bounds(data.input_shape), storage_url=config.storage_url,
                          progress=say, interruptible=guard.training, on_step=say.step, screen=screen,
                          admission=admission)
    say(f"{plan(config)}; early stopping: {config.pruner_name()}")
    say(f"cost bounds: {objective.bounds.describe()} (checked before a candidate is built; widen with "
        "--max-mult-adds / --max-memory)")
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [_Reporter(config, say), *extra]
    total = StopAtTotal(config.trials, say=say, storage_url=config.storage_url) if config.trials is not None else None
    if total is not None:
        callbacks.insert(0, total)
        objective = GiveWay(objective, config.trials)  # exactly --trials, even when independent processes race
    start = time.perf_counter()
    say.start(config.trials, done_before, config.timeout)
    try:
        with guard.installed(study):
            # The first trial is checked too: other workers may hold the last places (workers.py).
            if total is None or total.room(study):
                running = _Running(objective, total, say)
                while not optimize_once(study, running, config.timeout, start, callbacks, say):
                    pass  # the database came back, or another worker took over this one's trial: go on
    except KeyboardInterrupt:
        guard.requested = True
    except Exception:
        lost = getattr(storage, "unavailable", None)  # budgetnas.resilience gave up on the database
        if lost is not None:  # Optuna's own clean-up then fails too (e.g. an UnboundLocalError): report the cause
            raise lost from None
        raise
    finally:
        if total is not None:
            total.release()
        say.stop()
    summary = summarise(study, config, time.perf_counter() - start)
    if guard.requested:
        summary.interrupted = True
        raise SearchInterrupted(summary)
    return summary


class _Running:
    """The objective, first releasing the total's gate (the trial is RUNNING in the storage by now).

    It remembers the trial it runs until the objective returns: when a lost database connection
    ends ``optimize`` in the middle of a trial, :func:`optimize_once` queues that trial's retry.
    """

    def __init__(self, objective: Callable[[Any], Any], total: StopAtTotal | None,
                 say: Callable[[str], None] = lambda message: None) -> None:
        self.objective, self.total, self.say = objective, total, say
        self.trial_id: int | None = None  # the trial being run, None between trials
        self.lost: set[int] = set()  # trials a lost connection interrupted, whose retry is not queued yet

    def __call__(self, trial: optuna.Trial) -> Any:
        if self.total is not None:
            self.total.release()
        from budgetnas.resilience import is_transient

        self.trial_id = trial._trial_id
        try:
            result = self.objective(trial)
        except BaseException as exc:
            if not is_transient(exc):  # pruned, failed or interrupted: recorded as such, nothing to retry
                self.trial_id = None
            raise
        self.trial_id = None
        return result

    def retry_lost(self, study: optuna.Study) -> None:
        """Queue the retry of each trial a lost connection interrupted, once the database answers, and of
        any trial another worker failed but could not queue (:func:`~budgetnas.resilience.retry_orphaned_failures`).

        Optuna records such a trial FAIL itself (its objective raised), and no heartbeat retries a
        finished trial, so without this it would be lost. A trial still RUNNING is left to the
        heartbeat (another worker fails it as stale and queues its retry).
        """
        from budgetnas.resilience import retry_orphaned_failures

        queued = retry_orphaned_failures(study, unsettled=self.lost)
        self.lost.clear()
        if queued:
            self.say(f"queued the retry of trial(s) {', '.join(map(str, queued))}, failed without a retry "
                     "(a lost connection, or a worker stopped before it could queue it)")


def plan(config: SearchConfig) -> str:
    """How long this run will take, said before it starts."""
    limit = f"{config.trials} trials in the study" if config.trials is not None else ""
    if config.timeout is not None:
        until = f"{config.timeout / 60:.3g} minutes (the trial running then still finishes)"
        limit = f"{limit} or {until}, whichever comes first" if limit else until
    return f"this run stops after {limit}; up to {config.epochs} epochs per trial"


def optimize_once(study: optuna.Study, objective: _Running, timeout: float | None, start: float,
                  callbacks: list[Callable[[optuna.Study, FrozenTrial], None]], say: Progress) -> bool:
    """``study.optimize`` for what is left of ``timeout``; False if it must be called again.

    While the database is away a trial's heartbeat cannot be recorded; if that lasts longer
    than the grace period, another worker fails the trial as stale and queues its retry. When
    this worker then reports its result, Optuna refuses ("Cannot tell a FAIL trial", or its
    "Should not reach" assertion) and ``optimize`` ends. The result is dropped (the retry runs
    elsewhere) and the search goes on.

    A lost connection that reaches this far (a storage read that no retry wraps, e.g. the
    sampler's, through Optuna's trial cache) ends ``optimize`` too; within the retry window
    (``BUDGETNAS_STORAGE_RETRY``, counted from the first such loss in a row) the search waits and
    goes on. The trial it interrupted is retried: queued here once the database answers if
    Optuna recorded it FAIL (:meth:`_Running.retry_lost`), through the heartbeat if it was left RUNNING.
    """
    from budgetnas.resilience import StorageUnavailable, is_transient, retry_seconds

    left = None if timeout is None else timeout - (time.perf_counter() - start)
    if left is not None and left <= 0:
        return True
    try:
        objective.retry_lost(study)

        study.optimize(objective, timeout=left, catch=(RunFailure,), callbacks=callbacks)
    except (ValueError, AssertionError) as exc:
        if "Cannot tell a FAIL trial" not in str(exc) and "Should not reach" not in str(exc):
            raise
        say("this worker's trial was failed as stale by another worker while the database was away (its "
            "heartbeat could not be recorded); its retry runs there, so this result is dropped")
        return False
    except StorageUnavailable:
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise
        if objective.trial_id is not None:
            objective.lost.add(objective.trial_id)
            objective.trial_id = None
        first = _LOST.setdefault(id(study), time.monotonic())
        if time.monotonic() - first > retry_seconds():
            raise StorageUnavailable(f"lost the database and it did not come back within {retry_seconds()}s; "
                                     "the study is saved: rerun the same command when the server is up") from None
        say("lost the database connection; waiting for it (the running trial is retried through its heartbeat)")
        time.sleep(2.0)
        return False
    _LOST.pop(id(study), None)
    return True


_LOST: dict[int, float] = {}  # study -> when the current run of lost connections began (optimize_once)


def check_config(config: SearchConfig) -> None:
    """Fail fast on options that are wrong whatever the data (before anything is loaded).

    Runs once, when the config is made (``__post_init__``). ``budget`` and ``max_mult_adds`` may be
    given as text (``"100k"``, ``"5G"``): they are parsed here, so the CLI passes its flags through.
    Errors are :class:`FieldError` naming the field; the CLI spells it as the flag.
    """
    check_choices(config.family, config.parameterisation, config.recipe_space)
    check_dataset_name(config.dataset)
    try:
        check_validation(config.validation)
    except DataError as exc:
        raise FieldError(str(exc), "validation") from None
    try:
        object.__setattr__(config, "budget", parse_budget(config.budget, what="budget"))
    except UsageError as exc:
        raise FieldError(str(exc), "budget") from None
    for name in ("max_mult_adds", "max_memory"):
        object.__setattr__(config, name, parse_cap(getattr(config, name), name))
    check_search_edges(config)
    if config.trials is not None and config.trials < 1:
        raise FieldError(f"trials must be at least 1, got {config.trials}", "trials")
    if config.trials is None and config.timeout is None:
        raise FieldError("give trials or timeout (or both) so the search knows when to stop", "trials", "timeout")
    try:  # the recipe's own check (Recipe.__post_init__) of --epochs, before any study exists
        config.training_recipe()
    except UsageError as exc:
        raise as_field_error(exc) from None
    try:
        check_threads(config.threads, "threads")
    except UsageError as exc:
        raise FieldError(str(exc), "threads") from None
    check_screen(config.proxy, config.proxy_screen)
    try:
        config.pruner_name()  # an unknown rule, or one the objectives cannot use, fails here
    except UsageError as exc:
        raise FieldError(str(exc), "pruner") from None


TIGHT_BUDGET = 4  # below this many times the smallest member, most of the space is over the budget


def check_budget(config: SearchConfig, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Refuse a budget below the space's smallest member; returns that member's parameter count."""
    family = get_family(config.family)
    smallest = family.smallest_count(config.parameterisation, input_shape, num_classes)
    if config.budget < smallest:
        spec = family.minimal_spec(config.parameterisation, input_shape)
        raise UsageError(f"budget {config.budget:,} is smaller than the smallest {config.family} the search space "
                         f"can build for {config.dataset} ({smallest:,} parameters: {family.describe(spec)}); "
                         f"use --budget {format_budget(smallest)} or more")
    return smallest


def summarise(study: optuna.Study, config: SearchConfig, wall_seconds: float) -> SearchSummary:
    trials = counted_trials(study)
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
            "spec": describe_spec(spec),
            "recipe": records.recipe_of(trial).describe() if "recipe" in attrs else ""}


class _Reporter:
    """One progress line per finished trial: i of N, outcome, best so far, elapsed and ETA (from the monitor)."""

    def __init__(self, config: SearchConfig, say: Monitor) -> None:
        self.config = config
        self.say = say
        self.start = time.perf_counter()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not counts(trial):
            return
        elapsed = time.perf_counter() - self.start
        done = count_finished(study)
        total = self.config.trials
        attrs = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            outcome = f"val acc {percent(attrs['val_accuracy_curve'][-1])}, {attrs['train_seconds']:.1f}s"
        elif "rejected" in attrs:
            outcome = "rejected before training"
        elif trial.state == TrialState.PRUNED:
            outcome = "stopped early"
        else:
            outcome = f"failed: {attrs.get('failed', 'error')}"
        best = max((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                   key=lambda t: t.user_attrs["val_accuracy_curve"][-1], default=None)
        best_text = (f"best val acc {percent(best.user_attrs['val_accuracy_curve'][-1])} (trial {best.number}, "
                     f"{human_count(best.user_attrs['params'])} params)" if best else "no complete trial yet")
        of = f"/{total}" if total is not None else ""
        eta = self.say.trial_finished(done, best_text.split(" (")[0])
        self.say(f"[{done}{of}] trial {trial.number} {outcome} | {best_text} | elapsed {clock(elapsed)}"
                 + (f", ETA {clock(eta)}" if eta is not None else ""))


class _CtrlC:
    """SIGINT handling that never interrupts a storage write (see the module docstring)."""

    def __init__(self) -> None:
        self.requested = False
        self.in_training = False
        self.study: optuna.Study | None = None
        self.active = False  # inside the with block: a re-delivered interrupt may still be raised

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
            except RuntimeError:  # not inside optimize(): set what stop() sets, which StopAtTotal.room polls while
                self.study._stop_flag = True  # it waits for running trials (optimize() clears it when it starts)

    def installed(self, study: optuna.Study) -> "_CtrlC":
        self.study = study
        return self

    def _unraisable(self, info: Any) -> None:
        # The handler raised while Python ran a weakref callback or a __del__, where an exception can
        # only be printed ("Exception ignored in ...", a traceback) and is then lost. Deliver it again
        # instead, from a timer thread: interrupt_main runs the handler at the main thread's next step,
        # by then outside the callback (not from here: it would land inside this hook and be lost).
        if isinstance(info.exc_value, KeyboardInterrupt) and self.requested:
            threading.Timer(0.05, self._interrupt_again).start()
            return
        self._previous_hook(info)

    def _interrupt_again(self) -> None:
        if self.active:
            _thread.interrupt_main()

    def __enter__(self) -> "_CtrlC":
        self._previous = {}
        self._previous_hook = sys.unraisablehook
        self.active = True
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            # SIGTERM (kill, a batch system, timeout) is answered like Ctrl-C: trial marked, exit 130.
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        sys.unraisablehook = self._previous_hook
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
