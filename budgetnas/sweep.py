"""A budget sweep: one study per budget, the best trial of each replayed, one report.

``run_sweep`` searches each budget (resuming its study when it exists: the studies live in
one storage, named as ``budgetnas search`` names them), replays the best trial of each
study with the test split (the search itself never sees it), and writes ``SWEEP.md`` and
``sweep.html``: replayed test accuracy against the budget, the training time and the
mult-adds, with the paper's hand-picked models of the same family as reference points.
Each budget's winner is also written as a run config, ``found/FAMILY-BUDGET.toml``: its spec,
the recipe it was replayed with and a ``[result]`` table (replayed figures plus the search
that found it), which ``budgetnas train`` retrains as it is; ``studies/found/`` holds ours.
The config is written once the winner is chosen, before the replay, and rewritten as each
replay seed (``replay_seeds``) ends, so that a stopped replay loses only what had not finished.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from budgetnas.budget import format_budget
from budgetnas.cost import EpochTime
from budgetnas.datasets import reference_models
from budgetnas.errors import UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.fmt import epoch_line, percent, plural
from budgetnas.search import SearchConfig, run_search

if TYPE_CHECKING:  # found_config imports it when called, as it does the trainer
    from budgetnas.config import RunConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SweepConfig:
    """``search`` is the template of every budget's search; its ``budget`` and ``study`` are replaced."""

    budgets: tuple[int, ...]
    search: SearchConfig
    budget_timeout: float | None = None  # wall-clock seconds of search per budget
    replay_epochs: int | None = 20  # None = the epochs the search trained with
    out: Path = Path("runs/sweep")
    replay_subset: int | None = None  # None = the whole training split (as the paper trained); N = a quick slice
    finalists: int = 1  # re-rank this many top trials by a full-length run (validation only) before the replay
    # Train each finalist once per augmentation named here (empty: with its own recipe's only), so that
    # augmentation is decided at full length: short search runs under-rate it (it pays once a model overfits).
    finalist_augments: tuple[str, ...] = ()
    # Count the finalists' runs in budget_timeout: the search ends early enough to leave them their time.
    finalists_within_timeout: bool = False
    # Replay each winner once per seed here (empty: once, with the search's seed): one run's test accuracy
    # carries a few tenths of a point of luck, so a claim about a winner rests on several.
    replay_seeds: tuple[int, ...] = ()
    # Train that many replay seeds at once, each in its own process (a number or "auto";
    # budgetnas.processes.resolve_run_workers): a slow winner's two replays take half the time on two cores.
    replay_workers: int | str = 1

    def __post_init__(self) -> None:
        from budgetnas.limits import MAX_EPOCHS, check_subset
        from budgetnas.recipe import AUGMENTS
        from budgetnas.runs import check_seeds
        from budgetnas.processes import parse_workers

        # Checked here, before any search: a typo would otherwise surface after the searches, as a recipe error.
        epochs = self.replay_epochs
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                                   or not 1 <= epochs <= MAX_EPOCHS):
            raise UsageError(f"--replay-epochs must be an integer from 1 to {MAX_EPOCHS:,}, got {epochs!r}")
        check_subset(self.replay_subset, "--replay-subset")
        if self.replay_seeds:
            check_seeds(self.replay_seeds, "replay_seeds")
        parse_workers(self.replay_workers, "--replay-workers")

        if self.finalists < 1:
            raise UsageError(f"--finalists must be at least 1, got {self.finalists}")
        unknown = [a for a in self.finalist_augments if a not in AUGMENTS]
        if unknown or len(set(self.finalist_augments)) != len(self.finalist_augments):
            raise UsageError(f"--finalist-augments takes distinct names among {', '.join(AUGMENTS)} (or 'all'), "
                             f"got {','.join(self.finalist_augments)}")
        if self.finalists_within_timeout and not self.budget_timeout:
            raise UsageError("--finalists-within-timeout shares --budget-timeout between search and finalists: "
                             "give --budget-timeout too, e.g. --budget-timeout 40m")
        if not self.budgets:
            raise UsageError("a sweep needs at least one budget, e.g. --budgets 10k,20k,50k,100k")
        if len(set(self.budgets)) != len(self.budgets):
            raise UsageError("each budget may appear once in --budgets")

    @property
    def reranks(self) -> bool:
        """Whether the finalists' full-length runs can change the choice: more than one trial, or more
        than one augmentation. One trial with one augmentation is the search's best trained as its replay
        will train it; that run would decide nothing (round L spent 30.5 of its 40 minutes on one), so it
        is not made and the augmentation goes straight to the replay."""
        return self.finalists > 1 or len(self.finalist_augments) > 1


