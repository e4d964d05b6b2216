"""`budgetnas sweep` on a tiny slice: one study per budget, each best trial replayed, a report."""

from __future__ import annotations

import json

import optuna
import pytest

from conftest import assert_one_line_error
from test_search import small_npz  # noqa: F401  (the 8x8 real-image slice, a fixture)


@pytest.mark.slow
def test_sweep_searches_replays_and_reports_each_budget(cli, tiny_npz, tmp_path):
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    args = ["sweep", "--family", "cnn", "--budgets", "3k,6k", "--dataset", f"npz:{tiny_npz}", "--trials", "2",
            "--epochs", "1", "--replay-epochs", "1", "--storage", storage, "--out", tmp_path / "out", "--json",
            "--finalists", "2", "--subset", "400"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    rows = document["rows"]
    assert [r["budget"] for r in rows] == [3000, 6000]
    for row in rows:
        # the finalists were re-ranked by a full-length run, and the replay is the one ranked first
        assert 1 <= len(row["finalists"]) <= 2 and row["trial"] == row["finalists"][0]["trial"]
        assert [f["val"] for f in row["finalists"]] == sorted((f["val"] for f in row["finalists"]), reverse=True)
        assert row["replay"]["params"] <= row["budget"]
        metrics = json.loads((tmp_path / "out" / f"{row['study']}-best" / "metrics.json").read_text())
        assert metrics["train_images"] == 900 and metrics["subset"] is None  # the whole split, not the search's 400
        assert 0.0 < row["replay"]["test_accuracy"] <= 1.0
    studies = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert studies == [r["study"] for r in rows] == sorted(r["study"] for r in rows)
    markdown = (tmp_path / "out" / "SWEEP.md").read_text()
    assert "| 3k |" in markdown and "| 6k |" in markdown
    html = (tmp_path / "out" / "sweep.html").read_text()
    assert "plotly" in html.lower() and "test accuracy vs budget" in html

    # Each winner is a run config that `budgetnas train` retrains, with the replayed figures beside it.
    from budgetnas.config import load_config
    from budgetnas.counting import count_params

    for row in rows:
        name = "3k" if row["budget"] == 3000 else "6k"
        found = load_config(tmp_path / "out" / "found" / f"cnn-{name}.toml")
        assert found.name == f"found-cnn-{name}" and found.dataset == f"npz:{tiny_npz}"
        assert found.spec.to_dict() == row["replay"]["spec"] and found.recipe.to_dict() == row["replay"]["recipe"]
        assert found.result["budget"] == row["budget"] and found.result["trial"] == row["trial"]
        assert found.result["test_accuracy"] == row["replay"]["test_accuracy"]
        assert count_params(found.spec, (1, 28, 28), 10) == found.result["params"] <= row["budget"]
        assert found.result["search_epochs"] == 1 and found.result["search_recipe_space"] == "paper"
        assert found.result["search_enqueue"] == []
        assert "finalist_augments" not in found.result  # --finalists alone keeps each trial's own augmentation
    trained = cli("train", tmp_path / "out" / "found" / "cnn-3k.toml", "--epochs", "1", "--json")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["params"] == rows[0]["replay"]["params"]

    # Rerunning resumes: the studies already hold their 2 trials, so no new trial is trained.
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    for summary in optuna.get_all_study_summaries(storage):
        assert summary.n_trials == 2
    # ...and still reports how long the search took (the study's span, not this run's zero)
    assert all(row["search_seconds"] > 0 for row in json.loads(again.stdout)["rows"])


def sweep_3k(cli, tiny_npz, tmp_path, augments: str, replay_epochs: int):
    """A 2-trial search at 3K with one finalist trained per augmentation in ``augments``, within 30 minutes."""
    storage = f"sqlite:///{tmp_path / 'finalists.db'}"
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}", "--trials", "2",
               "--epochs", "1", "--replay-epochs", str(replay_epochs), "--storage", storage, "--out",
               tmp_path / "out", "--json", "--finalists", "1", "--finalist-augments", augments, "--subset", "400",
               "--budget-timeout", "30m", "--finalists-within-timeout")
    return proc, storage


