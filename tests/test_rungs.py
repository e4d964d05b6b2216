"""Multi-fidelity early stopping (budgetnas/stopping.py): the rung rule on synthetic values,
inside a real tiny search, and Optuna's successive halving in single-objective mode."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from conftest import assert_one_line_error
from optuna.trial import TrialState
from test_search import load, search, small_npz  # noqa: F401  (fixtures: a tiny real 8x8 search)

from budgetnas.stopping import RungRule, crowding_distances, nondominated_ranks, resolve_pruner, rung_order
from budgetnas.trainer import EpochStats


def _epochs(*accuracies: float, seconds: float = 2.0) -> list[EpochStats]:
    return [EpochStats(epoch=i, train_loss=1.0, val_accuracy=a, seconds=seconds) for i, a in enumerate(accuracies, 1)]


def _peer(number: int, accuracies: list[float], seconds: float, params: int = 1000, mult_adds: int = 10) -> SimpleNamespace:
    return SimpleNamespace(number=number, user_attrs={"val_accuracy_curve": accuracies,
                                                       "epoch_seconds": [seconds] * len(accuracies),
                                                       "params": params, "mult_adds": mult_adds})


def test_nondominated_ranks_and_crowding():
    points = [(0.9, -10.0), (0.8, -5.0), (0.7, -6.0), (0.6, -20.0), (0.85, -7.0)]  # maximised
    assert nondominated_ranks(points) == [0, 0, 1, 2, 0]
    distances = crowding_distances([(0.9, -10.0), (0.85, -7.0), (0.8, -5.0)])
    assert distances[0] == distances[2] == math.inf and distances[1] == pytest.approx(2.0)
    assert crowding_distances([(1.0, 1.0), (2.0, 2.0)]) == [math.inf, math.inf]


def test_rung_order_sorts_by_front_then_spread_then_accuracy():
    # accuracy up, runtime down; the middle of the first front is least crowded last
    points = [(0.80, 5.0), (0.90, 10.0), (0.85, 7.0), (0.70, 6.0), (0.60, 20.0)]
    assert rung_order(points, (True, False)) == [1, 0, 2, 3, 4]
    # one objective: plain accuracy order
    assert rung_order([(0.5,), (0.9,), (0.7,)], (True,)) == [1, 2, 0]


def test_rungs_sit_at_powers_of_eta_before_the_last_epoch():
    assert RungRule(("accuracy", "runtime"), epochs=3).rungs == (1,)
    assert RungRule(("accuracy", "runtime"), epochs=9).rungs == (1, 3)
    assert RungRule(("accuracy", "runtime"), epochs=10, eta=2).rungs == (1, 2, 4, 8)
    assert RungRule(("accuracy",), epochs=1).rungs == ()


def test_rung_rule_keeps_the_top_third_by_non_dominated_sorting():
    rule = RungRule(("accuracy", "runtime"), epochs=9)
    peers = [_peer(1, [0.80, 0.85], 2.0), _peer(2, [0.78, 0.84], 1.0), _peer(3, [0.70], 3.0),
             _peer(4, [0.60], 4.0), _peer(5, [0.75], 2.5)]
    # 6 trials at rung 1 keep 2. Dominated (slower and less accurate than trial 1): stopped, naming who is ahead.
    reason = rule.should_stop(_epochs(0.72, seconds=2.5), peers, params=1000, mult_adds=10)
    assert reason and "epoch-1 rung" in reason and "best 2 of the 6" in reason and "trial 1, 2" in reason
    # The most accurate so far continues; so does the fastest (the other end of the front).
    assert rule.should_stop(_epochs(0.90, seconds=2.5), peers, params=1000, mult_adds=10) is None
    assert rule.should_stop(_epochs(0.50, seconds=0.5), peers, params=1000, mult_adds=10) is None
    # Not a rung (epoch 2): no decision; at rung 3 only trials with three epochs compete (none: it goes on).
    assert rule.should_stop(_epochs(0.1, 0.1), peers, params=1000, mult_adds=10) is None
    assert rule.should_stop(_epochs(0.1, 0.1, 0.1), peers, params=1000, mult_adds=10) is None
    # The first trial at a rung always continues; the second continues only if it ranks first.
    assert rule.should_stop(_epochs(0.1), [], params=1, mult_adds=1) is None
    assert rule.should_stop(_epochs(0.7, seconds=3.0), [_peer(1, [0.8], 2.0)], params=1000, mult_adds=10)


def test_rung_rule_projects_runtime_and_uses_exact_counts():
    rule = RungRule(("accuracy", "params"), epochs=3)
    peers = [_peer(1, [0.8], 2.0, params=5000), _peer(2, [0.7], 2.0, params=4000)]
    # 3 at the rung keep 1: equally accurate as trial 1 but with fewer parameters dominates it
    assert rule.should_stop(_epochs(0.8), peers, params=3000, mult_adds=0) is None
    assert rule.should_stop(_epochs(0.75), peers, params=6000, mult_adds=0)
    assert rule.point(0.8, 4.0, 1, 10, 20) == (0.8, 10.0)
    assert RungRule(("accuracy", "runtime"), epochs=9).point(0.8, 4.0, 3, 10, 20) == (0.8, 12.0)


def test_the_rung_rule_stops_trials_at_a_rung_in_a_real_search(search, tmp_path):
    proc = search("--trials", "6", "--epochs", "3", "--pruner", "sha", "--objectives", "accuracy,params",
                  "--sampler", "random")
    assert proc.returncode == 0, proc.stderr
    assert "early stopping: sha" in proc.stderr
    trials = load(tmp_path).trials
    stopped = [t for t in trials if "stopped_early" in t.user_attrs]
    assert stopped, "six random candidates at one rung: max(1, n // 3) of them go on"
    rule = RungRule(("accuracy", "params"), epochs=3)
    for trial in stopped:
        assert trial.state == TrialState.PRUNED and "epoch-1 rung" in trial.user_attrs["stopped_early"]
        assert len(trial.user_attrs["val_accuracy_curve"]) == 1  # trained one epoch, not three
        # The decision replays from what the study stored: the trials that reached the rung before it.
        earlier = [t for t in trials if t.number < trial.number and "val_accuracy_curve" in t.user_attrs]
        curve = _epochs(trial.user_attrs["val_accuracy_curve"][0], seconds=trial.user_attrs["epoch_seconds"][0])
        assert rule.should_stop(curve, earlier, params=trial.user_attrs["params"], mult_adds=0)
    assert any(t.state == TrialState.COMPLETE and len(t.user_attrs["val_accuracy_curve"]) == 3 for t in trials)


def test_single_objective_successive_halving_prunes_at_a_rung(search, tmp_path):
    proc = search("--trials", "6", "--epochs", "3", "--pruner", "sha", "--objectives", "accuracy",
                  "--sampler", "random")
    assert proc.returncode == 0, proc.stderr
    trials = load(tmp_path).trials
    assert all(t.intermediate_values for t in trials if "rejected" not in t.user_attrs)
    pruned = [t for t in trials if "stopped_early" in t.user_attrs]
    assert pruned and all("pruned by successive halving after epoch 1" == t.user_attrs["stopped_early"]
                          for t in pruned)


@pytest.mark.parametrize("extra, message", [
    (("--pruner", "front", "--objectives", "accuracy"), "--pruner front needs several objectives"),
    (("--pruner", "hyperband"), "--pruner hyperband is one of Optuna's single-objective pruners"),
    (("--pruner", "median"), "--pruner median is one of Optuna's single-objective pruners"),
    (("--max-memory", "0"), "--max-memory '0' must be positive"),
    (("--max-mult-adds", "lots"), "--max-mult-adds 'lots' is not understood"),
])
def test_pruners_the_objectives_cannot_use_and_bad_caps_are_refused(search, extra, message):
    assert_one_line_error(search("--trials", "1", *extra), contains=message)


def test_halfway_pruner_counts_stopped_trials_and_decides_once():
    """The median is over every trial that reached the halfway epoch, stopped ones included, where
    Optuna's MedianPruner counts finished trials only and so demands what the strong ones reached."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from budgetnas.stopping import HalfwayPruner, make_pruner

    assert isinstance(make_pruner("halfway", epochs=10), HalfwayPruner) and make_pruner("halfway", 10).step == 5
    studies = {name: optuna.create_study(direction="maximize", pruner=pruner) for name, pruner in (
        ("halfway", HalfwayPruner(step=5)), ("median", optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=5)))}
    finished = [(0.90, TrialState.COMPLETE), (0.92, TrialState.COMPLETE), (0.50, TrialState.PRUNED),
                (0.55, TrialState.PRUNED), (0.55, TrialState.PRUNED), (0.60, TrialState.PRUNED)]
    for study in studies.values():
        for value, state in finished:
            study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                         intermediate_values={5: value}))

    def verdicts(study, curve):
        trial = study.ask()
        out = []
        for step, value in curve:
            trial.report(value, step)
            out.append(trial.should_prune())
        return out

    # Median of all six at epoch 5: 0.575. 0.58 goes on; Optuna's median of the two finished (0.91) stops it.
    assert verdicts(studies["halfway"], [(4, 0.3), (5, 0.58)]) == [False, False]
    assert verdicts(studies["median"], [(4, 0.3), (5, 0.58)]) == [False, True]
    # Each asked trial stays a peer (the median is now 0.57-0.58): 0.56 is below it, stopped at epoch 5 and
    # never before; the best epoch so far is what is judged.
    assert verdicts(studies["halfway"], [(4, 0.9), (5, 0.56)]) == [False, False]
    assert verdicts(studies["halfway"], [(4, 0.3), (5, 0.56)]) == [False, True]
    # One verdict: a trial past epoch 5 is never judged again, however it does.
    assert verdicts(studies["halfway"], [(5, 0.6), (6, 0.1), (7, 0.1)]) == [False, False, False]
    # Too few peers: no verdict.
    few = optuna.create_study(direction="maximize", pruner=HalfwayPruner(step=5))
    few.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, intermediate_values={5: 0.9}))
    assert verdicts(few, [(5, 0.1)]) == [False]


