"""The objective registry: one entry drives the study's directions and metric names, the trial's values
and the early-stopping rule. ``latency`` (added through the registry alone) runs in a real search."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from budgetnas.errors import UsageError
from budgetnas.objectives import OBJECTIVES, Outcome, values
from budgetnas.search import SearchConfig, run_search
from budgetnas.stopping import FrontRule
from budgetnas.study import parse_objectives
from budgetnas.trainer import EpochStats, Recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_values_follow_the_registry_in_the_order_asked():
    outcome = Outcome(params=1234, mult_adds=5_000_000, accuracy=0.8, seconds=2.5, measured={"latency": 0.02})
    assert values(("accuracy", "latency", "params", "runtime", "mult_adds"), outcome) == [
        0.8, 0.02, 1234.0, 2.5, 5_000_000.0]
    assert {name: o.direction for name, o in OBJECTIVES.items()} == {
        "accuracy": "maximize", "runtime": "minimize", "params": "minimize", "mult_adds": "minimize",
        "latency": "minimize"}
    assert parse_objectives("accuracy,latency") == ("accuracy", "latency")
    with pytest.raises(UsageError, match="choose from accuracy, runtime, params, mult_adds, latency"):
        parse_objectives("accuracy,speed")


def test_front_rule_never_stops_a_trial_whose_latency_is_unknown_or_lower():
    rule = FrontRule(("accuracy", "latency"), epochs=3)
    member = create_trial(values=[0.9, 0.05], user_attrs={"val_accuracy_curve": [0.8, 0.85, 0.9]})
    behind = EpochStats(epoch=1, train_loss=1.0, val_accuracy=0.5, seconds=1.0)
    kwargs = dict(params=1000, mult_adds=10_000, elapsed=1.0)
    assert "on the front was" in rule.should_stop(behind, [member], measured={"latency": 0.06}, **kwargs)
    assert rule.should_stop(behind, [member], measured={"latency": 0.04}, **kwargs) is None  # faster: may join
    assert rule.should_stop(behind, [member], measured={"latency": math.nan}, **kwargs) is None


def test_a_search_can_minimise_measured_inference_latency(tiny_npz, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    run_search(SearchConfig(budget=20_000, family="fcn", dataset=f"npz:{tiny_npz}", trials=2, epochs=1,
                            objectives=("accuracy", "latency"), storage=storage, study="t", device="cpu",
                            precision="fp32", recipe=Recipe(batch_size=64)))
    study = optuna.load_study(study_name="t", storage=storage)
    assert study.metric_names == ["val_accuracy", "inference_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        assert trial.values[1] == trial.user_attrs["inference_ms"] and 0 < trial.values[1] < 50
        assert trial.values[0] == trial.user_attrs["val_accuracy_curve"][-1]