@pytest.mark.slow
def test_finalists_choose_the_augmentation_at_full_length(cli, tiny_npz, tmp_path):
    # --finalist-augments trains the best trial once per augmentation (validation only) and replays
    # the best of those runs with that augmentation, whatever the short search had chosen.
    proc, _storage = sweep_3k(cli, tiny_npz, tmp_path, "none,shift", replay_epochs=2)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    # --finalists-within-timeout: the finalists' time was estimated from the search's epochs (2 trials
    # ended it long before 30 minutes, so the estimate only informs), and the sweep says how it went
    assert row["finalist_estimate"] > 0
    assert "search and finalists took" in proc.stderr and "of 30 minutes" in proc.stderr
    assert "ending the search" not in proc.stderr  # 30 minutes hold both: admission refused nothing, said nothing
    assert sorted(f["augment"] for f in row["finalists"]) == ["none", "shift"]
    assert len({f["trial"] for f in row["finalists"]}) == 1 and row["trial"] == row["finalists"][0]["trial"]
    assert [f["val"] for f in row["finalists"]] == sorted((f["val"] for f in row["finalists"]), reverse=True)
    assert row["replay"]["recipe"]["augment"] == row["finalists"][0]["augment"]
    from budgetnas.config import load_config

    found = load_config(tmp_path / "out" / "found" / "cnn-3k.toml")
    assert found.recipe.augment == row["finalists"][0]["augment"]
    assert found.result["finalist_augments"] == ["none", "shift"] and found.result["finalists"] == 1
    assert found.result["finalist_seconds"] > 0  # the finalists' runs are part of what the search cost
    assert found.result["finalist_estimate"] == row["finalist_estimate"]


@pytest.mark.slow
def test_one_finalist_with_one_augmentation_makes_no_finalist_run(cli, tiny_npz, tmp_path):
    # One trial trained once more with one augmentation would decide nothing (round L spent 30.5 of its
    # 40 minutes on such a run): the augmentation goes straight to the replay, and the whole budget
    # timeout is the search's, each trial kept within it.
    proc, storage = sweep_3k(cli, tiny_npz, tmp_path, "shift", replay_epochs=1)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert row["finalists"] == [] and row["finalist_seconds"] == 0.0 and row["finalist_estimate"] == 0.0
    assert "re-ranking" not in proc.stderr and "no finalist runs" in proc.stderr
    assert row["replay"]["recipe"]["augment"] == "shift"
    from budgetnas.config import load_config
    from budgetnas.sweep import ranked_trials

    study = optuna.load_study(study_name=row["study"], storage=storage)
    assert row["trial"] == ranked_trials(study)[0].number  # the search's best, as the search ranked it
    found = load_config(tmp_path / "out" / "found" / "cnn-3k.toml")
    assert found.recipe.augment == "shift" and found.result["finalist_augments"] == ["shift"]


def test_a_reserve_without_finalists_keeps_each_trial_within_the_time(tiny_npz, tmp_path):
    from budgetnas.replay import trained_trials
    from budgetnas.sweep import FinalistReserve
    from studyfactory import make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    study = optuna.load_study(study_name=made.name, storage=made.url)
    now = [0.0]
    said: list[str] = []
    reserve = FinalistReserve(1000.0, count=0, epochs=20, runs_per_trial=1, scale=3.0, say=said.append,
                              clock=lambda: now[0], search_epochs=4)
    assert reserve.finalist_seconds(study) == reserve.planned_seconds(study) == 0.0
    assert reserve.admitted_epoch_seconds([], 100.0) == 25.0  # its own 4 epochs, nothing after them
    longest = max(t.duration.total_seconds() for t in trained_trials(study))

    def objective(_trial):  # a trial that adds no trained trial and takes a second
        now[0] += 1.0
        raise optuna.TrialPruned()

    # no epoch fit (the factory records no activations): the search ends once the time left would not
    # hold one more trial as long as the longest, and the reason names no finalists
    now[0] = 1000.0 - longest - 1.5
    before = len(study.trials)
    study.optimize(objective, n_trials=5, callbacks=[reserve])
    assert len(study.trials) == before + 2
    assert said[-1].startswith("ending the search with") and "finalists" not in said[-1]


