"""Cost bounds (budgetnas/cost.py): analytic mult-adds and memory, the default bounds, and
rejection before a candidate is built, in a real search on real (tiny) data."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_core import INPUT_SHAPES, _fits, cnn_specs, fcn_specs
from test_families import _fits as _mbconv_fits, mbconv_specs
from test_search import small_npz  # noqa: F401  (the 8x8 real-image slice, a fixture)
from torch import nn

from budgetnas import cost
from budgetnas.config import RunConfig, load_config, save_config
from budgetnas.counting import count_params
from budgetnas.model import build_model
from budgetnas.search import SearchConfig, run_search
from budgetnas.families.mbconv import MBConvSpec
from budgetnas.spec import CNNSpec, ConvBlock

REPO = Path(__file__).resolve().parents[1]
FMNIST = (1, 28, 28)
# The two candidates issue 13 reports from the default 100K search (91,250 params, 18.3G mult-adds,
# 12.5 GB of RAM; and 39.3G mult-adds, 130 s for one epoch).
GIANT_LAYER = CNNSpec(conv=(ConvBlock(4562, 3, pool=2),), fc=(), head="gap")
GIANT_LAYER_BN = CNNSpec(conv=(ConvBlock(4100, 3, pool=2, batch_norm=True),), fc=(), head="gap")  # 90,210 params
UNPOOLED = CNNSpec(conv=(ConvBlock(170, 5, pool=None, batch_norm=True), ConvBlock(22, 5, pool=None, batch_norm=True)),
                   fc=(), head="gap")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=st.one_of(cnn_specs, fcn_specs), shape=st.sampled_from(INPUT_SHAPES))
def test_memory_estimate_covers_every_activation_the_model_writes(spec, shape):
    """The estimate is at least the fp32 size of every layer output of a real forward pass."""
    if not _fits(spec, shape):
        return
    model = build_model(spec, shape, 10)
    written = []
    computing = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU, nn.LeakyReLU,
                 nn.GELU, nn.SiLU, nn.ELU, nn.Tanh)  # not the views (flatten) nor GAP's 1x1 maps
    hooks = [m.register_forward_hook(lambda m, i, out: written.append(out.numel()))
             for m in model.modules() if isinstance(m, computing)]
    model(torch.zeros(4, *shape))
    for hook in hooks:
        hook.remove()
    estimate = cost.training_memory(spec, shape, batch=4)
    assert estimate >= 4 * sum(written)
    assert cost.training_memory(spec, shape, batch=8) >= 2 * estimate - 8  # linear in the batch (int rounding)


def _autograd_saved_bytes(model: nn.Module, shape, batch: int) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass (weights excluded), measured
    with ``saved_tensors_hooks`` on a real training-mode forward pass."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.zeros(batch, *shape)).sum()
    return sum(kept.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=st.one_of(cnn_specs, fcn_specs, mbconv_specs), shape=st.sampled_from(INPUT_SHAPES))
def test_one_activation_estimate_for_every_family_bounds_what_autograd_keeps(spec, shape):
    """Every family's ``activations`` (the one estimate behind the memory bound and the refusal of
    models that cannot fit) is at least what autograd really keeps, and not wildly more."""
    if not (_fits(spec, shape) if not isinstance(spec, MBConvSpec) else _mbconv_fits(spec, shape)):
        return
    batch = 2
    model = build_model(spec, shape, 10)
    kept = _autograd_saved_bytes(model, shape, batch)
    saved, largest = cost.activation_estimate(spec, shape)
    estimate = 4 * batch * saved
    # Batch norm also keeps four per-channel fp32 vectors (running mean and variance, the batch's mean and
    # inverse std), the same at any batch: too small to estimate, counted exactly here.
    statistics = 4 * 4 * sum(m.num_features for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert estimate + statistics >= kept, (estimate, statistics, kept)
    assert estimate <= 2.5 * kept + 4 * batch * 2 * math.prod(shape) + 4096, (estimate, kept)
    assert cost.training_memory(spec, shape, batch) >= estimate
    weights = 4 * count_params(spec, shape, 10)
    assert cost.model_bytes(spec, shape, 10) == weights
    assert cost.model_bytes(spec, shape, 10, batch=batch, training=True) == 4 * weights + cost.training_memory(
        spec, shape, batch)


def test_default_compute_bound_is_the_familys():
    """cnn and fcn: factor 2 (derived above); mbconv: factor 4; a family with no factor: no default bound."""
    from budgetnas.families import get_family

    assert cost.CostBounds.resolve("auto", None, 100_000, FMNIST, family="fcn").max_mult_adds == \
        cost.default_max_mult_adds(100_000, FMNIST)
    mbconv = cost.CostBounds.resolve("auto", None, 100_000, FMNIST, family="mbconv").max_mult_adds
    assert mbconv == 2 * cost.default_max_mult_adds(100_000, FMNIST) == get_family("mbconv").compute_factor * \
        100_000 * 7 * 7 * 512
    assert cost.CostBounds.resolve(5 * 10**9, None, 100_000, FMNIST, family="mbconv").max_mult_adds == 5 * 10**9


def test_default_compute_bound_keeps_every_known_good_cnn_and_rejects_the_issues_candidates():
    configs = sorted((REPO / "studies").glob("*/cnn-*.toml"))
    assert len(configs) >= 12
    for path in configs:
        config = load_config(path)
        budget = int(path.stem.split("-")[1].rstrip("k")) * 1000
        assert count_params(config.spec, FMNIST, 10) <= budget
        assert cost.mult_adds(config.spec, FMNIST, 10) <= cost.default_max_mult_adds(budget, FMNIST), path.name
    bound = cost.default_max_mult_adds(100_000, FMNIST)
    assert bound == 2 * 100_000 * 7 * 7 * 512  # 28 -> 14 -> 7: twice every weight at every 7x7 position
    for spec in (GIANT_LAYER, UNPOOLED):
        assert count_params(spec, FMNIST, 10) <= 100_000
        assert cost.mult_adds(spec, FMNIST, 10) > 3 * bound
    # The estimate puts the giant layer far above the memory the issue saw it take at batch 512 in bf16.
    assert cost.training_memory(GIANT_LAYER, FMNIST, 512) > 12.5 * 2**30
    assert cost.default_max_mult_adds(3_000, (1, 8, 8)) == 2 * 3_000 * 64 * 512  # small maps are never pooled


def test_caps_resolve_auto_none_and_numbers():
    bounds = cost.CostBounds.resolve("auto", None, 100_000, FMNIST)
    assert bounds.max_mult_adds == cost.default_max_mult_adds(100_000, FMNIST) and bounds.max_memory is None
    assert bounds.violations(bounds.max_mult_adds + 5, 123) == {cost.COMPUTE_CONSTRAINT: 5}
    assert cost.CostBounds.resolve(7, 9, 1, FMNIST).violations(5, 10) == {cost.COMPUTE_CONSTRAINT: -2,
                                                                          cost.MEMORY_CONSTRAINT: 1}
    memory = cost.CostBounds.resolve(None, "auto", 1, FMNIST).max_memory
    assert memory is not None and 0 < memory <= cost.available_memory() * cost.MEMORY_FRACTION + 1


@pytest.fixture
def no_building(monkeypatch):
    """Any attempt to build a model fails the test: rejection must happen from the spec alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")
    monkeypatch.setattr("budgetnas.model.build_model", refuse)
    monkeypatch.setattr("budgetnas.trainer.build_model", refuse)