def test_auto_resolves_per_mode_and_no_early_stop_means_none():
    assert resolve_pruner("auto", ("accuracy",)) == "median"
    assert resolve_pruner("auto", ("accuracy", "runtime")) in ("front", "sha")
    from budgetnas.search import SearchConfig

    assert SearchConfig(budget=1000, trials=1, early_stop=False, pruner="sha").pruner_name() == "none"
    assert SearchConfig(budget=1000, objectives="accuracy", trials=1, pruner="hyperband").pruner_name() == "hyperband"



def test_failed_trials_are_not_compared_so_a_retry_is_not_stopped_by_its_original(search, tmp_path):
    """A killed worker's trial fails with a curve cut short; its retry has the same parameters and seed, so it
    would tie with it at every rung and lose on runtime. The stopping rules weigh running, stopped and complete
    trials only: here three failed trials that dominate everything at the rung never stop anyone."""
    import optuna
    from optuna.trial import create_trial

    from budgetnas.stopping import HalfwayPruner, compared_trials

    flags = ("--pruner", "sha", "--objectives", "accuracy,params", "--sampler", "random")
    assert search("--trials", "1", *flags, epochs="3").returncode == 0
    study = load(tmp_path)
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
            "val_accuracy_curve": [1.0], "epoch_seconds": [0.001], "params": 1, "mult_adds": 1}))
    proc = search("--trials", "7", *flags, epochs="3")
    assert proc.returncode == 0, proc.stderr
    stopped = [t.user_attrs["stopped_early"] for t in load(tmp_path).trials if "stopped_early" in t.user_attrs]
    assert stopped, "six more random candidates at one rung: some are stopped by the complete ones"
    assert not [s for s in stopped if any(f"trial {n}" in s or f", {n}" in s for n in (1, 2, 3))], stopped

    memory = optuna.create_study(directions=["maximize"])
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL):
        memory.add_trial(create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                      intermediate_values={1: 0.99 if state == TrialState.FAIL else 0.5}))
    running = memory.ask()
    running.report(0.6, 1)
    assert [t.number for t in compared_trials(memory, running.number)] == [0, 1]
    assert [t.number for t in compared_trials(memory, 0)] == [1, running.number]
    # Counted, the three failed trials would put the median at epoch 1 at 0.99 and stop the trial.
    assert not HalfwayPruner(step=1, n_min_trials=2).prune(memory, memory.get_trials(deepcopy=False)[-1])