def test_sweep_rejects_unknown_finalist_augments(cli, tiny_npz):
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}",
               "--finalist-augments", "none,rotate")
    assert_one_line_error(proc, 2, "--finalist-augments")


def test_sweep_refuses_a_study_name(cli, tiny_npz):
    """Each budget has its own study, named by the sweep: a --study would be silently ignored."""
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}", "--study", "mine")
    assert_one_line_error(proc, 2, "leave --study out")


def test_finalists_within_timeout_needs_a_budget_timeout(cli, tiny_npz):
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}",
               "--finalist-augments", "none,flip", "--finalists-within-timeout")
    assert_one_line_error(proc, 2, "--budget-timeout")


def test_finalist_reserve_estimates_the_finalists_from_the_measured_epochs(tiny_npz, tmp_path):
    # A real study of trained tiny CNNs: the estimate is the top trials' mean measured epoch, scaled by
    # the finalists' images and epochs, once per augmentation.
    from budgetnas.records import settings_of
    from budgetnas.replay import trained_trials, val_accuracy_of
    from budgetnas.sweep import FinalistReserve
    from studyfactory import make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    study = optuna.load_study(study_name=made.name, storage=made.url)
    settings = settings_of(study)
    ranked = sorted(trained_trials(study), key=lambda t: -val_accuracy_of(t, settings))
    mean = [sum(t.user_attrs["epoch_seconds"]) / len(t.user_attrs["epoch_seconds"]) for t in ranked]
    assert all(m > 0 for m in mean)
    one = FinalistReserve(600.0, count=1, epochs=20, runs_per_trial=2, scale=3.0)
    assert one.finalist_seconds(study) == pytest.approx(mean[0] * 3.0 * 20 * 2)
    two = FinalistReserve(600.0, count=2, epochs=None, runs_per_trial=1, scale=1.5)  # None: the trials' own epochs
    assert two.finalist_seconds(study) == pytest.approx((mean[0] + mean[1]) * 1.5 * 2)


def test_finalist_reserve_ends_the_search_when_the_time_left_would_not_hold_the_finalists(tiny_npz, tmp_path):
    from budgetnas.replay import trained_trials
    from budgetnas.sweep import FINALIST_MARGIN, FinalistReserve
    from studyfactory import make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    study = optuna.load_study(study_name=made.name, storage=made.url)
    before = len(study.trials)
    durations = sorted(t.duration.total_seconds() for t in trained_trials(study))
    now = [0.0]
    said: list[str] = []
    reserve = FinalistReserve(1000.0, count=1, epochs=20, runs_per_trial=1, scale=1.0, say=said.append,
                              clock=lambda: now[0])
    # the finalist (or a newcomer as slow as the slowest) with its margin, and one more trial as long as the
    # longest trained to the end
    need = reserve.planned_seconds(study) * FINALIST_MARGIN + durations[-1]

    def objective(trial):  # stands in for a trial that was stopped early: it adds no trained trial
        now[0] += 1.0
        raise optuna.TrialPruned()

    # plenty of time left: the search runs every trial it was asked for
    study.optimize(objective, n_trials=3, callbacks=[reserve])
    assert len(study.trials) == before + 3
    assert len(said) == 1 and said[0].startswith("finalists' time reserved: about")  # told once: it did not change
    # half a second more than the finalist and one more trial need after the next trial, half a second less
    # after the one after it: it ends there
    now[0] = 1000.0 - need - 1.5
    study.optimize(objective, n_trials=3, callbacks=[reserve])
    assert len(study.trials) == before + 5
    assert len(said) == 2 and said[1].startswith("ending the search with")


