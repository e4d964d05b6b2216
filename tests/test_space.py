"""The search space: paper picks reachable, fixed distributions, fit-by-construction, small inputs."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import FixedTrial

from budgetnas.counting import count_params
from budgetnas.space import MAX_CONV_BLOCKS, minimal_spec, sample_spec, smallest_count
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec, feature_shapes

optuna.logging.set_verbosity(optuna.logging.WARNING)
FMNIST = (1, 28, 28)


def plain_cnn(conv: tuple[int, ...], fc: tuple[int, ...]) -> dict[str, object]:
    """Direct-space parameters of the paper's CNNs: k3, pool 2 per block, flatten, ReLU, nothing else
    (conv batch norm is not asked: every conv block has it since cnn space version 3)."""
    params: dict[str, object] = {"n_conv": len(conv), "n_fc": len(fc), "head": "flatten",
                                 "fc_batch_norm": False, "dropout": 0.0, "activation": "relu", "init": "default"}
    for i, channels in enumerate(conv, start=1):
        params.update({f"conv{i}_kernel": 3, f"conv{i}_pool": True, f"conv{i}_channels": channels})
    params.update({f"fc{i}_units": units for i, units in enumerate(fc, start=1)})
    return params


@pytest.mark.parametrize("conv, fc, expected", [
    ((10, 18), (8, 20), 9_192), ((20, 30), (9, 20), 19_279),
    ((25, 40), (20, 30), 49_450), ((40, 60), (25, 50), 97_395),
])
def test_paper_cnns_are_reachable_exactly_in_direct_with_conv_batch_norm(conv, fc, expected):
    spec = sample_spec(FixedTrial(plain_cnn(conv, fc)), "cnn", 100_000, FMNIST, 10, "direct")
    assert spec == CNNSpec(conv=tuple(ConvBlock(c, kernel_size=3, padding=1, pool=2, batch_norm=True) for c in conv),
                           fc=fc)
    # the paper's as-counted model (expected) plus batch norm's scale and shift per channel
    assert count_params(spec, FMNIST, 10) == expected + 2 * sum(conv)


def test_every_conv_block_is_batch_normalised_whatever_the_stored_answer():
    """A version-2 trial's ``conv_batch_norm=False`` is no longer asked, so it cannot switch batch norm off."""
    spec = sample_spec(FixedTrial(plain_cnn((8, 8), ()) | {"conv_batch_norm": False}), "cnn", 10_000, FMNIST, 10,
                       "direct")
    assert all(b.batch_norm for b in spec.conv)
    assert all(b.batch_norm for b in minimal_spec("cnn", "fit", FMNIST).conv)


def test_paper_cnn_with_batch_norm_is_reachable():
    params = plain_cnn((40, 60), (25, 50)) | {"fc_batch_norm": True}
    spec = sample_spec(FixedTrial(params), "cnn", 100_000, FMNIST, 10, "direct")
    assert all(b.batch_norm for b in spec.conv) and spec.fc_batch_norm


@pytest.mark.parametrize("hidden, expected", [((50, 120), 46_580), ((100, 180), 98_490), ((200, 200), 199_210)])
def test_paper_fcns_are_reachable_exactly_in_direct(hidden, expected):
    params = {"n_hidden": len(hidden), "batch_norm": False, "dropout": 0.0, "activation": "relu",
              "init": "xavier_normal", **{f"hidden{i}_units": w for i, w in enumerate(hidden, start=1)}}
    spec = sample_spec(FixedTrial(params), "fcn", 200_000, FMNIST, 10, "direct")
    assert spec == FCNSpec(hidden=hidden, init="xavier_normal")
    assert count_params(spec, FMNIST, 10) == expected


@pytest.mark.parametrize("family", ["cnn", "fcn"])
@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_every_parameter_keeps_one_distribution(family, parameterisation):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for budget in (5_000, 100_000):  # not even the budget may change a distribution
        for _ in range(60):
            trial = study.ask()
            sample_spec(trial, family, budget, FMNIST, 10, parameterisation)
            study.tell(trial, 0.0)
    seen: dict[str, object] = {}
    for trial in study.trials:
        for name, distribution in trial.distributions.items():
            assert seen.setdefault(name, distribution) == distribution, name
    if family == "cnn":
        assert f"conv{MAX_CONV_BLOCKS}_kernel" in seen  # deep nets were sampled too