@dataclass
class SweepRow:
    budget: int
    study: str
    trial: int
    search_trials: int
    search_seconds: float  # the study's wall time, first trial start to last trial end (all runs)
    replay: dict[str, Any] = field(default_factory=dict)
    # [{trial, augment, search_val, val, params}], best first
    finalists: list[dict[str, Any]] = field(default_factory=list)
    finalist_seconds: float = 0.0  # wall time of the finalists' full-length runs (part of the search's cost)
    finalist_augments: list[str] = field(default_factory=list)  # --finalist-augments (empty: each trial's own)
    # --finalists-within-timeout: what the finalists were expected to take when the search ended (None: not asked)
    finalist_estimate: float | None = None
    # --replay-seeds with several seeds: each seed's figures and their means (budgetnas.runs.seed_summary);
    # ``replay`` is the first seed's run
    seed_replays: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    family: str
    dataset: str
    rows: list[SweepRow]
    markdown: Path
    html: Path

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "dataset": self.dataset, "markdown": str(self.markdown),
                "html": str(self.html), "rows": [row.__dict__ for row in self.rows]}


def parse_augments(text: str) -> tuple[str, ...]:
    """CLI value of ``--finalist-augments``: ``all`` or a comma-separated list (checked by SweepConfig)."""
    from budgetnas.recipe import AUGMENTS

    if text.strip() == "all":
        return AUGMENTS
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_budgets(text: str) -> tuple[int, ...]:
    from budgetnas.budget import parse_budget

    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError("--budgets needs a comma-separated list such as 10k,20k,50k,100k")
    return tuple(parse_budget(p.strip()) for p in parts)