def test_finalist_reserve_plans_for_a_newcomer_as_slow_as_the_slowest_trial(tiny_npz, tmp_path):
    # Round G (RESULTS.md): a late trial, three times as slow per epoch as the finalist of the moment,
    # became the finalist and the run ended 1.2 minutes over its limit. The reserve now plans for the last
    # finalist being replaced by a trial as slow as the slowest trained so far.
    from budgetnas.replay import trained_trials
    from budgetnas.sweep import FinalistReserve, ranked_trials
    from studyfactory import make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    source = optuna.load_study(study_name=made.name, storage=made.url)
    ranked = ranked_trials(source)
    assert len(ranked) >= 3
    # A copy of the study in which the least accurate trained trial is ten times as slow as any other.
    slow = max(s for t in ranked for s in t.user_attrs["epoch_seconds"]) * 10
    study = optuna.create_study(directions=source.directions)
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    for t in source.get_trials(deepcopy=True):
        if t.number == ranked[-1].number:
            t.user_attrs["epoch_seconds"] = [slow] * len(t.user_attrs["epoch_seconds"])
        study.add_trial(t)
    ranked = ranked_trials(study)
    assert ranked[-1].user_attrs["epoch_seconds"][0] == slow  # still the last: speed does not rank

    one = FinalistReserve(600.0, count=1, epochs=20, runs_per_trial=2, scale=3.0)
    cost = [one.run_seconds(t) for t in ranked]
    assert one.finalist_seconds(study) == pytest.approx(cost[0])  # today's finalist alone ...
    assert one.planned_seconds(study) == pytest.approx(cost[-1])  # ... but planned for: the slowest
    assert cost[-1] > cost[0] * 5
    two = FinalistReserve(600.0, count=2, epochs=20, runs_per_trial=1, scale=1.0)
    cost = [two.run_seconds(t) for t in ranked]
    assert two.planned_seconds(study) == pytest.approx(cost[0] + cost[-1])  # the second finalist displaced
    every = FinalistReserve(600.0, count=len(ranked) + 1, epochs=20, runs_per_trial=1, scale=1.0)
    cost = [every.run_seconds(t) for t in trained_trials(study)]
    assert every.planned_seconds(study) == pytest.approx(sum(cost) + max(cost))  # a free place: one more joins


def test_sweep_rejects_bad_budget_lists(cli, tiny_npz):
    proc = cli("sweep", "--family", "cnn", "--budgets", "10k,lots", "--dataset", f"npz:{tiny_npz}")
    assert_one_line_error(proc, 2, "budget")


def test_found_config_records_the_enqueued_starting_points():
    # A winner's [result] names the models its search started from, so the search can be rerun as it ran.
    from budgetnas.search import SearchConfig
    from budgetnas.spec import CNNSpec, ConvBlock
    from budgetnas.sweep import SweepRow, found_config
    from budgetnas.trainer import Recipe

    spec = CNNSpec(conv=(ConvBlock(4, kernel_size=3, pool=2),), fc=())
    replay = {"spec": spec.to_dict(), "recipe": Recipe().to_dict(), "params": 8_000, "val_accuracy": 0.9,
              "test_accuracy": 0.9, "train_seconds": 1.0, "mult_adds": 1, "epochs": 20, "seed": 0}
    row = SweepRow(budget=10_000, study="s", trial=3, search_trials=5, search_seconds=60.0, replay=replay)
    search = SearchConfig(budget=10_000, enqueue=("cnn-10k+bn", "studies/seeds/cnn-10k-a.toml"),
                          transfer_from=("auto",), objectives=("accuracy",), pruner="sha")
    result = found_config(row, search).result
    assert result["search_enqueue"] == ["cnn-10k+bn", "studies/seeds/cnn-10k-a.toml"]
    # ... and the other sources of starting points, the early-stopping rule and the space it searched
    assert result["search_transfer_from"] == ["auto"] and result["search_pruner"] == "sha"
    assert result["search_space_version"] == 3  # cnn: conv batch norm in every block since version 3
    assert result["trial"] == 3 and result["search_seconds"] == 60.0


