"""Early stopping for multi-objective searches, where Optuna's pruners do not work.

``Trial.report``/``should_prune`` raise ``NotImplementedError`` in multi-objective studies
(Optuna's ``Trial.report`` documentation), so budgetnas brings its own rule, applied after each epoch
before the last:

    Stop a trial at epoch ``k`` when some trial already on the Pareto front
    (a) is at least as good on every objective other than accuracy, with this trial's
        runtime projected to the full run as ``elapsed * epochs / k``; and
    (b) had a validation accuracy at its own epoch ``k`` that beats this trial's accuracy at
        epoch ``k`` by more than ``margin`` (default 0.01, i.e. one percentage point).

Such a trial is behind a front member at the same point of training while costing at least
as much, so it is predicted to end dominated. Learning curves of small nets on one dataset
with one recipe rarely cross by more than a point after the first epochs; the margin and
``min_epoch`` (no decision before that many epochs) keep the rule conservative, and
``min_front`` (default 1) can make it wait for a larger front. Per-epoch values are kept
as trial user attributes either way, so a stopped trial's curve stays visible. One front
member is enough evidence: on a two-objective front a single fast, accurate trial often
dominates everything sampled early.

The rule needs the ``accuracy`` objective; with accuracy alone (single objective) the
search uses Optuna's ``MedianPruner`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from budgetnas import objectives
from budgetnas.trainer import EpochStats

@dataclass(frozen=True)
class FrontRule:
    """The stopping rule above; ``should_stop`` returns a reason or None."""

    objectives: tuple[str, ...]
    epochs: int
    margin: float = 0.01
    min_epoch: int = 1
    min_front: int = 1

    def should_stop(self, stats: EpochStats, front: Sequence[Any], *, params: int, mult_adds: int,
                    elapsed: float, measured: Mapping[str, float] | None = None) -> str | None:
        """Decide after epoch ``stats.epoch`` of the running trial.

        Args:
            stats:
                the epoch just finished.
            front:
                the Pareto-optimal completed trials (``FrozenTrial`` with ``values`` in the
                order of ``objectives`` and a ``val_accuracy_curve`` user attribute).
            params, mult_adds:
                the running trial's exact counts (known before training).
            measured:
                values of objectives measured before training (``latency``), by name.
            elapsed:
                training seconds so far.
        """
        if "accuracy" not in self.objectives or stats.epoch >= self.epochs or stats.epoch < self.min_epoch:
            return None
        if len(front) < self.min_front:
            return None
        costs = [objectives.objective(name) for name in self.objectives if name != "accuracy"]
        outcome = objectives.Outcome(params, mult_adds, seconds=elapsed * self.epochs / stats.epoch,
                                     measured=measured or {})
        mine = {o.name: float(o.value_of(outcome)) for o in costs}
        for other in front:
            values = dict(zip(self.objectives, other.values or ()))
            if any(not o.at_least_as_good(values.get(o.name, float("nan")), mine[o.name]) for o in costs):
                continue  # cheaper than this front member on some objective: it may still join the front
            curve = other.user_attrs.get("val_accuracy_curve") or []
            if len(curve) < stats.epoch:
                continue
            ahead = curve[stats.epoch - 1] - stats.val_accuracy
            if ahead > self.margin:
                return (f"stopped after epoch {stats.epoch}: trial {other.number} on the front was "
                        f"{ahead * 100:.1f} points more accurate at this epoch and costs no more")
        return None
