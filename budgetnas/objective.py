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

from budgetnas import records
from budgetnas.counting import PAPER_BATCH, count_mult_adds, count_params, human_count
from budgetnas.errors import RunFailure
from budgetnas.limits import available_memory, gib, model_bytes
from budgetnas.space import sample_recipe, sample_spec
from budgetnas.stopping import FrontRule
from budgetnas.trainer import EpochStats, Recipe, StopTraining, train

if TYPE_CHECKING:
    from budgetnas.data import Data
    from budgetnas.search import SearchConfig

OBJECTIVES = ("accuracy", "runtime", "params", "mult_adds")
DIRECTIONS = {"accuracy": "maximize", "runtime": "minimize", "params": "minimize", "mult_adds": "minimize"}
METRIC_NAMES = {"accuracy": "val_accuracy", "runtime": "train_seconds", "params": "params", "mult_adds": "mult_adds"}
CONSTRAINT = "params_over_budget"
COMPUTE_CONSTRAINT = "mult_adds_over_cap"


class Objective:
    """``Objective(config, data)(trial)`` trains one candidate and returns its objective values."""

    def __init__(self, config: "SearchConfig", data: "Data", recipe: Recipe, *,
                 progress: Callable[[str], None] | None = None,
                 interruptible: Callable[[bool], None] | None = None) -> None:
        self.config = config
        self.data = data
        self.recipe = recipe
        self.progress = progress or (lambda message: None)
        # Told True while training runs: only then may Ctrl-C interrupt immediately (see search.py).
        self.interruptible = interruptible or (lambda flag: None)
        self.single = len(config.objectives) == 1
        self.rule = FrontRule(config.objectives, recipe.epochs) if config.early_stop and not self.single else None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        config, data = self.config, self.data
        spec = sample_spec(trial, config.family, config.budget, data.input_shape, data.num_classes,
                           config.parameterisation)
        recipe = sample_recipe(trial, self.recipe) if config.recipe_space == "search" else self.recipe
        params = count_params(spec, data.input_shape, data.num_classes)
        trial.set_constraint(CONSTRAINT, params - config.budget)
        trial.set_user_attr("params", params)
        # torchinfo's mult-adds grow linearly with the batch, so count one sample and scale.
        mult_adds = count_mult_adds(spec, data.input_shape, data.num_classes, batch=1) * PAPER_BATCH
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
        elif (need := model_bytes(spec, data.input_shape, data.num_classes, batch=recipe.batch_size,
                                  training=True)) > available_memory():
            reason = f"needs at least {gib(need)} of memory to train, more than is available: {spec.describe()}"
        if reason:
            trial.set_user_attr("rejected", reason)
            self.progress(f"trial {trial.number}: rejected before training, {reason}")
            raise optuna.TrialPruned(reason)

        trial.set_user_attr("mult_adds", mult_adds)
        trial.set_user_attr("mult_adds_batch", PAPER_BATCH)
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("recipe", recipe.to_dict())
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
                          f"loss {stats.train_loss:.4f} val acc {stats.val_accuracy:.4f} ({stats.seconds:.1f}s)")
            if self.single:
                trial.report(stats.val_accuracy, stats.epoch)
                if stats.epoch < self.recipe.epochs and trial.should_prune():
                    raise StopTraining(f"pruned by the median rule after epoch {stats.epoch}")
            elif self.rule is not None:
                reason = self.rule.should_stop(stats, front, params=params, mult_adds=mult_adds,
                                               elapsed=time.perf_counter() - started)
                if reason:
                    raise StopTraining(reason)

        try:
            self.interruptible(True)
            result = train(spec, data, recipe, device=config.device, precision=config.precision,
                           on_epoch=on_epoch)
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
        if result.stopped_early:
            self.progress(f"trial {trial.number}: {result.stopped_early}")
            raise optuna.TrialPruned(result.stopped_early)
        values = [self._value(name, result.val_accuracy, result.train_seconds, params, mult_adds)
                  for name in config.objectives]
        return values[0] if self.single else values

    @staticmethod
    def _value(name: str, accuracy: float, seconds: float, params: int, mult_adds: int) -> float:
        return float({"accuracy": accuracy, "runtime": seconds, "params": params, "mult_adds": mult_adds}[name])

    @staticmethod
    def _front(study: optuna.Study) -> list[Any]:
        # Read once per trial (not per epoch): the front changes only when a trial completes.
        return list(study.best_trials)