def test_sweep_markdown_says_what_the_replays_trained_on():
    """--replay-subset N makes quick replays on a slice: SWEEP.md must not call them whole-split runs."""
    from budgetnas.sweep import SweepRow, render_markdown

    def row(subset):
        replay = {"test_accuracy": 0.8, "val_accuracy": 0.8, "params": 2900, "train_seconds": 1.0,
                  "mult_adds": 1e6, "epochs": 1, "device": "cpu", "precision": "fp32", "subset": subset}
        return SweepRow(budget=3000, study="cnn-3k", trial=0, search_trials=2, search_seconds=1.0, replay=replay)

    assert "trained on the whole training split." in render_markdown("cnn", "fashion-mnist", [row(None)])
    sliced = render_markdown("cnn", "fashion-mnist", [row(600)])
    assert "trained on a 600-image slice of the training split" in sliced and "whole training split" not in sliced


def test_finalist_reserve_admits_only_candidates_that_fit_the_time_left(tiny_npz, tmp_path):
    # Admission: instead of ending the search when the slowest trial could not fit, the reserve refuses
    # the candidates whose predicted epochs (from their activations per image) would not, and ends the
    # search when not even the cheapest measured so far would.
    from budgetnas import cost
    from budgetnas.spec import spec_from_dict
    from budgetnas.sweep import FINALIST_MARGIN, REFUSALS_TO_END, FinalistReserve
    from studyfactory import make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    source = optuna.load_study(study_name=made.name, storage=made.url)
    # A copy whose measured epochs take 0.5 s plus 1 s per 100 kB of activations per image, so that the fit
    # is known exactly (a tiny study's own epochs are too short and noisy to show a trend).
    study = optuna.create_study(directions=source.directions)
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    sizes = []
    for t in source.get_trials(deepcopy=True):
        if t.user_attrs.get("epoch_seconds"):  # the objective records the estimate; the factory does not
            batch = t.user_attrs["recipe"]["batch_size"]
            t.user_attrs["memory_estimate"] = cost.training_memory(spec_from_dict(t.user_attrs["spec"]), (1, 28, 28),
                                                                   batch)
            x = t.user_attrs["memory_estimate"] / batch
            sizes.append(x)
            t.user_attrs["epoch_seconds"] = [0.5 + x / 1e5] * len(t.user_attrs["epoch_seconds"])
        study.add_trial(t)
    small, large = min(sizes), max(sizes)
    assert large > small
    now = [0.0]
    said: list[str] = []
    reserve = FinalistReserve(10_000.0, count=1, epochs=20, runs_per_trial=1, scale=1.0, say=said.append,
                              clock=lambda: now[0], search_epochs=3)
    trial = study.trials[-1]
    reserve(study, trial)  # plenty of time: everything is admitted, nothing is said
    assert reserve.fit(large) == pytest.approx(0.5 + large / 1e5)
    assert reserve.refusal(large * 100) is None and not said
    finalist = reserve.finalist_seconds(study) * FINALIST_MARGIN
    # Time for the finalist and then a candidate as slow as the smallest measured (its 3 epochs, then its
    # finalist run should it displace the finalist), and half a second more.
    cheapest = reserve.fit(small)
    now[0] = 10_000.0 - max(finalist, FINALIST_MARGIN * cheapest * 20) - 3 * cheapest - 0.5
    reserve(study, trial)
    assert reserve.epoch_limit >= cheapest and reserve.refusal(small) is None
    refused = reserve.refusal(large)
    assert refused.startswith("too slow for the time left (--finalists-within-timeout)") and reserve.refused == 1
    assert "admitting candidates of up to about" in said[-1] and said[-1].endswith("MB of activations per image)")

    def objective(_trial):  # a trial that adds no measured epoch, and takes a second
        now[0] += 1.0
        raise optuna.TrialPruned()

    # A second later the cheapest would no longer fit: the search ends after its next trial, and says why.
    before = len(study.trials)
    study.optimize(objective, n_trials=3, callbacks=[reserve])
    assert len(study.trials) == before + 1
    assert said[-1].startswith("ending the search with") and "not even the cheapest candidate so far" in said[-1]

    # A sampler that keeps proposing what does not fit: the search ends after REFUSALS_TO_END refusals in a row.
    roomy = FinalistReserve(10_000.0, count=1, epochs=20, runs_per_trial=1, scale=1.0, say=said.append,
                            clock=lambda: now[0], search_epochs=3)
    now[0] = 0.0
    roomy(study, trial)
    before = len(study.trials)

    def too_slow(_trial):
        roomy.epoch_limit = roomy.fit(small)  # as if only the cheapest fitted
        assert roomy.refusal(large) is not None
        raise optuna.TrialPruned()

    study.optimize(too_slow, n_trials=REFUSALS_TO_END + 5, callbacks=[roomy])
    assert len(study.trials) == before + REFUSALS_TO_END
    assert said[-1].endswith(f"{REFUSALS_TO_END} candidates in a row were too slow for it")