@pytest.mark.parametrize("family", ["cnn", "fcn"])
@pytest.mark.parametrize("budget", [2_000, 20_000, 100_000])
def test_fit_parameterisation_always_within_budget(family, budget):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=budget))
    fills = []
    for _ in range(150):
        trial = study.ask()
        spec = sample_spec(trial, family, budget, FMNIST, 10, "fit")
        study.tell(trial, 0.0)
        params = count_params(spec, FMNIST, 10)
        if all(w == 1 for w in _widths(spec)):
            continue  # the narrowest net of its shape: may exceed the fill (and even the budget: rejected)
        assert params <= budget
        fills.append(params / (trial.params["fill"] * budget))
        # replay: the stored parameters rebuild the same spec
        assert sample_spec(FixedTrial(trial.params), family, budget, FMNIST, 10, "fit") == spec
    assert len(fills) > 50
    assert max(fills) <= 1.0
    if budget >= 20_000:  # the scale is the largest that fits: most candidates land near their target
        assert sorted(fills)[len(fills) // 2] > 0.9


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_small_inputs_never_pool_below_one_pixel(input_shape, parameterisation):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    deepest = 0
    for _ in range(120):
        trial = study.ask()
        spec = sample_spec(trial, "cnn", 50_000, input_shape, 10, parameterisation)
        shapes = feature_shapes(spec, input_shape)  # raises if any map goes below 1x1
        assert min(min(s[1:]) for s in shapes) >= 1
        # issue 13 (space version 2): a block whose input map is over 8x8 always pools and is not asked
        pools_asked = sum(trial.params.get(f"conv{i}_pool", True) for i in range(1, len(spec.conv) + 1))
        pools_kept = sum(1 for b in spec.conv if b.pool)
        forced = {(1, 28, 28): 2, (3, 32, 32): 2, (1, 8, 8): 0}[input_shape]
        assert all(b.pool for b in spec.conv[:forced])
        assert not any(f"conv{i}_pool" in trial.params for i in range(1, min(forced, len(spec.conv)) + 1))
        if input_shape[1] == 8 and pools_asked == 4:
            assert pools_kept == 3  # 8 -> 4 -> 2 -> 1; the fourth pool is dropped
        deepest = max(deepest, pools_kept)
        study.tell(trial, 0.0)
    assert deepest >= 3


@pytest.mark.parametrize("family, parameterisation, expected", [
    ("cnn", "fit", 32), ("cnn", "direct", 54), ("fcn", "fit", 805), ("fcn", "direct", 1_600),
])
def test_smallest_architecture_of_the_space(family, parameterisation, expected):
    assert smallest_count(family, parameterisation, FMNIST, 10) == expected
    assert count_params(minimal_spec(family, parameterisation, FMNIST), FMNIST, 10) == expected


def _widths(spec) -> list[int]:
    if isinstance(spec, FCNSpec):
        return list(spec.hidden)
    return [b.out_channels for b in spec.conv] + list(spec.fc)


def test_recipe_space_keeps_one_distribution_and_covers_every_choice():
    from budgetnas.space import BATCH_SIZES, sample_recipe
    from budgetnas.trainer import AUGMENTS, SCHEDULES, Recipe

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    base = Recipe(epochs=7, seed=3)
    recipes = []
    for _ in range(80):
        trial = study.ask()
        recipes.append(sample_recipe(trial, base))
        study.tell(trial, 0.0)
    for recipe in recipes:
        assert recipe.epochs == 7 and recipe.seed == 3  # the search's epochs and seed, not sampled
        assert recipe.optimizer == "adamw" and recipe.normalize
        assert 3e-4 <= recipe.lr <= 1e-2 and 1e-5 <= recipe.weight_decay <= 1e-1
    assert {r.schedule for r in recipes} == set(SCHEDULES) and {r.augment for r in recipes} == set(AUGMENTS)
    assert {r.batch_size for r in recipes} == set(BATCH_SIZES)
    first = study.trials[0].distributions
    assert all(t.distributions == first for t in study.trials)
    # rebuilt from the stored parameters alone (what replay's cross-check relies on)
    assert sample_recipe(FixedTrial(study.trials[5].params), base) == recipes[5]


def test_unknown_recipe_space_is_refused():
    from budgetnas.errors import UsageError
    from budgetnas.space import check_choices

    with pytest.raises(UsageError, match="unknown recipe space 'fancy'; choose one of paper, search"):
        check_choices("cnn", "fit", "fancy")


@pytest.mark.parametrize("name", ["cnn-10k+bn", "cnn-20k+bn", "cnn-50k+bn", "cnn-100k+bn", "fcn-50k", "fcn-100k",
                                  "fcn-200k"])
@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_params_of_inverts_the_space_for_the_paper_picks(name, parameterisation):
    from budgetnas.reproduce import resolve_config
    from budgetnas.space import params_of, sample_recipe

    config = resolve_config(name)
    budget = int(name.split("-")[1].removesuffix("+bn").removesuffix("k")) * 1000
    values = params_of(config.spec, config.recipe, budget, FMNIST, 10, parameterisation)
    assert sample_spec(FixedTrial(values), config.spec.family, budget, FMNIST, 10, parameterisation) == config.spec
    recipe = sample_recipe(FixedTrial(values), config.recipe)
    assert (recipe.lr, recipe.batch_size, recipe.augment) == (1e-3, 512, "none")  # the paper's, inside the space
    assert recipe.weight_decay == 1e-5  # the space's floor (the paper has none)


@pytest.mark.parametrize("name", ["cnn-10k", "cnn-100k"])
def test_the_paper_cnns_as_counted_are_refused_with_their_batch_norm_variant_named(name):
    from budgetnas.errors import UsageError
    from budgetnas.reproduce import resolve_config
    from budgetnas.space import params_of

    with pytest.raises(UsageError, match=r"batch-normalises every conv block .* NAME\+bn"):
        params_of(resolve_config(name).spec, None, 100_000, FMNIST, 10, "direct")


def test_params_of_inverts_random_specs_of_the_direct_space():
    from budgetnas.space import params_of

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    checked = 0
    for _ in range(40):
        for family in ("cnn", "fcn"):
            spec = sample_spec(study.ask(), family, 100_000, FMNIST, 10, "direct")
            if count_params(spec, FMNIST, 10) > 10**7:
                continue
            values = params_of(spec, None, 10**7, FMNIST, 10, "direct")
            assert sample_spec(FixedTrial(values), family, 10**7, FMNIST, 10, "direct") == spec
            checked += 1
    assert checked > 50


@pytest.mark.parametrize("spec, message", [
    (CNNSpec(conv=(ConvBlock(8, kernel_size=4, batch_norm=True),)), "kernels (3, 5, 7)"),
    (CNNSpec(conv=(ConvBlock(8, batch_norm=True), ConvBlock(8))), "batch-normalises every conv block"),
    (CNNSpec(conv=(ConvBlock(8),)), "start from its batch-norm variant (a paper name: NAME+bn)"),
    (CNNSpec(conv=(ConvBlock(8, pool=3, batch_norm=True),)), "pool 2 or none"),
    (CNNSpec(conv=(ConvBlock(200, batch_norm=True), ConvBlock(200, batch_norm=True))), "over the budget"),
    (FCNSpec(hidden=(2,)), "outside the fit space"),
])
def test_params_of_names_what_the_space_cannot_express(spec, message):
    from budgetnas.errors import UsageError
    from budgetnas.space import params_of

    with pytest.raises(UsageError, match=re.escape(message)):
        params_of(spec, None, 50_000, FMNIST, 10, "fit")


@pytest.mark.parametrize("family, spec, message", [
    ("cnn", CNNSpec(conv=(ConvBlock(300, batch_norm=True),)), "conv1 widths 2..256, got 300"),
    ("cnn", CNNSpec(conv=(ConvBlock(8, batch_norm=True),), fc=(600,)), "fc1 widths 2..512, got 600"),
    ("fcn", FCNSpec(hidden=(1,)), "hidden1 widths 2..1024, got 1"),
    ("mbconv", None, "stage1 widths 2..256, got 300"),
])
def test_direct_starts_outside_the_sampled_ranges_are_refused(family, spec, message):
    """--enqueue in the direct space: a width the space never samples would be stored outside its distribution
    (Optuna only warns), so the inverse says why it cannot instead."""
    from budgetnas.errors import UsageError
    from budgetnas import MBConvSpec, Stage
    from budgetnas.families import get_family

    if spec is None:
        spec = MBConvSpec(stem=16, stages=(Stage("plain", 300),))
    with pytest.raises(UsageError, match=re.escape(message) + ".*--parameterisation fit"):
        get_family(family).params_of(spec, None, 10**7, FMNIST, 10, "direct")


def test_a_start_of_exactly_the_budget_has_fill_one_and_one_over_it_keeps_its_own():
    """fill = (params + 0.5) / budget put a spec of exactly the budget at 1.000006, outside the space's (0.5, 1)
    (Optuna warned and stored it); an over-budget start keeps its fill, so the exact check rejects it as it is."""
    from budgetnas.space import FILL, fit_params

    assert fit_params({"a": 10, "b": 20}, 1000, 1000, "x")["fill"] == FILL[1]
    assert fit_params({"a": 10, "b": 20}, 999, 1000, "x")["fill"] == pytest.approx(0.9995)
    assert fit_params({"a": 10, "b": 20}, 1001, 1000, "x")["fill"] == pytest.approx(1.0015)
