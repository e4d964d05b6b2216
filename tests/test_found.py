"""studies/found: the searched winners are valid run configs and RESULTS.md quotes them faithfully (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetnas.config import load_config
from budgetnas.counting import PAPER_BATCH, count_mult_adds, count_params
from budgetnas.model import build_model, trainable_params
from budgetnas.paper import paper_models

FOUND = Path(__file__).resolve().parents[1] / "studies" / "found"
SHAPE, CLASSES = (1, 28, 28), 10
# issue 8's budgets: every one of them has a found config
BUDGETS = {"cnn": (10_000, 20_000, 50_000, 100_000), "fcn": (50_000, 100_000, 200_000)}
NAMES = [f"{family}-{budget // 1000}k" for family, budgets in BUDGETS.items() for budget in budgets]


@pytest.mark.parametrize("name", NAMES)
def test_found_config_is_within_its_budget_and_self_consistent(name):
    config = load_config(FOUND / f"{name}.toml")
    result = config.result
    assert config.name == f"found-{name}" and config.dataset == "fashion-mnist"
    assert config.spec.family == name.split("-")[0]
    assert result["budget"] == int(name.split("-")[1][:-1]) * 1000
    params = count_params(config.spec, SHAPE, CLASSES)
    assert params == result["params"] == trainable_params(build_model(config.spec, SHAPE, CLASSES))
    assert params <= result["budget"]
    assert count_mult_adds(config.spec, SHAPE, CLASSES, batch=1) * PAPER_BATCH == result["mult_adds"]
    assert config.recipe.epochs == result["epochs"] and config.recipe.seed == result["seed"]
    assert 0.0 < result["test_accuracy"] <= 1.0 and 0.0 < result["val_accuracy"] <= 1.0
    # found by a search that selected on validation only, within the 45 minutes per budget
    # the finalists' full-length runs (--finalists, --finalist-augments) count as search time
    assert result["search_objectives"] == ["accuracy"]
    assert result["search_seconds"] + result.get("finalist_seconds", 0) <= 45 * 60


def test_results_table_quotes_every_found_config():
    table = (FOUND / "RESULTS.md").read_text(encoding="utf-8")
    for name in NAMES:
        result = load_config(FOUND / f"{name}.toml").result
        family, budget = name.split("-")
        # the paper's best pick at this budget (FCN 100K has two: 88.52% and 87.82%)
        paper = max((m for m in paper_models(family) if m.budget == result["budget"]), key=lambda m: m.test_accuracy)
        row = next((line for line in table.splitlines() if line.startswith(f"| {family.upper()} {budget.upper()} |")),
                   None)
        assert row is not None, f"RESULTS.md has no row for {name}"
        assert f"{result['test_accuracy'] * 100:.2f}" in row and f"{result['params']:,}" in row, row
        assert f"{paper.test_accuracy * 100:.2f}" in row, row


SEEDS = Path(__file__).resolve().parents[1] / "studies" / "seeds"


@pytest.mark.parametrize("path", sorted(SEEDS.glob("*.toml")), ids=lambda p: p.stem)
def test_seed_is_an_exact_starting_point_of_its_search(path):
    # `--enqueue studies/seeds/X.toml` must rebuild exactly this model inside the fit space, under the budget.
    from budgetnas.space import params_of

    config = load_config(path)
    budget = int(path.stem.split("-")[1][:-1]) * 1000
    values = params_of(config.spec, config.recipe, budget, SHAPE, CLASSES, "fit")
    assert count_params(config.spec, SHAPE, CLASSES) <= budget
    assert values["lr"] == config.recipe.lr and values["schedule"] == config.recipe.schedule


def test_found_configs_name_the_starting_points_their_search_used(monkeypatch):
    # Each named starting point still resolves and fits its budget exactly as `--enqueue` takes it, so the
    # search can be rerun as it ran (the references are paper names or paths from the repository root).
    from budgetnas.search import SearchConfig, start_params

    monkeypatch.chdir(FOUND.parents[1])
    for name in NAMES:
        result = load_config(FOUND / f"{name}.toml").result
        search = SearchConfig(budget=result["budget"], family=name.split("-")[0],
                              recipe_space=result["search_recipe_space"],
                              enqueue=tuple(result.get("search_enqueue", ())))
        assert [ref for ref, _ in start_params(search, SHAPE, CLASSES)] == list(search.enqueue)


SEARCHED = FOUND / "searched"


@pytest.mark.parametrize("path", sorted(SEARCHED.glob("*.toml")), ids=lambda p: p.stem)
def test_searched_winner_was_found_without_starting_points(path):
    """studies/found/searched: issue 13's target runs. No --enqueue, no hand-designed config to transfer from
    (only ``auto``, the same storage's smaller budgets, or another searched winner in this folder: both are
    search results), within 45 minutes, two replay seeds."""
    config = load_config(path)
    result = config.result
    assert config.name == f"found-{path.stem}"
    params = count_params(config.spec, SHAPE, CLASSES)
    assert params == result["params"] == trainable_params(build_model(config.spec, SHAPE, CLASSES)) <= result["budget"]
    assert count_mult_adds(config.spec, SHAPE, CLASSES, batch=1) * PAPER_BATCH == result["mult_adds"]
    assert result["search_enqueue"] == []
    for source in result["search_transfer_from"]:
        searched = source.startswith("studies/found/searched/") and (FOUND.parents[1] / source).is_file()
        assert source == "auto" or searched, source
    # the finalists' full-length runs (--finalists, --finalist-augments) count as search time
    assert result["search_objectives"] == ["accuracy"]
    assert result["search_seconds"] + result.get("finalist_seconds", 0) <= 45 * 60
    # two replays, as `sweep --replay-seeds 0,1` records them: the first is the config's own run
    seeds = result["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1] and result["seed"] == config.recipe.seed == 0
    assert (seeds[0]["test_accuracy"], seeds[0]["val_accuracy"]) == (result["test_accuracy"], result["val_accuracy"])
    mean = (seeds[0]["test_accuracy"] + seeds[1]["test_accuracy"]) / 2
    assert result["mean_test_accuracy"] == pytest.approx(mean)
    assert result["mean_val_accuracy"] == pytest.approx((seeds[0]["val_accuracy"] + seeds[1]["val_accuracy"]) / 2)
    table = (FOUND / "RESULTS.md").read_text(encoding="utf-8")
    row = next((line for line in table.splitlines() if line.startswith(f"| searched {path.stem.upper()} |")), None)
    assert row is not None, f"RESULTS.md has no 'searched' row for {path.stem}"
    for accuracy in (seeds[0]["test_accuracy"], seeds[1]["test_accuracy"]):
        assert f"{accuracy * 100:.2f}%" in row, row
    assert f"{mean * 100:.2f}%" in row, row