def test_a_refused_candidate_is_recorded_rejected_and_never_built(small_npz, tmp_path, monkeypatch):
    from budgetnas.search import SearchConfig, run_search

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")
    monkeypatch.setattr("budgetnas.trainer.build_model", refuse)
    asked: list[float | None] = []

    def admission(activations):
        asked.append(activations)
        return "too slow for the time left (a test)"

    config = SearchConfig(budget=3000, dataset=f"npz:{small_npz}", trials=3, epochs=1, device="cpu",
                          storage=f"sqlite:///{tmp_path}/s.db", study="t", sampler="random")
    summary = run_search(config, admission=admission)
    assert summary.trials == summary.rejected == 3 and len(asked) == 3 and all(a and a > 0 for a in asked)
    for trial in optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db").trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["rejected"].startswith("too slow for the time left (a test): ")
        assert trial.user_attrs["memory_estimate"] / 512 == pytest.approx(asked[trial.number])


def test_winner_config_is_written_before_its_replay(tiny_npz, tmp_path):
    # The search's choice is the expensive part of a sweep: a replay stopped or failed after it must not lose
    # it. write_winner writes the chosen trial's config (spec, the recipe the replay will train, the search's
    # record) before any replay runs; the replay then rewrites it with the test figures.
    from budgetnas.config import load_config
    from budgetnas.records import spec_of
    from budgetnas.search import SearchConfig
    from budgetnas.sweep import SweepRow, ranked_trials, write_winner
    from studyfactory import BUDGET, make_study

    made = make_study(tmp_path, tiny_npz, with_failed=False)
    study = optuna.load_study(study_name=made.name, storage=made.url)
    best = ranked_trials(study)[0]
    search = SearchConfig(budget=BUDGET, storage=made.url, dataset=f"npz:{tiny_npz}", objectives=("accuracy",))
    row = SweepRow(budget=BUDGET, study=made.name, trial=-1, search_trials=len(study.trials), search_seconds=5.0)
    path = write_winner(row, search, "best", "flip", epochs=7, seed=3, folder=tmp_path / "found")
    assert row.trial == best.number
    found = load_config(path)
    assert found.spec == spec_of(best) and found.result["params"] == best.user_attrs["params"]
    assert (found.recipe.epochs, found.recipe.seed, found.recipe.augment) == (7, 3, "flip")  # as the replay trains
    assert found.result["trial"] == best.number and "test_accuracy" not in found.result
    assert "Not replayed yet" in path.read_text(encoding="utf-8")

    # The replay rewrites it with its figures (here a quick one on a slice, which the config says); a rerun of the
    # sweep that chooses again must not replace those measured figures by "Not replayed yet" before its own
    # replay ends (a stopped rerun used to leave no test figures at all).
    from budgetnas.sweep import write_found

    row.replay.update(val_accuracy=0.5, test_accuracy=0.25, train_seconds=1.0, epochs=7, seed=3, subset=600)
    write_found(row, search, tmp_path / "found")
    replayed = path.read_bytes()
    assert b"600-image slice" in replayed and load_config(path).result["replay_subset"] == 600
    rerun = SweepRow(budget=BUDGET, study=made.name, trial=-1, search_trials=len(study.trials), search_seconds=9.0)
    assert write_winner(rerun, search, "best", None, epochs=7, seed=3, folder=tmp_path / "found") == path
    assert path.read_bytes() == replayed and rerun.trial == best.number

    # Any family's spec: an mbconv winner (a real 50K sweep once failed here, on a spec without to_dict). The
    # study's best trial copied with an mbconv spec in place of its CNN's; nothing here trains it.
    from budgetnas.families import get_family
    from budgetnas.spec import spec_to_dict

    mbconv = get_family("mbconv").minimal_spec("fit", (1, 28, 28))
    copy = optuna.create_study(storage=made.url, study_name="mbconv-copy", directions=study.directions)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    frozen = study.get_trials(deepcopy=True)[best.number]
    frozen.user_attrs["spec"] = spec_to_dict(mbconv)
    copy.add_trial(frozen)
    row = SweepRow(budget=BUDGET, study="mbconv-copy", trial=-1, search_trials=1, search_seconds=5.0)
    found = load_config(write_winner(row, search, 0, None, epochs=7, seed=3, folder=tmp_path / "mbconv"))
    assert found.spec == mbconv and row.trial == 0


