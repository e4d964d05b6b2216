"""Early stopping: which rule stops an unpromising trial, and the two multi-objective rules.

``--pruner`` picks the rule (:data:`PRUNERS`; ``auto`` = :func:`resolve_pruner`'s default for
the objectives). Single objective: Optuna's ``MedianPruner`` (``median``, the default), our
:class:`HalfwayPruner` (``halfway``: the median of every trial, not only the finished ones),
``SuccessiveHalvingPruner`` (``sha``) or ``HyperbandPruner`` (``hyperband``), fed by
``Trial.report`` after each epoch. Several objectives: the front rule (``front``) or the rung
rule (``sha``), both below, since Optuna's pruners are single-objective only.

The front rule
--------------

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

The rule needs the ``accuracy`` objective.

The rung rule (successive halving for several objectives)
---------------------------------------------------------
Asynchronous successive halving in the spirit of Syne Tune's MOASHA (Schmucker et al., 2021,
"Multi-objective asynchronous successive halving"). Rungs sit at epochs ``r, r*eta, r*eta^2,
...`` before the last (``r = 1``, ``eta = 3``: epoch 1 of a 3-epoch search; 1 and 3 of a
9-epoch one). When a trial reaches a rung it is ranked with every trial of the study that
reached that rung before (running, stopped or complete, so workers share the rungs; not failed:
:func:`compared_trials`), on the
study's objectives at that point of training: accuracy at the rung's epoch, runtime projected
to the full run (``seconds so far * epochs / rung``), parameters and mult-adds (exact). The
ranking is non-dominated sorting (front 1, then the front of the rest, ...), ties within a
front broken by NSGA-II's crowding distance (spread along the front is worth keeping), then by
accuracy. The trial goes on only if it is among the best ``max(1, n // eta)`` of the ``n``
trials at the rung (itself included), as Optuna's single-objective ``SuccessiveHalvingPruner``
decides. Why: it needs no margin or curve model, spends ``1/eta`` of the trials' budget on
deciding, keeps the cheap end of the front alive (a fast net is non-dominated even when less
accurate), and is the rule peer tools use. Which of the two is the default was measured
(``benchmarks/results/pruners.md``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from budgetnas import objectives
from budgetnas.errors import UsageError

from budgetnas.recipe import EpochStats

if TYPE_CHECKING:
    import optuna

PRUNERS = ("auto", "median", "halfway", "sha", "hyperband", "front", "none")
SINGLE_PRUNERS = ("median", "halfway", "sha", "hyperband", "none")
MULTI_PRUNERS = ("front", "sha", "none")
DEFAULT_SINGLE = "median"
DEFAULT_MULTI = "sha"  # measured against "front": benchmarks/results/pruners.md
ETA = 3  # successive halving's reduction factor (both modes)
PRUNER_WORDS = {"median": "the median rule", "halfway": "the halfway median", "sha": "successive halving",
                "hyperband": "Hyperband"}


def resolve_pruner(name: str, names: Sequence[str]) -> str:
    """The rule a search with the objectives ``names`` uses for ``--pruner name`` (``auto`` resolved)."""
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
    single = len(names) == 1
    if name == "auto":
        return DEFAULT_SINGLE if single else DEFAULT_MULTI
    if single and name not in SINGLE_PRUNERS:
        raise UsageError(f"--pruner {name} needs several objectives; with accuracy alone choose one of "
                         f"{', '.join(SINGLE_PRUNERS)}")
    if not single and name not in MULTI_PRUNERS:
        raise UsageError(f"--pruner {name} is one of Optuna's single-objective pruners; with several objectives "
                         f"choose one of {', '.join(MULTI_PRUNERS)}")
    return name


def make_pruner(name: str, epochs: int) -> "optuna.pruners.BasePruner":
    """The Optuna pruner for a resolved rule (a no-op for the multi-objective rules, applied by the objective)."""
    import optuna

    if name == "median":
        # No verdict before half the epochs: an annealed schedule (cosine, one-cycle) or augmentation learns
        # late, and judging epoch 1 against a constant-lr run would prune exactly those recipes.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 2)
    if name == "halfway":
        return HalfwayPruner(step=max(1, epochs // 2))
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=ETA)
    return optuna.pruners.NopPruner()


class HalfwayPruner:
    """One verdict, at epoch ``step`` (half the epochs): stop a trial whose best validation accuracy
    so far is below the median of every other trial's accuracy at that epoch, stopped ones included.

    Why not Optuna's ``MedianPruner``: its median is over COMPLETE trials only (its source,
    ``PercentilePruner.prune``), and once it prunes, only trials above that median complete, so the
    median climbs with every trial it lets through. A study that starts from strong trials (the
    ``--transfer-from`` starts, finished first) stopped 131 of 194 trials at CNN 50K and 104 of 120
    at 100K that way (``studies/found/RESULTS.md``), and TPE learned from pruned curves. Here every
    trial that reached the epoch counts, so the rule stops about half of the trials at any point of
    a study, whatever finished first; one verdict (not one per epoch) keeps it from compounding.
    ``n_min_trials`` peers are needed before the first verdict.
    """

    def __init__(self, step: int, n_min_trials: int = 4) -> None:
        self.step = step
        self.n_min_trials = n_min_trials

    def prune(self, study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        if trial.last_step != self.step:
            return False
        peers = [t.intermediate_values[self.step] for t in compared_trials(study, trial.number)
                 if self.step in t.intermediate_values]
        if len(peers) < self.n_min_trials:
            return False
        best = max(trial.intermediate_values.values())
        return bool(best < statistics.median(peers))


def compared_trials(study: "optuna.Study", number: int) -> list["optuna.trial.FrozenTrial"]:
    """The trials whose curves a stopping rule weighs trial ``number`` against: running, stopped and
    complete ones, never failed ones. A failed trial's curve was cut short by a crash or a killed
    worker, and its retry (same parameters, same seed, the same curve) would tie with it and lose on
    runtime: the retry would be stopped by its own failed original."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return [t for t in study.get_trials(deepcopy=False, states=states) if t.number != number]


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