def test_the_default_compute_bound_rejects_an_unaffordable_candidate_before_building_it(tiny_npz, tmp_path,
                                                                                       no_building):
    giant = GIANT_LAYER_BN  # the space batch-normalises every conv block (cnn space version 3)
    seed = save_config(RunConfig(name="giant", spec=giant), tmp_path / "giant.toml")
    config = SearchConfig(budget=100_000, dataset=f"npz:{tiny_npz}", trials=1, epochs=1, device="cpu",
                          storage=f"sqlite:///{tmp_path}/s.db", study="t", enqueue=(str(seed),))
    summary = run_search(config)
    assert summary.trials == summary.rejected == 1 and summary.rejection_rate == 1.0
    trial = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db").trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["enqueued"] == str(seed)
    assert "mult-adds > cap 5.02G" in trial.user_attrs["rejected"] and "conv 4100k3p2bn" in trial.user_attrs["rejected"]
    assert trial.constraints[cost.COMPUTE_CONSTRAINT] == cost.mult_adds(giant, FMNIST, 10) - 5_017_600_000 > 0
    assert trial.user_attrs["memory_estimate"] == cost.training_memory(giant, FMNIST, 512)


def test_a_memory_cap_rejects_candidates_before_building_them(tiny_npz, tmp_path, no_building):
    config = SearchConfig(budget=20_000, dataset=f"npz:{tiny_npz}", trials=4, epochs=1, device="cpu",
                          storage=f"sqlite:///{tmp_path}/s.db", study="t", max_memory=999, max_mult_adds=None,
                          sampler="random")
    lines: list[str] = []
    summary = run_search(config, progress=lines.append)
    assert summary.rejected == summary.trials == 4
    assert any("cost bounds: " in line and "999 B of training activations" in line for line in lines)
    for trial in optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db").trials:
        assert "of training activations (estimated, batch 512) > cap 999 B" in trial.user_attrs["rejected"]
        assert trial.constraints[cost.MEMORY_CONSTRAINT] == trial.user_attrs["memory_estimate"] - 999 > 0