@pytest.mark.slow
def test_sweep_replays_each_winner_with_every_replay_seed(cli, tiny_npz, tmp_path):
    storage = f"sqlite:///{tmp_path / 'seeds.db'}"
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}", "--trials", "2",
               "--epochs", "1", "--replay-epochs", "1", "--storage", storage, "--out", tmp_path / "out", "--json",
               "--subset", "400", "--seed", "5", "--replay-seeds", "1,0", "--replay-workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 at once, each in its own process" in proc.stderr and "[seed 0]" in proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    runs = row["seed_replays"]["seeds"]
    assert [r["seed"] for r in runs] == [1, 0] and row["replay"]["seed"] == 1  # the first seed's run is the row's
    for run in runs:  # each seed a whole replay with its own artifacts
        metrics = json.loads((tmp_path / "out" / f"{row['study']}-best" / f"seed-{run['seed']}" / "metrics.json")
                             .read_text())
        assert metrics["seed"] == run["seed"] and metrics["test_accuracy"] == run["test_accuracy"]
        assert metrics["trial"] == row["trial"]  # every seed trains the same trial
    mean = (runs[0]["test_accuracy"] + runs[1]["test_accuracy"]) / 2
    assert row["seed_replays"]["mean_test_accuracy"] == pytest.approx(mean)
    from budgetnas.config import load_config

    found = load_config(tmp_path / "out" / "found" / "cnn-3k.toml")
    assert found.recipe.seed == 1 and found.result["seed"] == 1 and found.result["search_seed"] == 5
    assert [s["seed"] for s in found.result["seeds"]] == [1, 0]
    assert found.result["mean_test_accuracy"] == pytest.approx(mean)
    assert "seed 1" in (tmp_path / "out" / "SWEEP.md").read_text()


def test_sweep_rejects_bad_replay_seeds(cli, tiny_npz):
    for bad, says in (("0,x", "comma-separated"), ("1,1", "differ")):
        proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}",
                   "--replay-seeds", bad)
        assert_one_line_error(proc, 2, "--replay-seeds")
        assert says in proc.stderr, proc.stderr
    proc = cli("sweep", "--family", "cnn", "--budgets", "3k", "--dataset", f"npz:{tiny_npz}", "--replay-seeds", "0,1",
               "--replay-workers", "0")
    assert_one_line_error(proc, 2, "--replay-workers")
