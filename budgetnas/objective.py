"""The Optuna objective: trial -> spec -> exact budget check -> training -> objective values.

Over-budget candidates never train. The objective records the exact count and why the
candidate was rejected (user attributes ``params`` and ``rejected``), sets the budget as an
Optuna constraint (``Trial.set_constraint("params_over_budget", params - budget)``, positive
means infeasible) and raises :class:`optuna.TrialPruned`. Why pruned rather than a penalty
value: a penalty (say accuracy 0, runtime 0) would sit on the accuracy/runtime Pareto front
and in every plot, and with the runtime objective it would even look attractive. A pruned
trial has no values; TPE reads its constraint and ranks it with the infeasible trials (the
"bad" side of its density split), which is exactly the signal that teaches it where the
feasible region is. NSGA-II ignores pruned trials; use the default ``fit``
parameterisation, where rejections are rare, with it.

Candidates over the compute or memory bound (:mod:`budgetnas.cost`, counted from the spec
before anything is built) are rejected the same way, with constraints ``mult_adds_over_cap``
and ``memory_over_cap``. A sweep that must leave its finalists time (``--finalists-within-timeout``)
may also refuse a candidate predicted too slow for the time left (``admission``, see
:class:`~budgetnas.sweep.FinalistReserve`): recorded ``rejected`` the same way, but with no
constraint, since it says nothing of the candidate that would hold in another run.

Trials stopped early (Optuna's pruner in single-objective mode, :mod:`budgetnas.stopping`
in multi-objective mode) keep all their training attributes and end PRUNED: a partial run
has a flattering runtime and would distort the front. A trial whose training fails
(:class:`~budgetnas.errors.TrainingDiverged`, out of memory) records ``failed`` and raises
:class:`~budgetnas.errors.RunFailure`, which the search catches (the trial ends FAIL and the
search goes on). Ctrl-C records ``interrupted`` and propagates.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import optuna

from budgetnas import cost, objectives, records, trialnotes
from budgetnas.cost import COMPUTE_CONSTRAINT, MEMORY_CONSTRAINT, CostBounds  # noqa: F401 (re-exported)
from budgetnas.counting import PAPER_BATCH, count_params, human_count
from budgetnas.errors import RunFailure
from budgetnas.families import describe as describe_spec
from budgetnas.families import get_family
from budgetnas.fmt import percent
from budgetnas.limits import available_memory, gib
from budgetnas.proxies import SCREEN_ATTR, SCREEN_PROXY_ATTR, ProxyScreen
from budgetnas.space import sample_recipe
from budgetnas.spec import spec_to_dict
from budgetnas.stopping import PRUNER_WORDS, FrontRule, RungRule, compared_trials, resolve_pruner
from budgetnas.trainer import EpochStats, Recipe, StopTraining, train

if TYPE_CHECKING:
    from budgetnas.data import Data

OBJECTIVES = objectives.NAMES  # kept for importers; the registry is budgetnas.objectives
CONSTRAINT = "params_over_budget"


class Objective:
    """``Objective(settings, data, recipe)(trial)`` trains one candidate and returns its objective values.

    ``settings`` are the study's stored settings (family, budget, objectives, space, caps): the
    objective needs nothing of the search's run options but where to train, which early-stopping
    rule to apply (``pruner``, see stopping.py) and the caps resolved for this machine (``bounds``).
    """

    def __init__(self, settings: records.StudySettings, data: "Data", recipe: Recipe, *,
                 device: str = "auto", precision: str = "auto", pruner: str = "auto",
                 bounds: CostBounds | None = None,
                 storage_url: str | None = None,
                 progress: Callable[[str], None] | None = None,
                 interruptible: Callable[[bool], None] | None = None,
                 on_step: Callable[..., None] | None = None, screen: ProxyScreen | None = None,
                 admission: Callable[[float | None], str | None] | None = None) -> None:
        self.settings = settings
        self.device, self.precision = device, precision
        self.storage_url = storage_url  # where the dashboard's artifacts go (trialnotes); None: none
        self.data = data
        self.recipe = recipe
        self.progress = progress or (lambda message: None)
        # Told True while training runs: only then may Ctrl-C interrupt immediately (see search.py).
        self.interruptible = interruptible or (lambda flag: None)
        # (trial, epoch, epochs, step, steps, images, epoch images) after every training step: the live display.
        self.on_step = on_step
        self.single = len(settings.objectives) == 1
        self.pruner = resolve_pruner(pruner, settings.objectives)
        self.rule = FrontRule(settings.objectives, recipe.epochs) if self.pruner == "front" else None
        self.rungs = RungRule(settings.objectives, recipe.epochs) if self.pruner == "sha" and not self.single else None
        if bounds is None:  # the study's caps, "auto" resolved for this input and machine
            from budgetnas.device import resolve_placement

            bounds = CostBounds.resolve(settings.max_mult_adds, settings.max_memory, settings.budget,
                                        data.input_shape, resolve_placement(device, precision).device.type,
                                        family=settings.family)
        self.bounds = bounds
        self.screen = screen  # --proxy: score (and maybe reject) each candidate before training
        # A sweep's time left (sweep.FinalistReserve.refusal): activations per image -> why not now, or None.
        # Unlike the caps it says nothing of the candidate itself, so it sets no constraint.
        self.admission = admission

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        config, data = self.settings, self.data
        spec = get_family(config.family).sample(trial, config.budget, data.input_shape, data.num_classes,
                                                config.parameterisation)
        recipe = sample_recipe(trial, self.recipe) if config.recipe_space == "search" else self.recipe
        params = count_params(spec, data.input_shape, data.num_classes)
        trial.set_constraint(CONSTRAINT, params - config.budget)
        trial.set_user_attr("params", params)
        # The budget bounds parameters, not compute or memory: both are counted from the spec
        # (nothing is built) and bounded as further constraints (cost.py).
        mult_adds = cost.mult_adds(spec, data.input_shape, data.num_classes)
        memory = cost.training_memory(spec, data.input_shape, recipe.batch_size)
        for name, over in self.bounds.violations(mult_adds, memory).items():
            trial.set_constraint(name, over)
        if memory is not None:
            trial.set_user_attr("memory_estimate", memory)
        reason = None
        if params > config.budget:
            reason = f"{params:,} parameters > budget {config.budget:,}: {describe_spec(spec)}"
        elif self.bounds.max_mult_adds is not None and mult_adds > self.bounds.max_mult_adds:
            reason = (f"{human_count(mult_adds)} mult-adds > cap {human_count(self.bounds.max_mult_adds)} "
                      f"(batch {PAPER_BATCH}): {describe_spec(spec)}")
        elif self.bounds.max_memory is not None and memory is not None and memory > self.bounds.max_memory:
            reason = (f"{cost.human_bytes(memory)} of training activations (estimated, batch {recipe.batch_size}) "
                      f"> cap {cost.human_bytes(self.bounds.max_memory)}: {describe_spec(spec)}")
        elif (need := cost.model_bytes(spec, data.input_shape, data.num_classes, batch=recipe.batch_size,
                                  training=True)) > available_memory():
            # Whatever the caps say (even none): a model that cannot fit at all is never built.
            reason = f"needs at least {gib(need)} of memory to train, more than is available: {describe_spec(spec)}"
        elif self.admission is not None and (refused := self.admission(
                memory / recipe.batch_size if memory is not None else None)):
            reason = f"{refused}: {describe_spec(spec)}"
        if not reason and self.screen is not None:
            reason = self._screened(trial, spec)
        if reason:
            trial.set_user_attr("rejected", reason)
            self.progress(f"trial {trial.number}: rejected before training, {reason}")
            raise optuna.TrialPruned(reason)

        trial.set_user_attr("mult_adds", mult_adds)
        trial.set_user_attr("mult_adds_batch", PAPER_BATCH)
        trial.set_user_attr("spec", spec_to_dict(spec))
        trial.set_user_attr("recipe", recipe.to_dict())
        candidate = objectives.Candidate(spec, data.input_shape, data.num_classes, self.device, self.precision)
        measured = {o.name: o.measure(candidate) for o in map(objectives.objective, config.objectives) if o.measure}
        for name, value in measured.items():
            trial.set_user_attr(objectives.objective(name).metric, value)
        self.progress(f"trial {trial.number}: {params:,} params, {describe_spec(spec)}")

        curve: list[EpochStats] = []
        front = self._front(trial.study) if self.rule else []
        started = time.perf_counter()

        def on_epoch(stats: EpochStats) -> None:
            curve.append(stats)
            # Kept while training runs, so the dashboard shows the curve of a running or stopped trial.
            trial.set_user_attr("val_accuracy_curve", [e.val_accuracy for e in curve])
            trial.set_user_attr("train_loss_curve", [e.train_loss for e in curve])
            trial.set_user_attr("epoch_seconds", [e.seconds for e in curve])  # the rung rule reads peers' runtimes
            self.progress(f"trial {trial.number}: epoch {stats.epoch}/{self.recipe.epochs} "
                          f"loss {stats.train_loss:.4f} val acc {percent(stats.val_accuracy)} ({stats.seconds:.1f}s)")
            if self.single:
                trial.report(stats.val_accuracy, stats.epoch)
                if stats.epoch < self.recipe.epochs and trial.should_prune():
                    raise StopTraining(f"pruned by {PRUNER_WORDS[self.pruner]} after epoch {stats.epoch}")
            elif self.rule is not None:
                reason = self.rule.should_stop(stats, front, params=params, mult_adds=mult_adds,
                                               elapsed=time.perf_counter() - started, measured=measured)
                if reason:
                    raise StopTraining(reason)
            elif self.rungs is not None and stats.epoch in self.rungs.rungs:
                peers = compared_trials(trial.study, trial.number)
                reason = self.rungs.should_stop(curve, peers, params=params, mult_adds=mult_adds,
                                                measured=measured)
                if reason:
                    raise StopTraining(reason)

        def on_step(epoch: int, step: int, steps: int, images: int) -> None:
            self.on_step(trial.number, epoch, recipe.epochs, step, steps, images, len(data.train))

        try:
            self.interruptible(True)
            result = train(spec, data, recipe, device=self.device, precision=self.precision,
                           on_epoch=on_epoch, on_step=on_step if self.on_step else None)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", f"interrupted by Ctrl-C during epoch {len(curve) + 1}")
            raise
        except RunFailure as exc:
            trial.set_user_attr("failed", str(exc))
            self.progress(f"trial {trial.number}: failed: {exc}")
            raise
        except RuntimeError as exc:
            if "out of memory" not in str(exc).lower():
                raise
            reason = f"out of memory: {' '.join(str(exc).split())[:200]}"
            trial.set_user_attr("failed", reason)
            self.progress(f"trial {trial.number}: failed: {reason}")
            raise RunFailure(reason) from None
        finally:
            self.interruptible(False)

        for key, value in records.training_attrs(spec, recipe, result, mult_adds).items():
            trial.set_user_attr(key, value)
        # The dashboard's view of it: readable attributes, a Markdown note, the learning curve as an artifact.
        trialnotes.annotate(trial, self.storage_url, spec, recipe, params, config.budget, mult_adds,
                            [e.val_accuracy for e in result.epochs], [e.train_loss for e in result.epochs],
                            result.train_seconds, result.stopped_early)
        if result.stopped_early:
            self.progress(f"trial {trial.number}: {result.stopped_early}")
            raise optuna.TrialPruned(result.stopped_early)
        values = objectives.values(config.objectives, objectives.Outcome(
            params, mult_adds, accuracy=result.val_accuracy, seconds=result.train_seconds, measured=measured))
        return values[0] if self.single else values

    def _screened(self, trial: optuna.Trial, spec: Any) -> str | None:
        """Score the candidate with ``--proxy`` (recorded) and say why the pre-screen rejects it, if it does."""
        # Only scores of the same proxy compare (their scales differ by orders of magnitude: a study resumed with
        # another --proxy rejected every candidate); a score recorded without its proxy's name is left out.
        earlier = [t.user_attrs[SCREEN_ATTR] for t in trial.study.get_trials(deepcopy=False)
                   if SCREEN_ATTR in t.user_attrs and t.user_attrs.get(SCREEN_PROXY_ATTR) == self.screen.name
                   and t.number != trial.number]
        value, reason = self.screen.check(spec, earlier, enqueued="enqueued" in trial.user_attrs)
        trial.set_user_attr(SCREEN_ATTR, value)
        trial.set_user_attr(SCREEN_PROXY_ATTR, self.screen.name)
        return reason

    @staticmethod
    def _front(study: optuna.Study) -> list[Any]:
        # Read once per trial (not per epoch): the front changes only when a trial completes.
        return list(study.best_trials)