@dataclass(frozen=True)
class RungRule:
    """The rung rule above; ``should_stop`` returns a reason or None."""

    objectives: tuple[str, ...]
    epochs: int
    eta: int = ETA
    min_resource: int = 1

    @property
    def rungs(self) -> tuple[int, ...]:
        """The epochs at which trials are compared (the last epoch is never one)."""
        levels, level = [], self.min_resource
        while level < self.epochs:
            levels.append(level)
            level *= self.eta
        return tuple(levels)

    def should_stop(self, curve: Sequence[EpochStats], peers: Sequence[Any], *, params: int,
                    mult_adds: int, measured: Mapping[str, float] | None = None) -> str | None:
        """Decide after the last epoch of ``curve`` (the running trial's epochs so far).

        ``peers`` are the study's other trials (``FrozenTrial``); those whose
        ``val_accuracy_curve`` and ``epoch_seconds`` user attributes reach this rung compete.
        """
        rung = len(curve)
        if not curve or rung not in self.rungs:
            return None
        mine = self.point(curve[-1].val_accuracy, sum(e.seconds for e in curve), rung, params, mult_adds,
                          measured or {})
        points, numbers = [mine], [None]
        for other in peers:
            attrs = other.user_attrs
            accuracy, seconds = attrs.get("val_accuracy_curve") or [], attrs.get("epoch_seconds") or []
            if len(accuracy) >= rung and len(seconds) >= rung:
                points.append(self.point(accuracy[rung - 1], sum(seconds[:rung]), rung, attrs.get("params", 0),
                                         attrs.get("mult_adds", 0), _measured(attrs, self.objectives)))
                numbers.append(other.number)
        keep = max(1, len(points) // self.eta)
        order = rung_order(points, self.maximise)
        if order.index(0) < keep:
            return None
        better = ", ".join(str(numbers[i]) for i in order[:min(keep, 5)])
        return (f"stopped at the epoch-{rung} rung: not in the best {keep} of the {len(points)} trials that reached "
                f"it (non-dominated sorting on {', '.join(self.objectives)}; ahead: trial {better})")

    @property
    def maximise(self) -> tuple[bool, ...]:
        return tuple(objectives.objective(name).direction == "maximize" for name in self.objectives)

    def point(self, accuracy: float, seconds: float, rung: int, params: int, mult_adds: int,
              measured: Mapping[str, float] | None = None) -> tuple[float, ...]:
        """The objective values at this rung (runtime projected to the full length) as the registry computes them."""
        outcome = objectives.Outcome(params, mult_adds, accuracy=accuracy, seconds=seconds * self.epochs / rung,
                                     measured=measured or {})
        return tuple(float(v) for v in objectives.values(self.objectives, outcome))


def _measured(attrs: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """A peer trial's objectives measured before training (e.g. latency), read from its user attributes."""
    found = {}
    for name in names:
        o = objectives.objective(name)
        if o.measure is not None and o.metric in attrs:
            found[name] = float(attrs[o.metric])
    return found


def rung_order(points: Sequence[Sequence[float]], maximise: Sequence[bool]) -> list[int]:
    """Indices of ``points`` best first: by non-dominated front, then crowding distance (larger
    first), then the first objective (accuracy in budgetnas), then index."""
    signed = [tuple(v if up else -v for v, up in zip(p, maximise)) for p in points]  # all maximised
    ranks = nondominated_ranks(signed)
    crowding = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, distance in zip(members, crowding_distances([signed[i] for i in members])):
            crowding[i] = distance
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], -signed[i][0], i))


def nondominated_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Front index of each point (0 = not dominated by any), all objectives maximised."""
    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    ranks = [-1] * len(points)
    remaining, rank = set(range(len(points))), 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within one front (inf at the ends of each objective)."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][k])
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distance[here] += (points[after][k] - points[before][k]) / (high - low)
    return distance
