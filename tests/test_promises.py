"""Promises the README makes that only a real run can show: exit code 1, early stopping inside a
real search, and a search that never loads the test split.

The searches run in-process on the tiny real Fashion-MNIST slice (FCNs, batch 64, 2 epochs, 8
trials: about ten seconds each), so a spy can watch every dataset load.
"""

from __future__ import annotations

import sys

import optuna
import pytest
from conftest import assert_one_line_error
from optuna.trial import TrialState

from budgetnas.search import SearchConfig, run_search
from budgetnas.trainer import Recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_failure_while_running_exits_1(cli, tiny_npz, tmp_path):
    # SGD at lr 10 makes the FCN's loss NaN in epoch 2 (seeded CPU runs are deterministic): a
    # RunFailure, which the CLI reports as one line with exit code 1 (bad input would be 2).
    config = tmp_path / "diverges.toml"
    config.write_text('name = "diverges"\n[spec]\nfamily = "fcn"\nhidden = [64]\n'
                      '[recipe]\nepochs = 2\nbatch_size = 64\nlr = 10.0\noptimizer = "sgd"\n')
    proc = cli("train", str(config), "--dataset", f"npz:{tiny_npz}", "--device", "cpu", "--precision", "fp32")
    assert_one_line_error(proc, 1, "training loss became nan in epoch 2")


class _LoadSpy:
    """Wraps ``budgetnas.data.load_dataset`` wherever a budgetnas module holds it, and records each call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import budgetnas.data

        self.calls: list[dict] = []
        self.tests_read = 0
        original = budgetnas.data.load_dataset

        def spy(*args, **kwargs):
            data = original(*args, **kwargs)
            self.calls.append({**kwargs, "test_loaded": data.test is not None})
            return data

        for name, module in list(sys.modules.items()):
            if name.startswith("budgetnas") and getattr(module, "load_dataset", None) is original:
                monkeypatch.setattr(module, "load_dataset", spy)
        require_test = budgetnas.data.Data.require_test

        def counting_require_test(data):
            self.tests_read += 1
            return require_test(data)

        monkeypatch.setattr(budgetnas.data.Data, "require_test", counting_require_test)


@pytest.mark.parametrize("objectives, pruner, reason", [
    (("accuracy",), "median", "pruned by the median rule after epoch 1"),
    (("accuracy",), "halfway", "pruned by the halfway median after epoch 1"),
    (("accuracy", "params"), "front", "on the front was"),
    (("accuracy", "params"), "sha", "stopped at the epoch-1 rung"),
], ids=["median-pruner", "halfway-pruner", "front-rule", "rung-rule"])
def test_early_stopping_stops_trials_in_a_real_search_that_never_loads_the_test_split(
        objectives, pruner, reason, tiny_npz, tmp_path, monkeypatch):
    import budgetnas.search  # noqa: F401  (loaded before the spy looks for holders of load_dataset)

    spy = _LoadSpy(monkeypatch)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    summary = run_search(SearchConfig(budget=20_000, family="fcn", dataset=f"npz:{tiny_npz}", trials=8, epochs=2,
                                      objectives=objectives, pruner=pruner, storage=storage, study="t",
                                      device="cpu", precision="fp32", recipe=Recipe(batch_size=64)))
    # The search selected on validation data alone: every load left the test split out, none read it.
    assert spy.calls and all(not call["test_loaded"] for call in spy.calls), spy.calls
    assert spy.tests_read == 0
    trials = optuna.load_study(study_name="t", storage=storage).trials
    stopped = [t for t in trials if t.state == TrialState.PRUNED and "rejected" not in t.user_attrs]
    assert stopped and summary.stopped_early == len(stopped)
    for trial in stopped:
        assert reason in trial.user_attrs["stopped_early"]
        assert len(trial.user_attrs["val_accuracy_curve"]) == 1  # stopped after epoch 1 of 2
    assert any(t.state == TrialState.COMPLETE for t in trials)


def test_the_load_spy_sees_a_test_split(tiny_npz, monkeypatch):
    # The control for the test above: a load that does take the test split is seen.
    import budgetnas.data

    spy = _LoadSpy(monkeypatch)
    data = budgetnas.data.load_dataset(f"npz:{tiny_npz}", with_test=True)
    data.require_test()
    assert spy.calls == [{"with_test": True, "test_loaded": True}] and spy.tests_read == 1
