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

Trials stopped early (the Median pruner in single-objective mode, :mod:`budgetnas.stopping`
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

from budgetnas import objectives, records, trialnotes
from budgetnas.counting import PAPER_BATCH, count_params, human_count, paper_batch_mult_adds
from budgetnas.errors import RunFailure
from budgetnas.families import get_family
from budgetnas.fmt import percent
from budgetnas.proxies import SCREEN_ATTR, ProxyScreen
from budgetnas.space import sample_recipe
from budgetnas.spec import spec_to_dict
from budgetnas.stopping import FrontRule
from budgetnas.trainer import EpochStats, Recipe, StopTraining, train

if TYPE_CHECKING:
    from budgetnas.data import Data

OBJECTIVES = objectives.NAMES  # kept for importers; the registry is budgetnas.objectives
CONSTRAINT = "params_over_budget"
COMPUTE_CONSTRAINT = "mult_adds_over_cap"


class Objective:
    """``Objective(settings, data, recipe)(trial)`` trains one candidate and returns its objective values.

    ``settings`` are the study's stored settings (family, budget, objectives, space, cap): the
    objective needs nothing of the search's run options but where to train and whether to stop early.
    """

    def __init__(self, settings: records.StudySettings, data: "Data", recipe: Recipe, *,
                 device: str = "auto", precision: str = "auto", early_stop: bool = True,
                 storage_url: str | None = None,
                 progress: Callable[[str], None] | None = None,
                 interruptible: Callable[[bool], None] | None = None,
                 on_step: Callable[..., None] | None = None, screen: ProxyScreen | None = None) -> None:
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
        self.rule = FrontRule(settings.objectives, recipe.epochs) if early_stop and not self.single else None
        self.screen = screen  # --proxy: score (and maybe reject) each candidate before training

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        config, data = self.settings, self.data
        spec = get_family(config.family).sample(trial, config.budget, data.input_shape, data.num_classes,
                                                config.parameterisation)
        recipe = sample_recipe(trial, self.recipe) if config.recipe_space == "search" else self.recipe
        params = count_params(spec, data.input_shape, data.num_classes)
        trial.set_constraint(CONSTRAINT, params - config.budget)
        trial.set_user_attr("params", params)
        mult_adds = paper_batch_mult_adds(spec, data.input_shape, data.num_classes)
        if config.max_mult_adds is not None:
            # The parameter budget does not bound compute (a wide conv without pooling can cost
            # 10x the paper's CNN-100K at the same count), so a cap is a second constraint.
            trial.set_constraint(COMPUTE_CONSTRAINT, mult_adds - config.max_mult_adds)
        reason = None
        if params > config.budget:
            reason = f"{params:,} parameters > budget {config.budget:,}: {spec.describe()}"
        elif config.max_mult_adds is not None and mult_adds > config.max_mult_adds:
            reason = (f"{human_count(mult_adds)} mult-adds > cap {human_count(config.max_mult_adds)} "
                      f"(batch {PAPER_BATCH}): {spec.describe()}")
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
        self.progress(f"trial {trial.number}: {params:,} params, {spec.describe()}")

        curve: list[EpochStats] = []
        front = self._front(trial.study) if self.rule else []
        started = time.perf_counter()

        def on_epoch(stats: EpochStats) -> None:
            curve.append(stats)
            # Kept while training runs, so the dashboard shows the curve of a running or stopped trial.
            trial.set_user_attr("val_accuracy_curve", [e.val_accuracy for e in curve])
            trial.set_user_attr("train_loss_curve", [e.train_loss for e in curve])
            self.progress(f"trial {trial.number}: epoch {stats.epoch}/{self.recipe.epochs} "
                          f"loss {stats.train_loss:.4f} val acc {percent(stats.val_accuracy)} ({stats.seconds:.1f}s)")
            if self.single:
                trial.report(stats.val_accuracy, stats.epoch)
                if stats.epoch < self.recipe.epochs and trial.should_prune():
                    raise StopTraining(f"pruned by the median rule after epoch {stats.epoch}")
            elif self.rule is not None:
                reason = self.rule.should_stop(stats, front, params=params, mult_adds=mult_adds,
                                               elapsed=time.perf_counter() - started, measured=measured)
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
        earlier = [t.user_attrs[SCREEN_ATTR] for t in trial.study.get_trials(deepcopy=False)
                   if SCREEN_ATTR in t.user_attrs and t.number != trial.number]
        value, reason = self.screen.check(spec, earlier, enqueued="enqueued" in trial.user_attrs)
        trial.set_user_attr(SCREEN_ATTR, value)
        return reason

    @staticmethod
    def _front(study: optuna.Study) -> list[Any]:
        # Read once per trial (not per epoch): the front changes only when a trial completes.
        return list(study.best_trials)
