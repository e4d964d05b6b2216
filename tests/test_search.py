"""``budgetnas search`` end to end: real CLI subprocesses, real SQLite, real training on a tiny slice."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import optuna
import pytest
from conftest import REPO, assert_one_line_error
from optuna.trial import TrialState, create_trial

from budgetnas.cost import default_max_mult_adds
from budgetnas.records import SETTINGS_ATTR
from budgetnas.stopping import FrontRule
from budgetnas.trainer import EpochStats

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def small_npz(tiny_npz, tmp_path_factory):
    """The tiny Fashion-MNIST slice shrunk to 8x8 (centre 24x24 crop, 3x3 means): real images, cheap
    convolutions, and an input small enough that the space must drop pools that would go below 1x1."""
    arrays = dict(np.load(tiny_npz))
    for split in ("train", "test"):
        x = arrays[f"x_{split}"][:, 2:26, 2:26].astype(np.float32)
        arrays[f"x_{split}"] = x.reshape(len(x), 8, 3, 8, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "fmnist-8x8.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture
def search(cli, small_npz, tmp_path):
    """``search(*extra)`` runs a tiny search (3k budget, 1 epoch, 8x8 images) into tmp_path/s.db."""
    def run(*extra, budget="3k", epochs="1"):
        return cli("search", "--budget", budget, "--dataset", f"npz:{small_npz}", "--epochs", epochs,
                   "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "t", "--device", "cpu", *extra)
    return run


def load(tmp_path, name="t") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/s.db")


@pytest.mark.slow
def test_search_completes_and_trials_carry_their_attributes(search, tmp_path):
    proc = search("--trials", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert summary["trials"] == 3 and summary["study"] == "t"
    assert summary["storage_url"] == f"sqlite:///{tmp_path}/s.db"
    assert f"storage: sqlite:///{tmp_path}/s.db" in proc.stderr
    assert "[3/3]" in proc.stderr and "epoch 1/1" in proc.stderr
    study = load(tmp_path)
    settings = study.user_attrs[SETTINGS_ATTR]
    assert settings["budget"] == 3000 and settings["objectives"] == ["accuracy", "runtime"]
    assert settings["parameterisation"] == "fit"
    assert study.metric_names == ["val_accuracy", "train_seconds"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for trial in complete:
        attrs = trial.user_attrs
        assert attrs["params"] <= 3000 and attrs["spec"]["family"] == "cnn"
        assert attrs["mult_adds"] > 0 and attrs["mult_adds_batch"] == 512
        assert len(attrs["val_accuracy_curve"]) == len(attrs["train_loss_curve"]) == 1
        assert attrs["train_seconds"] > 0 and attrs["device"] == "cpu"
        assert attrs["recipe"]["epochs"] == 1 and "torch" in attrs["versions"]
        assert trial.values == [attrs["val_accuracy_curve"][-1], attrs["train_seconds"]]
        # issue 13: the default compute and memory bounds are constraints too (negative = within them)
        assert trial.constraints["params_over_budget"] == attrs["params"] - 3000
        assert trial.constraints["mult_adds_over_cap"] == attrs["mult_adds"] - default_max_mult_adds(3000, (1, 8, 8))
        memory_cap = attrs["memory_estimate"] - trial.constraints["memory_over_cap"]
        assert memory_cap > attrs["memory_estimate"] > 0
    front_trials = {row["trial"] for row in summary["front"]}
    assert front_trials and front_trials <= {t.number for t in complete}
    assert "budgetnas dashboard --storage" in summary["commands"]["dashboard"]


def test_budget_smaller_than_any_architecture_is_refused(search, tmp_path):
    proc = search("--trials", "1", budget="20")
    assert_one_line_error(proc, 2, "smaller than the smallest cnn")
    assert not (tmp_path / "s.db").exists()  # nothing was created


@pytest.mark.slow
def test_over_budget_candidates_are_rejected_without_training(search, tmp_path):
    proc = search("--trials", "4", "--parameterisation", "direct", "--sampler", "random", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    rejected = [t for t in load(tmp_path).trials if "rejected" in t.user_attrs]
    assert rejected, "a 3k budget with directly sampled widths rejects most candidates"
    for trial in rejected:
        assert trial.state == TrialState.PRUNED and trial.values is None
        assert trial.user_attrs["params"] > 3000
        assert trial.constraints["params_over_budget"] == trial.user_attrs["params"] - 3000
        assert "val_accuracy_curve" not in trial.user_attrs and "train_seconds" not in trial.user_attrs
    assert "rejection rate:" in proc.stdout


@pytest.mark.slow
def test_a_mult_adds_cap_rejects_costly_candidates_before_training(search, tmp_path):
    proc = search("--trials", "3", "--sampler", "random", "--max-mult-adds", "500k")
    assert proc.returncode == 0, proc.stderr
    trials = load(tmp_path).trials
    for trial in trials:
        over = trial.user_attrs["mult_adds"] - 500_000 if "mult_adds" in trial.user_attrs else None
        if "rejected" in trial.user_attrs and "mult-adds" in trial.user_attrs["rejected"]:
            assert trial.state == TrialState.PRUNED and "val_accuracy_curve" not in trial.user_attrs
            assert trial.constraints["mult_adds_over_cap"] > 0
        else:
            assert trial.state == TrialState.COMPLETE and over is not None and over <= 0
    assert any("mult-adds" in t.user_attrs.get("rejected", "") for t in trials), \
        "a 500k cap (about 1k mult-adds per 8x8 image) rejects some random candidates"
    assert load(tmp_path).user_attrs["budgetnas"]["max_mult_adds"] == 500_000


@pytest.mark.slow
def test_full_validation_is_a_study_setting_that_replays_of_the_slice_keep(search, cli, tmp_path):
    """``--subset N --validation full``: trials validate on the whole validation split (100 of the 1,000
    images here, not 10% of the slice), the study records it, its replay on the slice uses the same split,
    its printed resume command says so, and resuming it with the other validation is refused."""
    proc = search("--trials", "2", "--subset", "400", "--validation", "full")
    assert proc.returncode == 0, proc.stderr
    assert load(tmp_path).user_attrs[SETTINGS_ATTR]["validation"] == "full"
    from budgetnas.cli.search import resume_command
    from budgetnas.search import SearchConfig
    args = argparse.Namespace(timeout=None, device="auto", precision="auto")
    assert "--subset 400 --validation full" in resume_command(args, SearchConfig(budget=3000, subset=400,
                                                                                  validation="full"))
    replay = cli("replay", "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "t", "--epochs", "1",
                 "--subset", "study", "--no-record", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert replay.returncode == 0, replay.stderr
    assert "360 train / 100 val" in replay.stderr  # a slice study would say 360 / 40
    other = search("--trials", "3", "--subset", "400")
    assert_one_line_error(other, 2, "validation: study has 'full', asked for 'slice'")
    assert len(load(tmp_path).trials) == 2


@pytest.mark.slow
def test_rerun_resumes_the_same_study_and_refuses_other_settings(search, tmp_path):
    assert search("--trials", "2").returncode == 0
    proc = search("--trials", "4")
    assert proc.returncode == 0, proc.stderr
    study = load(tmp_path)
    assert len(study.trials) == 4
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert "4 finished trials" in proc.stdout
    assert "budgetnas replay --storage" in proc.stdout or "no complete trial" in proc.stdout
    again = search("--trials", "4")  # the total is reached: nothing new runs
    assert again.returncode == 0 and "already has 4 finished trials" in again.stderr
    assert len(load(tmp_path).trials) == 4
    other = search("--trials", "6", "--sampler", "random", epochs="2")  # other settings: refused, untouched
    assert_one_line_error(other, 2, "epochs: study has 1, asked for 2; sampler: study has 'tpe'")
    assert len(load(tmp_path).trials) == 4


@pytest.mark.slow
def test_ctrl_c_during_a_trial_leaves_a_resumable_study(small_npz, tmp_path):
    args = ["search", "--budget", "3k", "--dataset", f"npz:{small_npz}", "--epochs", "4", "--trials", "1",
            "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "t", "--device", "cpu", "--no-early-stop"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # wait until the first trial is training
        seen.append(line)
        if "epoch 1/4" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    # Started as `python -m budgetnas`, so that is what the printed command runs (budgetnas may not be on PATH).
    assert "Resume with:" in stderr and f"{sys.executable} -m budgetnas search --budget 3000" in stderr
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert "interrupted" in study.trials[0].user_attrs

    resume = stderr.split("Resume with:\n", 1)[1].strip().splitlines()[0]
    # Pasted as printed, from another folder: every path in it is absolute.
    again = subprocess.run(shlex.split(resume), cwd=tmp_path.parent, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    states = [t.state for t in load(tmp_path).trials]
    assert TrialState.RUNNING not in states
    assert states[0] == TrialState.FAIL and states.count(TrialState.FAIL) == 1
    assert len(states) == 2  # the interrupted trial does not count towards --trials 1


@pytest.mark.slow
def test_single_objective_mode_reports_every_epoch_to_a_pruner(search, tmp_path):
    proc = search("--trials", "4", "--objectives", "accuracy", epochs="2")
    assert proc.returncode == 0, proc.stderr
    study = load(tmp_path)
    assert len(study.directions) == 1 and study.metric_names == ["val_accuracy"]
    trained = [t for t in study.trials if "rejected" not in t.user_attrs]
    for trial in trained:
        assert trial.intermediate_values == dict(enumerate(trial.user_attrs["val_accuracy_curve"], start=1))
        if trial.state == TrialState.PRUNED:
            assert "median rule" in trial.user_attrs["stopped_early"]
            assert len(trial.user_attrs["val_accuracy_curve"]) < 2
        else:
            assert trial.value == trial.user_attrs["val_accuracy_curve"][-1]


@pytest.mark.parametrize("bad, message", [
    (["--objectives", "accuracy,speed"], "unknown objective"),
    (["--objectives", "runtime"], "single objective must be accuracy"),
    (["--timeout", "soon"], "duration"),
    (["--budget", "lots"], "budget"),
    (["--trials", "0"], "at least 1"),
])
def test_bad_options_fail_with_one_line(bad, message, capsys, tmp_path, monkeypatch):
    # In-process (the subprocess path of the same dispatcher is covered above): these fail before any work.
    from budgetnas.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", "--budget", "3k", "--trials", "1", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "budgetnas.db").exists()


def _front_trial(number, accuracy_curve, seconds, params=1000):
    return create_trial(values=[accuracy_curve[-1], seconds], user_attrs={"val_accuracy_curve": accuracy_curve,
                                                                          "params": params})


def test_front_rule_stops_only_trials_that_cannot_reach_the_front():
    rule = FrontRule(("accuracy", "runtime"), epochs=4, margin=0.01, min_front=2)
    front = [_front_trial(0, [0.80, 0.85, 0.86, 0.87], 10.0), _front_trial(1, [0.60, 0.70, 0.72, 0.73], 2.0)]
    behind = EpochStats(epoch=2, train_loss=1.0, val_accuracy=0.75, seconds=3.0)
    # projected runtime 6s x 4/2 = 12s >= 10s: front trial 0 is cheaper and 10 points ahead at epoch 2
    assert "10.0 points" in rule.should_stop(behind, front, params=1, mult_adds=1, elapsed=6.0)
    # projected 8s < 10s: faster than trial 0, more accurate than trial 1 -> may join the front
    assert rule.should_stop(behind, front, params=1, mult_adds=1, elapsed=4.0) is None
    # within the margin of the better curve -> kept
    close = EpochStats(epoch=2, train_loss=1.0, val_accuracy=0.845, seconds=3.0)
    assert rule.should_stop(close, front, params=1, mult_adds=1, elapsed=6.0) is None
    # never at the last epoch, and never with a front smaller than min_front
    last = EpochStats(epoch=4, train_loss=1.0, val_accuracy=0.1, seconds=3.0)
    assert rule.should_stop(last, front, params=1, mult_adds=1, elapsed=40.0) is None
    assert rule.should_stop(behind, front[:1], params=1, mult_adds=1, elapsed=6.0) is None


@pytest.mark.slow
def test_recipe_space_search_samples_and_stores_a_recipe_per_trial(search, tmp_path):
    proc = search("--trials", "3", "--recipe-space", "search", "--sampler", "random", "--objectives", "accuracy")
    assert proc.returncode == 0, proc.stderr
    study = load(tmp_path)
    assert study.user_attrs[SETTINGS_ATTR]["recipe_space"] == "search"
    trained = [t for t in study.trials if "recipe" in t.user_attrs]
    assert len(trained) == 3
    for trial in trained:
        recipe, params = trial.user_attrs["recipe"], trial.params
        # the recipe that trained is exactly the sampled one (replay retrains from this attribute)
        assert recipe["lr"] == params["lr"] and recipe["schedule"] == params["schedule"]
        assert recipe["weight_decay"] == params["weight_decay"] and recipe["augment"] == params["augment"]
        assert recipe["batch_size"] == params["batch_size"]
        assert recipe["label_smoothing"] == params["label_smoothing"]
        assert recipe["optimizer"] == "adamw" and recipe["normalize"] is True and recipe["epochs"] == 1
    assert len({t.params["lr"] for t in trained}) == 3  # sampled, not a constant
    # a study searched with the paper's recipe is a different study: resuming it with the other space is refused
    other = search("--trials", "4", "--objectives", "accuracy")
    assert_one_line_error(other, 2, "recipe_space: study has 'search', asked for 'paper'")


@pytest.mark.slow
def test_the_paper_recipe_space_trains_every_candidate_with_the_paper_recipe(search, tmp_path):
    from budgetnas.trainer import PAPER_RECIPE

    assert search("--trials", "2", "--sampler", "random").returncode == 0
    study = load(tmp_path)
    assert study.user_attrs[SETTINGS_ATTR]["recipe_space"] == "paper"
    for trial in study.trials:
        assert "lr" not in trial.params
        assert trial.user_attrs["recipe"] == {**PAPER_RECIPE.to_dict(), "epochs": 1, "seed": 0}


@pytest.mark.slow
def test_enqueued_configs_train_first_and_are_queued_once(search, tmp_path):
    config = tmp_path / "start.toml"
    config.write_text('name = "start"\n[spec]\nfamily = "cnn"\nfc = []\n'  # 2,762 parameters on 8x8 images
                      '[[spec.conv]]\nout_channels = 16\nkernel_size = 3\npool = 2\nbatch_norm = true\n'
                      '[recipe]\nlr = 0.003\nschedule = "cosine"\naugment = "flip"\nbatch_size = 128\n')
    proc = search("--trials", "2", "--recipe-space", "search", "--objectives", "accuracy", "--enqueue", str(config))
    assert proc.returncode == 0, proc.stderr
    first = load(tmp_path).trials[0]
    assert first.user_attrs["enqueued"] == str(config)
    assert first.user_attrs["spec"]["conv"][0]["out_channels"] == 16 and first.user_attrs["params"] == 2762
    recipe = first.user_attrs["recipe"]
    assert (recipe["lr"], recipe["schedule"], recipe["augment"], recipe["batch_size"]) == (0.003, "cosine", "flip", 128)
    again = search("--trials", "3", "--recipe-space", "search", "--objectives", "accuracy", "--enqueue", str(config))
    assert again.returncode == 0, again.stderr
    assert sum("enqueued" in t.user_attrs for t in load(tmp_path).trials) == 1  # not queued a second time


def test_an_enqueued_config_the_space_cannot_hold_is_refused_before_any_study(search, tmp_path):
    proc = search("--trials", "1", "--enqueue", "fcn-50k")
    assert_one_line_error(proc, 2, "--enqueue fcn-50k is a fcn config; this search is cnn")
    proc = search("--trials", "1", "--enqueue", "cnn-100k")
    assert_one_line_error(proc, 2, "over the budget 3,000")
    assert not (tmp_path / "s.db").exists()


def test_a_budget_near_the_smallest_member_is_announced(tiny_npz):
    """Near the smallest member most structures are over the budget even at width 1: said before searching."""
    from budgetnas.search import SearchConfig, prepare

    said: list[str] = []
    prepare(SearchConfig(budget=1000, family="fcn", dataset=f"npz:{tiny_npz}", trials=1), say=said.append)
    assert any("close to the smallest fcn (805 parameters)" in line for line in said), said
    said.clear()
    prepare(SearchConfig(budget=20_000, family="fcn", dataset=f"npz:{tiny_npz}", trials=1), say=said.append)
    assert not any("close to the smallest" in line for line in said), said