def test_a_cap_can_be_added_to_an_existing_study(cli, small_npz, tmp_path):
    """A user who forgot a cap adds it on resume: the study continues, the new cap applies and is recorded."""
    common = ("search", "--budget", "3k", "--dataset", f"npz:{small_npz}", "--epochs", "1", "--device", "cpu",
              "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "t")
    first = cli(*common, "--trials", "1", "--max-mult-adds", "none", "--max-memory", "none")
    assert first.returncode == 0, first.stderr
    assert "no compute bound, no memory bound" in first.stderr
    second = cli(*common, "--trials", "3", "--max-mult-adds", "2M", "--max-memory", "1G", "--sampler", "tpe")
    assert second.returncode == 0, second.stderr
    assert "2.00M mult-adds per batch of 512, 1.0 GB of training activations" in second.stderr
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db")
    assert len(study.trials) == 3
    assert study.user_attrs["budgetnas"]["max_mult_adds"] == 2_000_000
    assert study.user_attrs["budgetnas"]["max_memory"] == 1_000_000_000
    assert cost.COMPUTE_CONSTRAINT not in study.trials[0].constraints  # finished trials keep what they meant
    for trial in study.trials[1:]:
        over = trial.constraints[cost.COMPUTE_CONSTRAINT]
        assert ("rejected" in trial.user_attrs) == (over > 0)
    other = cli(*common[:2], "4k", *common[3:], "--trials", "4")  # a real setting still refuses resume
    assert other.returncode == 2 and "budget: study has 3000, asked for 4000" in other.stderr



def test_epoch_time_fits_a_line_and_lifts_it_over_every_measured_epoch():
    line = cost.EpochTime.fit([(1e5, 2.0 + 1e-5 * 1e5), (5e5, 2.0 + 5.0), (1e6, 2.0 + 10.0)])
    assert line.a == pytest.approx(2.0) and line.b == pytest.approx(1e-5) and line.k == pytest.approx(1.0)
    assert line(2e6) == pytest.approx(22.0) and line.largest(22.0) == pytest.approx(2e6)
    assert line.largest(1.0) == 0.0  # not even an empty model trains an epoch in less than its fixed cost
    # Scattered epochs: no measured one lies above the fit, and the highest lies on it.
    points = [(0.4e6, 7.3), (1.2e6, 20.4), (0.6e6, 8.0), (0.35e6, 3.8), (1.8e6, 18.8), (1.9e6, 25.4), (0.04e6, 2.0)]
    scattered = cost.EpochTime.fit(points)
    assert scattered.k > 1 and scattered.b > 0 and scattered.a >= 0
    assert all(scattered(x) >= y - 1e-9 for x, y in points)
    assert any(scattered(x) == pytest.approx(y) for x, y in points)
    # One size, or no trend: as slow as the slowest, whatever the size; nothing measured: no fit.
    flat = cost.EpochTime.fit([(1e6, 3.0), (1e6, 4.0)])
    assert flat(1.0) == flat(1e9) == 4.0 and flat.largest(4.0) == math.inf
    assert cost.EpochTime.fit([]) is None and cost.EpochTime.fit([(0.0, 1.0)]) is None