def run_sweep(config: SweepConfig, progress: Progress | None = None) -> SweepResult:
    """Search, replay and report every budget of ``config`` in turn (each step resumable)."""
    from budgetnas.replay import check_writable, replay, replay_seeds
    from budgetnas.runs import seed_summary

    say = progress or (lambda _m: None)
    check_writable(config.out)
    rows: list[SweepRow] = []
    for i, budget in enumerate(sorted(config.budgets), start=1):
        search = replace(config.search, budget=budget, study=None,
                         timeout=config.budget_timeout if config.budget_timeout else config.search.timeout)
        say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: searching study {search.study_name}")
        reserve = finalist_reserve(config, search, say)
        summary = run_search(search, progress=say, callbacks=[reserve] if reserve else (),
                             admission=reserve.refusal if reserve else None)
        finalists: list[dict[str, Any]] = []
        chosen: str | int = "best"
        augment: str | None = None  # None: the chosen trial's own
        started = time.monotonic()
        if config.reranks:
            runs = f" x {len(config.finalist_augments)} augmentations" if config.finalist_augments else ""
            say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: re-ranking the top "
                f"{plural(config.finalists, 'trial')}{runs} with full-length runs (validation only)")
            finalists = rank_finalists(search, summary.study, config.finalists, config.replay_epochs, say,
                                       subset=config.replay_subset, augments=config.finalist_augments)
            if finalists:
                chosen = finalists[0]["trial"]
                augment = finalists[0]["augment"] if config.finalist_augments else None
        elif config.finalist_augments:  # one trial, one augmentation: nothing to re-rank (SweepConfig.reranks)
            chosen = top_trial(search, summary.study)
            augment = config.finalist_augments[0]
        finalist_seconds = time.monotonic() - started if finalists else 0.0
        if reserve is not None and finalists:
            say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: search and finalists took "
                f"{(time.monotonic() - reserve.started) / 60:.1f} of {reserve.limit / 60:.3g} minutes (finalists "
                f"{finalist_seconds / 60:.1f}, estimated {reserve.estimate / 60:.1f} when the search ended)")
        elif reserve is not None:
            say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: the search took "
                f"{(time.monotonic() - reserve.started) / 60:.1f} of {reserve.limit / 60:.3g} minutes (no finalist "
                "runs: one trial, at most one augmentation)")
        row = SweepRow(budget=budget, study=summary.study, trial=-1, search_trials=summary.trials,
                       search_seconds=search_span(search, summary.study), finalists=finalists,
                       finalist_seconds=finalist_seconds, finalist_augments=sorted(config.finalist_augments),
                       finalist_estimate=round(reserve.estimate, 1) if reserve is not None else None)
        seeds = config.replay_seeds or (search.seed,)
        path = write_winner(row, search, chosen, augment, config.replay_epochs, seeds[0], config.out / "found")
        say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: winner trial {row.trial} written to {path} "
            f"(its replay adds the test figures); replaying it"
            + (f" with augmentation {augment}" if augment else "")
            + (f" with seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
        # The replay trains on the whole training split (as the paper did) unless --replay-subset asks for a
        # slice, whatever slice the search used. The found config is rewritten as each seed's run ends, so a
        # stopped replay loses only the seeds that had not finished.
        done: list[dict[str, Any]] = []

        def keep(result: Any) -> None:  # called as each seed's run ends, within this budget's iteration
            done.append(_compact(result.metrics))
            done.sort(key=lambda m: seeds.index(m["seed"]))  # parallel seeds end in any order; the first leads
            row.replay = done[0]
            row.seed_replays = seed_summary(done) if len(seeds) > 1 else {}
            write_found(row, search, config.out / "found")

        options = dict(epochs=config.replay_epochs, augment=augment, device=search.device,
                       precision=search.precision, data_root=search.data_root, subset=config.replay_subset,
                       progress=say)
        if len(seeds) > 1:
            replay_seeds(search.storage, summary.study, row.trial, seeds=seeds, workers=config.replay_workers,
                         out=config.out / f"{summary.study}-best", on_result=keep, **options)
        else:
            keep(replay(search.storage, summary.study, row.trial, seed=seeds[0],
                        out=config.out / f"{summary.study}-best", **options))
        rows.append(row)
        say(f"[budget {i}/{len(config.budgets)}] {format_budget(budget)}: test accuracy "
            f"{percent(row.replay['test_accuracy'])}"
            + (f" ({seed_figures(row.seed_replays)})" if row.seed_replays else "") + f"; config {path}")
    family, dataset = config.search.family, config.search.dataset
    markdown = config.out / "SWEEP.md"
    markdown.write_text(render_markdown(family, dataset, rows), encoding="utf-8")
    html = config.out / "sweep.html"
    html.write_text(render_html(family, dataset, rows), encoding="utf-8")
    (config.out / "sweep.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str) + "\n",
                                           encoding="utf-8")
    return SweepResult(family, dataset, rows, markdown, html)


# The finalists' time reserved per second estimated: the runs have taken up to 1.09x the estimate.
FINALIST_MARGIN = 1.1
# Candidates refused in a row for the time left before the search ends: each refusal costs a sampler call
# (tens of milliseconds), and a sampler that proposed this many too-slow ones in a row has little else left.
REFUSALS_TO_END = 25


class FinalistReserve:
    """Keeps a budget's search to what leaves its finalists the rest of the budget's time.

    Why: the finalists' full-length runs are part of choosing a budget's winner (often a third of
    it), so a user who gives each budget 40 minutes means search and finalists together. Optuna's
    timeout only stops *starting* trials, and knows nothing of what comes after the search. So
    after each trial this works out what the time left still holds, and before each candidate
    trains the objective asks it (:meth:`refusal`).

    The finalists' estimate comes from what the search measured. A finalist run trains a trial's
    model for ``epochs`` epochs on ``scale`` times as many images as the search's epochs did, and
    each of those took the mean of the trial's ``epoch_seconds``, validation included (the
    finalists validate on as many images per training image), so it costs about ``mean * scale *
    epochs``. The finalists are the ``count`` trials the ranking would take were the search to end
    now, each run once per augmentation.

    **Admission** (when the study's trials say what their activations cost, see
    :class:`~budgetnas.cost.EpochTime`): a candidate trains only if its own ``search_epochs``
    epochs, and then the finalists' runs with it among them in place of the last, fit in the time
    left, at its predicted seconds per epoch. The search ends when not even the cheapest candidate
    measured so far would fit, or after :data:`REFUSALS_TO_END` refusals in a row (a sampler that
    keeps proposing what no longer fits). Why admission rather than ending the search: mbconv's
    trials differ five-fold in time, so a rule that must plan for the slowest (below) gave up the
    last 19 of 40 minutes in a replay of round G's seed-7 journal, minutes cheaper candidates can use.

    **Without that fit** (no epoch measured yet, or a family that estimates no activations) the
    rule is the plain one: the search ends when the time left would not hold one more trial (the
    longest trained to the end so far) and then the finalists, with the last of them replaced by a
    trial as slow as the slowest trained so far (:meth:`planned_seconds`).

    The limit is one the user holds us to, so every guess is taken from the safe side. Round E of
    ``studies/found/RESULTS.md`` (100K) ended 0.7 minutes over 40 with the median trial (the last
    one took 102 s against a median of 86) and the bare estimate (9.0 minutes of finalists for
    8.5 estimated); over the ten 40-minute runs there, the finalists took from 0.97x to 1.09x their
    estimate, hence :data:`FINALIST_MARGIN`. Round G (mbconv 20K) ended 1.2 minutes over 40 when
    the reserve planned for the finalist of the moment only: its last trial, three times as slow
    per epoch as the best before it, became the finalist with 16.6 minutes left against 20.3
    needed.
    """

    def __init__(self, limit: float, count: int, epochs: int | None, runs_per_trial: int, scale: float,
                 say: Progress = lambda _m: None, clock: Callable[[], float] = time.monotonic,
                 search_epochs: int | None = None) -> None:
        self.limit, self.count, self.epochs, self.runs_per_trial = limit, count, epochs, runs_per_trial
        self.scale, self.say, self.clock, self.search_epochs = scale, say, clock, search_epochs
        self.started = clock()
        self.estimate = 0.0  # the finalists' seconds, as estimated after the latest trial
        self._told = 0.0  # the reserve last told the user (the search's own ETA counts to budget_timeout)
        self._told_limit = 0.0  # the admission limit last told the user
        self.fit: EpochTime | None = None  # seconds per epoch from activations per image (admission)
        self.epoch_limit = math.inf  # the most seconds per search epoch a candidate may take now
        self.refused = 0  # candidates refused since the last one that trained

    def run_seconds(self, trial: Any) -> float:
        """Estimated seconds of one trial's finalist runs (0 when it measured no epoch)."""
        from budgetnas.records import recipe_of

        seconds = trial.user_attrs.get("epoch_seconds") or []
        if not seconds:
            return 0.0
        epochs = self.epochs or recipe_of(trial).epochs
        return sum(seconds) / len(seconds) * self.scale * epochs * self.runs_per_trial

    def finalist_seconds(self, study: Any) -> float:
        """Estimated seconds of the finalists' runs if the search ended now (0 before a trial is trained)."""
        return sum(self.run_seconds(t) for t in ranked_trials(study)[:self.count])

    def planned_seconds(self, study: Any) -> float:
        """The finalists' seconds to reserve: today's finalists, or them with the last one replaced by a
        trial as slow as the slowest trained so far, whichever is longer (the next trial may join them)."""
        from budgetnas.replay import trained_trials

        if not self.count:  # no finalist runs: nothing to reserve
            return 0.0
        current = [self.run_seconds(t) for t in ranked_trials(study)[:self.count]]
        slowest = max((self.run_seconds(t) for t in trained_trials(study)), default=0.0)
        displaced = current[-1] if len(current) == self.count else 0.0
        return max(sum(current), sum(current) - displaced + slowest)

    def admitted_epoch_seconds(self, current: list[float], left: float) -> float:
        """The most seconds per search epoch a new candidate may take with ``left`` seconds left: its own
        ``search_epochs`` epochs, then the finalists' runs as they stand (``current``: their seconds, best
        first), or with it in place of the last (at ``scale * epochs * runs_per_trial`` of its epochs per
        run), whichever is longer."""
        epochs = float(self.search_epochs or 1)
        if not self.count:  # no finalist runs: its own epochs must end within the time
            return left / epochs
        displaced = current[-1] if len(current) == self.count else 0.0
        per_epoch = self.scale * (self.epochs or epochs) * self.runs_per_trial  # its finalist seconds per epoch second
        alone = (left - FINALIST_MARGIN * sum(current)) / epochs
        joining = (left - FINALIST_MARGIN * (sum(current) - displaced)) / (epochs + FINALIST_MARGIN * per_epoch)
        return min(alone, joining)

    def refusal(self, activations: float | None) -> str | None:
        """Why a candidate with ``activations`` bytes of training activations per image may not train now
        (None: it may). Asked by the objective before it builds the candidate."""
        if self.fit is None or activations is None or self.fit(activations) <= self.epoch_limit:
            return None
        self.refused += 1
        left = self.limit - (self.clock() - self.started)
        return (f"too slow for the time left (--finalists-within-timeout): about {self.fit(activations):.1f} s "
                f"per epoch predicted from its {activations / 1e6:.2f} MB of activations per image, "
                f"{max(self.epoch_limit, 0.0):.1f} s allowed with {left / 60:.1f} minutes left")

    def __call__(self, study: Any, trial: Any) -> None:
        from budgetnas.records import recipe_of

        current = [self.run_seconds(t) for t in ranked_trials(study)[:self.count]]  # ranked once per trial
        self.estimate = sum(current)
        left = self.limit - (self.clock() - self.started)
        if trial.user_attrs.get("epoch_seconds"):
            self.refused = 0
        measured = [(t.user_attrs["memory_estimate"] / recipe_of(t).batch_size,
                     sum(t.user_attrs["epoch_seconds"]) / len(t.user_attrs["epoch_seconds"]))
                    for t in study.get_trials(deepcopy=False)
                    if t.user_attrs.get("epoch_seconds") and t.user_attrs.get("memory_estimate")]
        self.fit = EpochTime.fit(measured) if self.search_epochs else None
        if self.fit is None:
            self._end_or_plan(study, left)
            return
        self.epoch_limit = self.admitted_epoch_seconds(current, left)
        cheapest = self.fit(min(x for x, _ in measured))
        if cheapest > self.epoch_limit or self.refused >= REFUSALS_TO_END:
            finalists = f" with the finalists' {self.estimate * FINALIST_MARGIN / 60:.1f}" if self.count else ""
            why = (f"{self.refused} candidates in a row were too slow for it" if cheapest <= self.epoch_limit else
                   f"not even the cheapest candidate so far ({cheapest:.1f} s per epoch) would fit{finalists}")
            self.say(f"ending the search with {left / 60:.1f} minutes left: {why}")
            study.stop()
        elif self.epoch_limit < max(y for _, y in measured) and abs(self.epoch_limit - self._told_limit) > \
                0.1 * self._told_limit:
            self._told_limit = self.epoch_limit
            self.say(f"{left / 60:.1f} minutes left, finalists' time reserved about "
                     f"{self.estimate * FINALIST_MARGIN / 60:.1f}: admitting candidates of up to about "
                     f"{self.epoch_limit:.1f} s per epoch ({self.fit.largest(self.epoch_limit) / 1e6:.2f} MB of "
                     "activations per image)")

    def _end_or_plan(self, study: Any, left: float) -> None:
        """The rule without an activation fit: end when one more trial and the finalists would not fit."""
        from budgetnas.replay import trained_trials

        durations = [t.duration.total_seconds() for t in trained_trials(study) if t.duration is not None]
        another = max(durations, default=0.0)
        planned = self.planned_seconds(study)
        reserved = planned * FINALIST_MARGIN
        if planned and abs(planned - self._told) > 0.1 * self._told:
            self._told = planned
            self.say(f"finalists' time reserved: about {reserved / 60:.1f} minutes (estimated "
                     f"{self.estimate / 60:.1f}, {planned / 60:.1f} should a trial as slow as the slowest so far "
                     f"join them), so the search ends in about {max(left - another - reserved, 0.0) / 60:.1f}")
        if left < another + reserved:
            finalists = f"the finalists need about {reserved / 60:.1f} and " if self.count else ""
            self.say(f"ending the search with {left / 60:.1f} minutes left: {finalists}a trial trained to the end "
                     f"takes up to {another / 60:.1f}")
            study.stop()


def finalist_reserve(config: SweepConfig, search: SearchConfig, say: Progress) -> FinalistReserve | None:
    """The :class:`FinalistReserve` of one budget's search, or None when the time is the search's alone.

    With no finalist runs to make (:attr:`SweepConfig.reranks`) it reserves nothing and only keeps each
    trial within the time: Optuna's timeout stops *starting* trials, so the last one could overrun it.
    """
    if not config.finalists_within_timeout:
        return None
    from budgetnas.data import load_dataset

    def images(subset: int | None) -> int:  # training images of a run on this slice (exact: the split is made)
        return len(load_dataset(search.dataset, search.data_root, subset=subset, seed=search.settings().split_seed,
                                validation=search.validation).train)

    scale = images(config.replay_subset) / images(search.subset)
    return FinalistReserve(float(config.budget_timeout or 0), config.finalists if config.reranks else 0,
                           config.replay_epochs,
                           max(1, len(config.finalist_augments)), scale, say, search_epochs=search.epochs)


def search_span(search: SearchConfig, study_name: str) -> float:
    """Seconds from the study's first trial start to its last trial end: the search's wall time
    over all the runs that made it (this run alone may have added nothing when it resumed)."""
    from budgetnas.studyio import load_existing_study

    trials = load_existing_study(search.storage_url, study_name)[0].get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def ranked_trials(study: Any) -> list[Any]:
    """The study's trained trials, most accurate on validation first (the smaller on a tie): the order
    the finalists are taken in."""
    from budgetnas.records import settings_of
    from budgetnas.replay import trained_trials, val_accuracy_of

    settings = settings_of(study)
    return sorted(trained_trials(study), key=lambda t: (-val_accuracy_of(t, settings), t.user_attrs.get("params", 0)))


def top_trial(search: SearchConfig, study_name: str) -> str | int:
    """The trial a single finalist would be (the first of :func:`ranked_trials`), or ``best`` when
    none is trained yet (the replay then says so)."""
    from budgetnas.studyio import load_existing_study

    ranked = ranked_trials(load_existing_study(search.storage_url, study_name)[0])
    return ranked[0].number if ranked else "best"


def rank_finalists(search: SearchConfig, study_name: str, count: int, epochs: int | None,
                   say: Progress, subset: int | None = None,
                   augments: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Retrain the ``count`` most accurate complete trials as the replay will (its data, ``epochs``,
    the search's seed), each once per augmentation in ``augments`` (empty: its own recipe's), and rank
    the runs by validation accuracy, best first.

    Why: a search ranks candidates with short runs on a slice, and the best short run is not always
    the best full run (recipes that learn fast but plateau win short runs). Augmentation is the
    clearest case: it slows the first epochs and pays only once a model starts to overfit, which a
    10-epoch run on a slice rarely reaches, so the search learns to switch it off. The test split is
    not loaded here, so the choice stays a validation-only one.
    """
    from budgetnas.data import load_dataset
    from budgetnas.records import recipe_of, settings_of, spec_of
    from budgetnas.replay import val_accuracy_of
    from budgetnas.runs import train_run
    from budgetnas.studyio import load_existing_study

    study, _url = load_existing_study(search.storage_url, study_name)
    settings = settings_of(study)
    top = ranked_trials(study)
    # no test split: the choice is made on validation accuracy alone
    data = load_dataset(settings.dataset, search.data_root, subset=subset, seed=settings.split_seed,
                        validation=settings.validation)
    ranked = []
    jobs = [(trial, augment) for trial in top[:count] for augment in (augments or (recipe_of(trial).augment,))]
    for n, (trial, augment) in enumerate(jobs, start=1):
        stored = recipe_of(trial)
        recipe = replace(stored, epochs=epochs or stored.epochs, seed=search.seed, augment=augment)
        name = f"trial {trial.number}" + (f", augmentation {augment}" if augments else "")

        def on_epoch(e: Any) -> None:  # called during train(), so the loop variables are current
            say(f"  finalist {n}/{len(jobs)} ({name}): {epoch_line(e, recipe.epochs)}")

        run = train_run(spec_of(trial), recipe, data, dataset=settings.dataset, subset=subset, device=search.device,
                        precision=search.precision, on_epoch=on_epoch, evaluate_test=False)
        ranked.append({"trial": trial.number, "augment": augment, "search_val": val_accuracy_of(trial, settings),
                       "val": run.metrics["val_accuracy"], "params": run.metrics["params"]})
        say(f"  finalist {n}/{len(jobs)}: {name}, validation accuracy "
            f"{percent(ranked[-1]['search_val'])} in the search, {percent(ranked[-1]['val'])} after "
            f"{plural(recipe.epochs, 'epoch')}")
    return sorted(ranked, key=lambda r: (-r["val"], r["params"]))


def found_config(row: SweepRow, search: SearchConfig) -> RunConfig:
    """The run config of one budget's replayed winner: what to train, and how it was found."""
    from budgetnas.config import RunConfig
    from budgetnas.spec import spec_from_dict
    from budgetnas.trainer import Recipe

    from budgetnas.families import get_family

    r = row.replay
    result = {"budget": row.budget, **{k: r[k] for k in ("params", "val_accuracy", "test_accuracy", "train_seconds",
                                                          "mult_adds", "epochs", "seed", "device", "precision")
                                       if k in r},
              "study": row.study, "trial": row.trial, "search_trials": row.search_trials,
              "search_seconds": round(row.search_seconds, 1), "search_epochs": search.epochs,
              "search_subset": search.subset or 0, "search_validation": search.validation,
              "search_objectives": list(search.objectives),
              "search_sampler": search.sampler, "search_recipe_space": search.recipe_space,
              "search_max_mult_adds": _resolved_cap(search), "search_seed": search.seed,
              "search_enqueue": list(search.enqueue), "search_transfer_from": list(search.transfer_from),
              "search_pruner": search.pruner_name(), "search_space_version": get_family(search.family).space_version,
              "finalists": len({f["trial"] for f in row.finalists}) or 1}
    if row.finalists:
        result["finalist_seconds"] = round(row.finalist_seconds, 1)
    if row.finalist_estimate is not None:
        result["finalist_estimate"] = row.finalist_estimate
    if row.finalist_augments:  # augmentation chosen at full length, among these
        result["finalist_augments"] = list(row.finalist_augments)
    if r.get("subset"):  # --replay-subset: the test figures come from a quick run on a slice
        result["replay_subset"] = r["subset"]
    result.update(row.seed_replays)  # seeds = [{seed, val_accuracy, test_accuracy, train_seconds}], the means
    return RunConfig(name=f"found-{found_name(search)}", dataset=search.dataset, spec=spec_from_dict(r["spec"]),
                     recipe=Recipe.from_dict(r["recipe"]), result=result,
                     description=f"budgetnas search winner under {row.budget:,} parameters "
                                 f"({row.study} trial {row.trial})")


def _resolved_cap(search: SearchConfig) -> int:
    """The compute bound the search applied, ``auto`` resolved (0: none)."""
    if search.max_mult_adds != "auto":
        return search.max_mult_adds or 0
    from budgetnas.data import dataset_info

    return search.cost_bounds(dataset_info(search.dataset, search.data_root)[0]).max_mult_adds or 0


def seed_figures(summary: dict[str, Any]) -> str:
    """One winner's replays (:func:`budgetnas.runs.seed_summary`) in words, for the log, SWEEP.md and the found
    config's header: ``seed 0 93.98%, seed 1 93.90%; mean 93.94% (validation mean 93.47%)``."""
    runs = ", ".join(f"seed {s['seed']} {percent(s['test_accuracy'])}" for s in summary["seeds"])
    return (f"{runs}; mean {percent(summary['mean_test_accuracy'])} "
            f"(validation mean {percent(summary['mean_val_accuracy'])})")


def write_winner(row: SweepRow, search: SearchConfig, chosen: str | int, augment: str | None,
                 epochs: int | None, seed: int | None, folder: Path) -> Path:
    """Fill ``row`` with the winner ``chosen`` (``best`` or a trial number, resolved here once) as its
    replay will train it, and write its found config before that replay runs.

    Why: the replay of a slow winner takes as long as the search did, and the search's choice (the
    finalists' ranking included) is the expensive part of a sweep. Written first, a stopped or failed
    replay still leaves the config to retrain (``budgetnas train``) or replay (its ``[result]`` names
    the study and trial). A config that already holds a replay (a rerun of the sweep) is left as it is
    until this replay ends: overwritten now, a stopped rerun would lose measured figures.
    """
    from budgetnas.records import spec_of
    from budgetnas.replay import choose_trial, replay_recipe
    from budgetnas.spec import spec_to_dict
    from budgetnas.studyio import load_existing_study

    study, _url = load_existing_study(search.storage_url, row.study)
    trial = choose_trial(study, chosen).trial
    row.trial = trial.number
    recipe = replay_recipe(trial, epochs=epochs, seed=seed, augment=augment)
    row.replay = {"spec": spec_to_dict(spec_of(trial)), "recipe": recipe.to_dict(),
                  "params": trial.user_attrs["params"]}
    path = found_path(search, folder)
    if _replayed(path):
        return path
    return write_found(row, search, folder)


def found_name(search: SearchConfig) -> str:
    """``FAMILY-BUDGET`` of ``search``'s winner (a plug-in's family name, not its module path): its found
    config is ``found-FAMILY-BUDGET``, written as ``FAMILY-BUDGET.toml``."""
    from budgetnas.families import get_family

    return f"{get_family(search.family).name}-{format_budget(search.budget)}"


def found_path(search: SearchConfig, folder: Path) -> Path:
    """Where :func:`write_found` writes the config of ``search``'s budget."""
    return folder / f"{found_name(search)}.toml"


def _replayed(path: Path) -> bool:
    """Whether ``path`` is a found config that holds test figures."""
    from budgetnas.config import read_toml

    if not path.is_file():
        return False
    try:
        return "test_accuracy" in read_toml(path).get("result", {})
    except UsageError:  # unreadable: nothing measured to keep
        return False


def write_found(row: SweepRow, search: SearchConfig, folder: Path) -> Path:
    """Write :func:`found_config` as ``folder/FAMILY-BUDGET.toml``; ``budgetnas train`` accepts it."""
    from budgetnas.config import save_config

    config = found_config(row, search)
    r = row.replay
    path = found_path(search, folder)
    if "test_accuracy" not in r:
        figures = (f"Not replayed yet: {r['params']:,} parameters. When the sweep's replay ends, it rewrites this "
                   "file with the test figures.\n"
                   f"[result] holds the search that found it (selected on validation only).\n")
    elif row.seed_replays:
        figures = (f"Replayed for {r.get('epochs')} epochs, test accuracy {seed_figures(row.seed_replays)}, "
                   f"{r['params']:,} parameters.\n"
                   "[result] holds the first seed's figures, every seed's (seeds) and the search that found it "
                   "(selected on validation only).\n")
    else:
        figures = (f"Replayed for {r.get('epochs')} epochs (seed {r.get('seed')}): validation accuracy "
                   f"{percent(r['val_accuracy'])}, test accuracy {percent(r['test_accuracy'])}, "
                   f"{r['params']:,} parameters.\n"
                   "[result] holds the replayed figures and the search that found it (selected on validation only).\n")
    if r.get("subset") and "test_accuracy" in r:
        figures += (f"Trained on a {r['subset']:,}-image slice of the training split (--replay-subset): a quick "
                    "run, not a full-length result.\n")
    header = f"{config.description}.\n{figures}Retrain with: budgetnas train {path.name}"
    return save_config(config, path, header=header)


def render_markdown(family: str, dataset: str, rows: list[SweepRow]) -> str:
    """The sweep table, with the paper's model of the same family and budget beside ours."""
    paper = {m.budget: m for m in reference_models(dataset, family)}
    subset = next((r.replay.get("subset") for r in rows if r.replay.get("subset")), None)
    trained_on = (f"a {subset:,}-image slice of the training split (--replay-subset: a quick run, not comparable to "
                  "the paper)" if subset else "the whole training split")
    lines = [f"# Budget sweep: {family.upper()} on {dataset}", "",
             "Test accuracy is from replaying each study's best trial (chosen on validation accuracy only), trained on "
             f"{trained_on}.", ""]
    from budgetnas import tables
    from budgetnas.counting import human_count
    from budgetnas.spec import spec_from_dict
    from budgetnas.trainer import Recipe

    cells = []
    for row in rows:
        r = row.replay
        ref = paper.get(row.budget)
        diff = f"{(r['test_accuracy'] - ref.test_accuracy) * 100:+.2f} pt" if ref else "-"
        cells.append([format_budget(row.budget), f"{row.study} #{row.trial}", f"{r['params']:,}",
                      percent(r["val_accuracy"]), percent(r["test_accuracy"]),
                      percent(ref.test_accuracy) if ref else "-",
                      diff, f"{r['train_seconds']:.1f}", human_count(r["mult_adds"]), row.search_trials,
                      f"{row.search_seconds:.0f}"])
    lines.append(tables.markdown(["budget", "study / trial", "params", "val acc", "test acc", "paper test acc", "diff",
                                  "train s", "mult-adds", "search trials", "search s"], cells))
    lines += ["", tables.markdown(["budget", "architecture", "recipe"],
                                  [[format_budget(row.budget), describe_spec(spec_from_dict(row.replay["spec"])),
                                    Recipe.from_dict(row.replay["recipe"]).describe()]
                                   for row in rows if "spec" in row.replay])]
    for row in rows:
        if row.finalists:
            ranked = "; ".join(f"trial {f['trial']}" + (f" {f['augment']}" if f.get("augment") else "")
                               + f" {percent(f['search_val'])} -> {percent(f['val'])}" for f in row.finalists)
            lines += ["", f"{format_budget(row.budget)} finalists (validation accuracy: search -> full run): {ranked}"]
    for row in rows:
        if row.seed_replays:
            lines += ["", f"{format_budget(row.budget)} replays (test accuracy): {seed_figures(row.seed_replays)}"]
    lines += ["", f"Replays: {plural(rows[0].replay.get('epochs'), 'epoch')} each, "
              f"device {rows[0].replay.get('device')}, "
              f"precision {rows[0].replay.get('precision')}." if rows else ""]
    return "\n".join(lines) + "\n"


def render_html(family: str, dataset: str, rows: list[SweepRow]) -> str:
    """A self-contained plotly page: test accuracy vs budget, train time and mult-adds."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("test accuracy vs budget", "vs train seconds",
                                                        "vs mult-adds (batch 512)"))
    ours = [(row.budget, row.replay) for row in rows]
    text = [f"{format_budget(b)}: {r['params']:,} params" for b, r in ours]
    for col, x in enumerate(([b for b, _ in ours], [r["train_seconds"] for _, r in ours],
                             [r["mult_adds"] for _, r in ours]), start=1):
        fig.add_trace(go.Scatter(x=x, y=[r["test_accuracy"] for _, r in ours], mode="lines+markers", text=text,
                                 name="budgetnas (replayed best)", legendgroup="ours", showlegend=col == 1,
                                 marker=dict(size=10, color="#1f77b4")), row=1, col=col)
    ref = reference_models(dataset, family)
    if ref:
        fig.add_trace(go.Scatter(x=[m.budget for m in ref], y=[m.test_accuracy for m in ref], mode="markers",
                                 text=[f"paper {m.name}: {m.params:,} params" for m in ref], name="paper",
                                 marker=dict(size=10, symbol="x", color="#d62728")), row=1, col=1)
    fig.update_xaxes(type="log", title_text="parameter budget", row=1, col=1)
    fig.update_xaxes(title_text="train seconds", row=1, col=2)
    fig.update_xaxes(type="log", title_text="mult-adds", row=1, col=3)
    fig.update_yaxes(title_text="test accuracy", row=1, col=1)
    fig.update_layout(height=450, title=f"budgetnas sweep: {family.upper()} on {dataset}")
    table = render_markdown(family, dataset, rows)
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>budgetnas sweep {family}</title></head>"
            f"<body>{body}<pre>{_escape(table)}</pre></body></html>")


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "val_accuracy", "test_accuracy", "train_seconds", "mult_adds", "lowest_loss",
            "lowest_loss_epoch", "epochs", "seed", "device", "precision", "subset", "spec", "recipe")
    return {k: metrics[k] for k in keys if k in metrics}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
