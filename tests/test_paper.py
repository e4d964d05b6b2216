"""The paper configs: exact weight and mult-add matches with the paper (no training)."""

from __future__ import annotations

import json

import pytest

from budgetnas.config import load_config
from budgetnas.counting import count_mult_adds, count_params, human_count
from budgetnas.errors import UsageError
from budgetnas.model import build_model, trainable_params
from budgetnas.paper import PAPER_MODELS
from budgetnas.reproduce import BN_SUFFIX, PAPER_NAMES, paper_dir, paper_names, resolve_config, with_batch_norm
from budgetnas.trainer import PAPER_RECIPE

SHAPE, CLASSES = (1, 28, 28), 10

# The paper's own figures, typed in from shared/paper (Tables 1-5), not read from the configs.
EXPECTED_WEIGHTS = {"fcn-50k": 46_580, "fcn-100k": 98_490, "fcn-100k-default": 98_490, "fcn-200k": 199_210,
                    "cnn-10k": 9_192, "cnn-20k": 19_279, "cnn-50k": 49_450, "cnn-100k": 97_395}
EXPECTED_MULT_ADDS = {"fcn-100k": "50.43M", "fcn-100k-default": "50.43M", "fcn-200k": "102.00M",
                      "cnn-10k": "208.33M", "cnn-50k": "1.03G", "cnn-100k": "2.37G"}


def test_every_paper_pick_has_a_config():
    assert paper_names()[: len(PAPER_NAMES)] == list(PAPER_NAMES)
    assert set(EXPECTED_WEIGHTS) == set(PAPER_NAMES)


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_as_counted_weights_match_the_paper_exactly(name):
    config = load_config(paper_dir() / f"{name}.toml")
    assert config.name == name
    assert count_params(config.spec, SHAPE, CLASSES) == EXPECTED_WEIGHTS[name]
    assert trainable_params(build_model(config.spec, SHAPE, CLASSES)) == EXPECTED_WEIGHTS[name]
    assert config.paper["weights"] == EXPECTED_WEIGHTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_MULT_ADDS))
def test_as_counted_mult_adds_match_the_paper_at_batch_512(name):
    config = resolve_config(name)
    mult_adds = count_mult_adds(config.spec, SHAPE, CLASSES, batch=512)
    assert human_count(mult_adds) == EXPECTED_MULT_ADDS[name] == config.paper["mult_adds"]


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_bn_variant_adds_two_parameters_per_normalised_channel(name):
    plain = resolve_config(name)
    bn = resolve_config(name + BN_SUFFIX)
    assert bn.name == name + BN_SUFFIX and bn.paper == plain.paper
    spec = plain.spec
    channels = sum(spec.hidden) if spec.family == "fcn" else sum(b.out_channels for b in spec.conv) + sum(spec.fc)
    assert count_params(bn.spec, SHAPE, CLASSES) == EXPECTED_WEIGHTS[name] + 2 * channels
    assert trainable_params(build_model(bn.spec, SHAPE, CLASSES)) == EXPECTED_WEIGHTS[name] + 2 * channels
    assert with_batch_norm(plain).spec == bn.spec


def test_configs_use_the_paper_recipe_and_architectures():
    for name in PAPER_NAMES:
        assert resolve_config(name).recipe == PAPER_RECIPE, name
    cnn = resolve_config("cnn-100k").spec
    assert [b.out_channels for b in cnn.conv] == [40, 60] and cnn.fc == (25, 50)  # not Table 3's typo 20, 50
    assert all(b.kernel_size == 3 and b.padding == 1 and b.pool == 2 and not b.batch_norm for b in cnn.conv)
    assert resolve_config("fcn-100k").spec.init == "xavier_normal"
    assert resolve_config("fcn-100k-default").spec.init == "default"
    assert resolve_config("fcn-100k").spec.hidden == (100, 180)


def test_config_figures_agree_with_the_paper_table_module():
    for model in PAPER_MODELS:
        paper = resolve_config(model.name).paper
        assert paper["weights"] == model.params
        assert paper["test_accuracy"] == pytest.approx(model.test_accuracy * 100)
        assert paper["cpu_seconds"] == pytest.approx(model.cpu_seconds)
        assert paper["gpu_seconds"] == pytest.approx(model.gpu_seconds)
        assert (paper["lowest_loss"], paper["lowest_loss_epoch"]) == (model.lowest_loss, model.lowest_loss_epoch)
    # Table 1's baseline row, typed in from the paper.
    baseline = resolve_config("fcn-100k-default").paper
    assert (baseline["test_accuracy"], baseline["cpu_seconds"], baseline["gpu_seconds"]) == (87.8223, 150.35, 162.41)
    assert (baseline["lowest_loss"], baseline["lowest_loss_epoch"]) == (0.10, 13)


def test_resolve_config_accepts_paths_and_rejects_unknown_names(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text((paper_dir() / "cnn-10k.toml").read_text())
    assert resolve_config(str(path)).spec == resolve_config("cnn-10k").spec
    assert resolve_config(str(path) + BN_SUFFIX).name == "cnn-10k+bn"
    with pytest.raises(UsageError, match="cnn-100k"):
        resolve_config("cnn-1m")


def test_paper_dir_honours_the_environment(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text((paper_dir() / "fcn-50k.toml").read_text())
    monkeypatch.setenv("BUDGETNAS_PAPER_DIR", str(tmp_path))
    assert paper_names() == ["tiny"]
    assert resolve_config("tiny").spec.hidden == (50, 120)
    monkeypatch.setenv("BUDGETNAS_PAPER_DIR", str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="BUDGETNAS_PAPER_DIR"):
        resolve_config("cnn-100k")


@pytest.mark.parametrize("name", ["cnn-100k", "fcn-200k"])
def test_count_cli_json_is_exact(cli, name):
    proc = cli("count", name, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["params"] == EXPECTED_WEIGHTS[name] and doc["batch"] == 512
    assert human_count(doc["mult_adds"]) == EXPECTED_MULT_ADDS[name]


def test_count_cli_table_batch_and_errors(cli, tmp_path):
    proc = cli("count", str(paper_dir() / "cnn-10k.toml"), "--batch", "1")
    assert proc.returncode == 0, proc.stderr
    # Mult-adds are linear in the batch: 406,902 per image * 512 = 208,333,824, the paper's 208.33M.
    assert "9,192" in proc.stdout and "406,902" in proc.stdout
    from conftest import assert_one_line_error

    assert_one_line_error(cli("count", "cnn-7k"), 2, "paper config")
    assert_one_line_error(cli("count", "cnn-10k", "--batch", "0"), 2, "--batch")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[spec]\nfamily = 'fcn'\nhidden = []\n")
    assert_one_line_error(cli("count", str(bad)), 2, "hidden layers")
