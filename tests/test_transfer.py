"""Transfer between budgets and the proxy pre-screen, end to end on a tiny real slice (real SQLite, real CLI)."""
# ruff: noqa: F811  (the search/small_npz fixtures are imported from test_search and used as arguments)

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest
from conftest import REPO, assert_one_line_error
from optuna.trial import FixedTrial
from test_search import load, search, small_npz  # noqa: F401

from budgetnas import records
from budgetnas.counting import count_params
from budgetnas.proxies import MIN_SCORED, SCREEN_ATTR, ProxyScreen
from budgetnas.reproduce import resolve_config
from budgetnas.space import sample_spec
from budgetnas.spec import FCNSpec
from budgetnas.study import create_or_load
from budgetnas.transfer import Source, neighbours, refit

SHAPE_8X8 = (1, 8, 8)


def _shape(spec: dict) -> list:
    """Everything of a CNN spec except its widths."""
    return [(b["kernel_size"], b["pool"], b["batch_norm"]) for b in spec["conv"]] + [
        len(spec["fc"]), spec["head"], spec["fc_batch_norm"], spec["activation"], spec["init"], spec["dropout"]]


@pytest.mark.slow
def test_transfer_auto_enqueues_the_neighbouring_winners_refitted_to_this_budget(search, tmp_path):
    first = search("--trials", "3", "--objectives", "accuracy", budget="3k")
    assert first.returncode == 0, first.stderr
    source = load(tmp_path)
    best = sorted((t for t in source.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)

    # A study between the two that has trained nothing yet (one started beside this search) is passed over.
    settings = records.StudySettings.from_dict(source.user_attrs[records.SETTINGS_ATTR])
    create_or_load(f"sqlite:///{tmp_path}/s.db", "empty", dataclasses.replace(settings, budget=5000))
    proc = search("--trials", "3", "--objectives", "accuracy", "--study", "big", "--transfer-from", "auto",
                  budget="8k")
    assert proc.returncode == 0, proc.stderr
    # A tiny random model the fit space cannot express (widths of 1, under half its budget) is skipped, said so.
    skipped = [t for t in best[:3] if f"transfer transfer:t#{t.number} skipped: " in proc.stderr]
    assert all("outside the fit space" in proc.stderr for _ in skipped) and len(skipped) < 3
    taken = [t for t in best[:3] if t not in skipped]
    assert f"transfer: {len(taken)} re-fitted starting point(s) from auto" in proc.stderr
    study = load(tmp_path, "big")
    moved = [t for t in study.trials if "enqueued" in t.user_attrs]
    assert [t.user_attrs["enqueued"] for t in moved] == [f"transfer:t#{t.number}" for t in taken]
    for trial, origin in zip(moved, taken):
        fitted = sample_spec(FixedTrial(trial.params), "cnn", 8000, SHAPE_8X8, 10, "fit")
        params = count_params(fitted, SHAPE_8X8, 10)
        assert params <= 8000 and params == trial.user_attrs["params"]  # fits the new budget exactly
        assert fitted.to_dict() == trial.user_attrs["spec"]
        assert _shape(trial.user_attrs["spec"]) == _shape(origin.user_attrs["spec"])  # the winner's shape
        assert params > origin.user_attrs["params"]  # re-fitted: wider, not the 3k model copied
        assert trial.params["fill"] == pytest.approx(min((origin.user_attrs["params"] + 0.5) / 3000, 1.0))

    again = search("--trials", "4", "--objectives", "accuracy", "--study", "big", "--transfer-from", "auto",
                   budget="8k")
    assert again.returncode == 0, again.stderr
    assert sum("enqueued" in t.user_attrs for t in load(tmp_path, "big").trials) == len(moved)  # queued once


def test_a_winner_of_the_older_space_gets_conv_batch_norm_and_keeps_the_rest_of_its_shape():
    """cnn space version 3 batch-normalises every conv block; a version-2 winner without it is moved there
    (Family.nearest_in_space), not skipped: its fill is that of the normalised model on its own budget."""
    from budgetnas.errors import UsageError
    from budgetnas.space import params_of

    from budgetnas.spec import spec_from_dict

    # the searched 20K winner shipped until session 18 (cnn space version 2: no conv batch norm)
    block = {"padding": None, "batch_norm": False}
    v2 = spec_from_dict({"family": "cnn", "conv": [{**block, "out_channels": 5, "kernel_size": 5, "pool": 2},
                                                   {**block, "out_channels": 31, "kernel_size": 5, "pool": 2},
                                                   {**block, "out_channels": 7, "kernel_size": 7, "pool": 0}],
                         "fc": [], "head": "flatten", "fc_batch_norm": True, "dropout": 0.2,
                         "activation": "silu", "init": "default"})
    assert count_params(v2, (1, 28, 28), 10) == 18_116  # the config's own count
    with pytest.raises(UsageError, match="batch-normalises every conv block"):  # --enqueue stays exact: refused
        params_of(v2, None, 20_000, (1, 28, 28), 10)
    source = Source(ref="v2", spec=v2, recipe=None, budget=20_000)
    values = refit(source, 50_000, (1, 28, 28), 10)
    fitted = sample_spec(FixedTrial(values), "cnn", 50_000, (1, 28, 28), 10, "fit")
    normalised = dataclasses.replace(v2, conv=tuple(dataclasses.replace(b, batch_norm=True) for b in v2.conv))
    assert _shape(fitted.to_dict()) == _shape(normalised.to_dict())
    assert all(b.batch_norm for b in fitted.conv)
    assert values["fill"] == pytest.approx((count_params(normalised, (1, 28, 28), 10) + 0.5) / 20_000)
    assert int(0.85 * values["fill"] * 50_000) <= count_params(fitted, (1, 28, 28), 10) <= 50_000


def test_a_found_config_is_refitted_to_another_budget_keeping_its_shape_and_fill():
    run = resolve_config(str(REPO / "studies" / "found" / "cnn-50k.toml"))
    source = Source(ref="found", spec=run.spec, recipe=run.recipe, budget=run.result["budget"])
    for budget in (20_000, 100_000):
        values = refit(source, budget, (1, 28, 28), 10, recipe_space="search")
        fitted = sample_spec(FixedTrial(values), "cnn", budget, (1, 28, 28), 10, "fit")
        params = count_params(fitted, (1, 28, 28), 10)
        assert int(0.85 * budget) <= params <= int(values["fill"] * budget) <= budget
        assert values["fill"] == pytest.approx((run.result["params"] + 0.5) / 50_000)
        assert _shape(fitted.to_dict()) == _shape(run.spec.to_dict())
        widths = [b.out_channels for b in fitted.conv]
        assert widths == sorted(widths) and len(set(widths)) == 3  # 24 < 48 < 64 stays increasing
        assert (values["lr"], values["schedule"], values["batch_size"]) == (0.005, "onecycle", 128)
    assert "lr" not in refit(source, 20_000, (1, 28, 28), 10, recipe_space="paper")


def test_an_mbconv_winner_is_refitted_by_its_own_family():
    """Transfer goes through the family's params_of and sample (it once called the cnn/fcn space and
    skipped every mbconv start with "unknown family 'mbconv'")."""
    from dataclasses import replace

    from budgetnas.families import get_family
    from budgetnas.families.mbconv import MBConvSpec, Stage
    from budgetnas.trainer import Recipe

    family = get_family("mbconv")
    spec = MBConvSpec(stem=18, stem_stride=2, stages=(Stage("plain", 10, depth=2, kernel_size=5, se=True),
                                                      Stage("inverted", 19, stride=2, kernel_size=5, expansion=5,
                                                            se=True),
                                                      Stage("inverted", 27, depth=2, stride=2)),
                      dropout=0.1175, activation="leaky_relu", init="xavier_normal")
    params = count_params(spec, (1, 28, 28), 10)
    source = Source(ref="mbconv-20k#46", spec=spec, recipe=Recipe(lr=0.005, schedule="cosine"), budget=20_000)
    values = refit(source, 50_000, (1, 28, 28), 10, recipe_space="search")
    fitted = family.sample(FixedTrial(values), 50_000, (1, 28, 28), 10, "fit")
    assert values["fill"] == pytest.approx((params + 0.5) / 20_000)
    assert params < count_params(fitted, (1, 28, 28), 10) <= int(values["fill"] * 50_000)
    same_widths = replace(fitted, stem=spec.stem, stages=tuple(replace(new, out_channels=old.out_channels)
                                                               for new, old in zip(fitted.stages, spec.stages)))
    assert same_widths == spec  # the shape kept: only the widths differ
    assert fitted.stem >= spec.stem and all(new.out_channels >= old.out_channels
                                            for new, old in zip(fitted.stages, spec.stages))


def test_a_refitted_start_over_the_compute_bound_keeps_its_shape_at_a_lower_fill():
    """Scaled up, a winner's mult-adds grow with its parameters: under a compute bound the start keeps its
    shape at the largest fill within the bound, instead of being rejected untrained; none fits: one clear error."""
    from budgetnas.counting import count_mult_adds
    from budgetnas.errors import UsageError

    run = resolve_config(str(REPO / "studies" / "found" / "cnn-20k.toml"))
    source = Source(ref="found", spec=run.spec, recipe=run.recipe, budget=run.result["budget"])
    free = refit(source, 100_000, (1, 28, 28), 10)
    unbounded = sample_spec(FixedTrial(free), "cnn", 100_000, (1, 28, 28), 10, "fit")
    cost = count_mult_adds(unbounded, (1, 28, 28), 10, 512)
    bound = int(0.7 * cost)
    values = refit(source, 100_000, (1, 28, 28), 10, max_mult_adds=bound)
    fitted = sample_spec(FixedTrial(values), "cnn", 100_000, (1, 28, 28), 10, "fit")
    assert 0.6 * cost < count_mult_adds(fitted, (1, 28, 28), 10, 512) <= bound  # the largest fill within it
    assert values["fill"] < free["fill"] and _shape(fitted.to_dict()) == _shape(run.spec.to_dict())
    assert refit(source, 100_000, (1, 28, 28), 10, max_mult_adds=cost) == free  # within the bound: unchanged
    with pytest.raises(UsageError, match="compute bound .* at any fill; widen --max-mult-adds"):
        refit(source, 100_000, (1, 28, 28), 10, max_mult_adds=cost // 100)


@pytest.mark.parametrize("name", ["searched/cnn-10k", "searched/cnn-20k", "cnn-50k"])
def test_a_28x28_winner_transfers_to_8x8_digits_keeping_its_pools(name):
    """Space v2 asks a block's pool only where its input map is at most 8x8: a 28x28 winner's parameters
    lack those choices, which every block of an 8x8 search asks (the search-efficiency benchmark's digits)."""
    run = resolve_config(str(REPO / "studies" / "found" / f"{name}.toml"))
    source = Source(ref="found", spec=run.spec, recipe=run.recipe, budget=run.result["budget"],
                    input_shape=(1, 28, 28), num_classes=10)
    values = refit(source, 3_000, SHAPE_8X8, 10, recipe_space="search")
    fitted = sample_spec(FixedTrial(values), "cnn", 3_000, SHAPE_8X8, 10, "fit")
    assert count_params(fitted, SHAPE_8X8, 10) <= 3_000
    assert [b.kernel_size for b in fitted.conv] == [b.kernel_size for b in run.spec.conv]
    # pools kept while the map allows them (8 -> 4 -> 2 -> 1), none below 1x1
    size, expected = 8, []
    for block in run.spec.conv:
        pool = 2 if block.pool and size >= 2 else None
        expected.append(pool)
        size = size // pool if pool else size
    assert [b.pool for b in fitted.conv] == expected


def test_an_mbconv_winner_transfers_to_8x8_keeping_its_blocks():
    """mbconv asks the same questions at any input size (a stride on a 1x1 map is dropped), so its family
    adds no size-dependent answers; the re-fitted start keeps every stage's block, kernel and depth."""
    from budgetnas.families import get_family

    run = resolve_config(str(REPO / "studies" / "found" / "searched" / "mbconv-20k.toml"))
    family = get_family("mbconv")
    assert family.shape_params(run.spec, SHAPE_8X8) == {}
    source = Source(ref="found", spec=run.spec, recipe=run.recipe, budget=run.result["budget"],
                    input_shape=(1, 28, 28), num_classes=10)
    values = refit(source, 5_000, SHAPE_8X8, 10, recipe_space="search")
    fitted = family.sample(FixedTrial(values), 5_000, SHAPE_8X8, 10, "fit")
    assert count_params(fitted, SHAPE_8X8, 10) <= 5_000
    assert [(s.block, s.kernel_size, s.depth) for s in fitted.stages] == \
        [(s.block, s.kernel_size, s.depth) for s in run.spec.stages]


def test_neighbours_are_the_nearest_budget_on_each_side():
    assert neighbours([10_000, 20_000, 50_000, 200_000], 100_000) == [50_000, 200_000]
    assert neighbours([10_000, 20_000], 5_000) == [10_000]
    assert neighbours([], 5_000) == []


def test_transfer_auto_into_a_new_storage_starts_from_nothing(tmp_path):
    from budgetnas.search import SearchConfig
    from budgetnas.transfer import sources, transfer_starts

    config = SearchConfig(budget=20_000, storage=f"sqlite:///{tmp_path}/new.db", transfer_from=("auto",))
    assert sources("auto", config) == []
    assert transfer_starts(config, (1, 28, 28), 10) == ([], [])
    assert not (tmp_path / "new.db").exists()  # looking for sources creates nothing


def test_bad_transfer_sources_fail_with_one_line_before_any_study(search, tmp_path):
    assert_one_line_error(search("--trials", "1", "--transfer-from", f"sqlite:///{tmp_path}/missing.db"), 2,
                          "does not exist")
    assert_one_line_error(search("--trials", "1", "--transfer-from", "auto", "--parameterisation", "direct"), 2,
                          "needs --parameterisation fit")
    assert_one_line_error(search("--trials", "1", "--transfer-from", "fcn-50k"), 2, "is a fcn config")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
def test_proxy_screen_rejects_candidates_below_the_quantile_of_earlier_ones(search, tmp_path):
    proc = search("--trials", "16", "--objectives", "accuracy", "--sampler", "random", "--proxy", "synflow",
                  "--proxy-screen", "0.5")
    assert proc.returncode == 0, proc.stderr
    trials = load(tmp_path).trials
    assert all(SCREEN_ATTR in t.user_attrs for t in trials)
    screened = 0
    for i, trial in enumerate(trials):
        earlier = [t.user_attrs[SCREEN_ATTR] for t in trials[:i]]
        rejected = trial.user_attrs.get("rejected", "")
        if len(earlier) < MIN_SCORED:
            assert not rejected
            continue
        below = trial.user_attrs[SCREEN_ATTR] < np.quantile(earlier, 0.5, method="lower")
        assert rejected.startswith("synflow") == below
        assert ("spec" in trial.user_attrs) != below  # screened-out candidates never train
        screened += below
    assert screened >= 1

    # Resumed with another proxy: its scores are on another scale, so it is judged against its own only (every
    # candidate was rejected when grad_norm's were compared with synflow's).
    proc = search("--trials", "22", "--objectives", "accuracy", "--sampler", "random", "--proxy", "grad_norm",
                  "--proxy-screen", "0.5")
    assert proc.returncode == 0, proc.stderr
    later = load(tmp_path).trials[len(trials):]
    assert len(later) == 6 and all(t.user_attrs["proxy_name"] == "grad_norm" for t in later)
    assert not [t for t in later[:MIN_SCORED] if t.user_attrs.get("rejected")]
    for i, trial in enumerate(later[MIN_SCORED:], start=MIN_SCORED):
        threshold = np.quantile([t.user_attrs[SCREEN_ATTR] for t in later[:i]], 0.5, method="lower")
        assert trial.user_attrs.get("rejected", "").startswith("grad_norm") == (trial.user_attrs[SCREEN_ATTR]
                                                                                  < threshold)


def test_proxy_screen_never_rejects_enqueued_starts_and_fraction_zero_only_records(tiny_npz):
    from budgetnas.data import load_dataset

    data = load_dataset(f"npz:{tiny_npz}")
    spec = FCNSpec(hidden=(8,))
    screen = ProxyScreen("synflow", 0.5, data.train.x, data.train.y, data.mean, data.std, data.num_classes)
    high = [1e30] * MIN_SCORED
    value, reason = screen.check(spec, high)
    assert reason.startswith("synflow") and value < 1e30
    assert screen.check(spec, high, enqueued=True) == (value, None)
    assert screen.check(spec, high[:-1]) == (value, None)  # too few earlier candidates to judge
    record_only = ProxyScreen("synflow", 0.0, data.train.x, data.train.y, data.mean, data.std, data.num_classes)
    assert record_only.check(spec, high) == (value, None)


@pytest.mark.parametrize("extra, message", [
    (("--proxy-screen", "0.5"), "--proxy-screen needs --proxy"),
    (("--proxy", "synflow", "--proxy-screen", "1.5"), "must be a fraction in [0, 1)"),
])
def test_bad_proxy_options_fail_with_one_line(search, tmp_path, extra, message):
    assert_one_line_error(search("--trials", "1", *extra), 2, message)
    assert not (tmp_path / "s.db").exists()


optuna.logging.set_verbosity(optuna.logging.WARNING)
