"""The family registry, the mbconv family and plug-in families: exact counts, spaces, budgets, the CLI.

The counting property test lives here, once for every built-in family: hundreds of random specs,
each counted analytically and checked against the built model and torchinfo (the trainable
parameters and the mult-adds).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from budgetnas.config import RunConfig, load_config, save_config
from budgetnas.counting import count_mult_adds, count_params, torchinfo_mult_adds, torchinfo_trainable
from budgetnas.errors import UsageError
from budgetnas.fmt import percent
from budgetnas.families import (available_families, family_key, family_of, get_family, register_family,
                                spec_from_dict, spec_to_dict)
from budgetnas.families.mbconv import BLOCKS, MBConvSpec, Stage
from budgetnas.model import build_model, trainable_params
from budgetnas.spec import ACTIVATIONS, INITS, MAX_WIDTH, CNNSpec, ConvBlock, FCNSpec
from conftest import REPO, assert_one_line_error
from test_core import INPUT_SHAPES, cnn_specs, fcn_specs
from test_core import _fits as _core_fits

optuna.logging.set_verbosity(optuna.logging.WARNING)
FMNIST = (1, 28, 28)
EXAMPLES = REPO / "examples"
PLUGIN = "my_family:WideFCN"


def stages(max_stages: int = 4):
    def stage(block: str):
        return st.builds(Stage, block=st.just(block), out_channels=st.integers(1, 24), depth=st.integers(1, 3),
                         stride=st.sampled_from([1, 2]), kernel_size=st.sampled_from([1, 3, 5]),
                         expansion=st.integers(1, 6) if block == "inverted" else st.just(1), se=st.booleans())
    return st.lists(st.sampled_from(BLOCKS).flatmap(stage), min_size=1, max_size=max_stages).map(tuple)


mbconv_specs = st.builds(MBConvSpec, stem=st.integers(1, 24), stages=stages(), stem_stride=st.sampled_from([1, 2]),
                         head=st.sampled_from([0, 0, 5, 32]), dropout=st.sampled_from([0.0, 0.2]),
                         activation=st.sampled_from(ACTIVATIONS), init=st.sampled_from(INITS))


def _fits(spec, shape) -> bool:
    try:
        count_params(spec, shape, 10)
        return True
    except UsageError:
        return False


def fits(spec, shape) -> bool:
    """Whether ``spec``'s maps stay at least 1x1 on ``shape``: for cnn and fcn decided by torch's own
    layers (``test_core._fits``, independent of the counter), for mbconv by its counter's refusal."""
    return _core_fits(spec, shape) if not isinstance(spec, MBConvSpec) else _fits(spec, shape)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=st.one_of(cnn_specs, fcn_specs, mbconv_specs), shape=st.sampled_from(INPUT_SHAPES),
       classes=st.integers(2, 12))
def test_every_family_counts_exactly_what_it_builds_and_torchinfo_sees(spec, shape, classes):
    """The one property test of counting, for every built-in family: the analytic parameter count equals
    the built model's and torchinfo's, the analytic mult-adds equal torchinfo's, and the model runs."""
    if not fits(spec, shape):
        # A spec that shrinks a map below 1x1 is refused by the counter and the builder, never built.
        with pytest.raises(UsageError):
            count_params(spec, shape, classes)
        with pytest.raises(UsageError):
            build_model(spec, shape, classes)
        return
    expected = count_params(spec, shape, classes)
    model = build_model(spec, shape, classes)
    assert trainable_params(model) == expected
    assert torchinfo_trainable(spec, shape, classes) == expected
    assert count_mult_adds(spec, shape, classes, batch=3) == torchinfo_mult_adds(spec, shape, classes, batch=3)
    model.eval()
    assert model(torch.zeros(2, *shape)).shape == (2, classes)


@settings(max_examples=100, deadline=None)
@given(spec=mbconv_specs)
def test_mbconv_spec_round_trips_through_dict_and_toml(spec, tmp_path_factory):
    assert spec_from_dict(spec_to_dict(spec)) == spec
    path = save_config(RunConfig(name="m", spec=spec), tmp_path_factory.mktemp("toml") / "m.toml")
    assert load_config(path).spec == spec


def test_a_huge_width_is_refused_at_validation_and_counting_never_builds():
    for make in (lambda: ConvBlock(10**9), lambda: FCNSpec(hidden=(10**9,)),
                 lambda: CNNSpec((ConvBlock(4),), fc=(10**9,)),
                 lambda: MBConvSpec(stem=10**9, stages=(Stage("plain", 4),)),
                 lambda: MBConvSpec(stem=4, stages=(Stage("dwsep", 10**9),))):
        with pytest.raises(UsageError, match=re.escape(f"<= {MAX_WIDTH:,}, got 1,000,000,000")):
            make()
    # The largest valid widths are counted analytically: no model, no allocation, no time.
    start = time.perf_counter()
    wide = FCNSpec(hidden=(MAX_WIDTH, MAX_WIDTH))
    assert count_mult_adds(wide, FMNIST, 10, batch=512) == 512 * count_params(wide, FMNIST, 10)
    huge_cnn = CNNSpec(conv=(ConvBlock(MAX_WIDTH, pool=None), ConvBlock(MAX_WIDTH)), fc=(MAX_WIDTH,))
    assert count_mult_adds(huge_cnn, FMNIST, 10) > 28 * 28 * MAX_WIDTH**2 * 9
    big = MBConvSpec(stem=MAX_WIDTH, stages=(Stage("inverted", MAX_WIDTH, expansion=6, se=True),), head=MAX_WIDTH)
    assert count_mult_adds(big, FMNIST, 10) > count_params(big, FMNIST, 10) > MAX_WIDTH**2
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("bad, message", [
    ({"family": "mbconv", "stem": 8, "stages": []}, "1..6 stages"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "fancy", "out_channels": 4}]}, "unknown stage block"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4, "expansion": 3}]},
     "only inverted blocks"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4, "stride": 3}]}, "stride"),
    # 2.0 == 2 in Python, but a float stride would reach torch's conv2d (a TOML writer may emit 2.0)
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4, "stride": 2.0}]},
     "stage stride must be 1 or 2, got 2.0"),
    ({"family": "mbconv", "stem": 8, "stem_stride": 2.0, "stages": [{"block": "plain", "out_channels": 4}]},
     "stem_stride must be 1 or 2, got 2.0"),
    ({"family": "mbconv", "stem": 8, "stages": 3}, "stages must be a list, got 3"),
    ({"family": "mbconv", "stem": 8, "stages": [{"out_channels": 4}]}, "mbconv stage lacks key(s) block"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4, "kernel_size": 4}]}, "odd"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4, "colour": 1}]}, "colour"),
    ({"family": "mbconv", "stem": 8, "stages": [{"block": "plain", "out_channels": 4}], "size": 3}, "size"),
    ({"family": "mbconv", "stages": [{"block": "plain", "out_channels": 4}]}, "stem"),
    ({"family": "rnn"}, "unknown family 'rnn'"),
    ({"family": "nosuchmodule:Fam"}, "cannot import module 'nosuchmodule'"),
    ({"stem": 3}, "needs a family"),
])
def test_bad_mbconv_specs_name_the_problem(bad, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        spec_from_dict(bad)


def test_a_stride_on_a_one_pixel_map_is_refused():
    spec = MBConvSpec(stem=4, stem_stride=2, stages=(Stage("plain", 4, stride=2), Stage("plain", 4, stride=2),
                                                     Stage("plain", 4, stride=2)))
    assert count_params(spec, FMNIST, 10) > 0  # 28 -> 14 -> 7 -> 4 -> 2
    with pytest.raises(UsageError, match="stage 3 strides a 1x1 map"):
        count_params(spec, (1, 8, 8), 10)  # 8 -> 4 -> 2 -> 1 -> ?


def test_residuals_where_shapes_allow_and_a_worked_count():
    from budgetnas.families.mbconv import blocks

    spec = MBConvSpec(stem=8, stages=(Stage("inverted", 8, depth=2, expansion=2), Stage("dwsep", 16, stride=2),
                                      Stage("plain", 16, se=True)))
    assert [b.residual for b in blocks(spec, FMNIST)] == [True, True, False, True]
    # By hand: stem 1*8*9 + 16; inverted x2: (8*16 + 32 + 16*9 + 32 + 16*8 + 16) each; dwsep: 8*9 + 16 + 8*16 + 32;
    # plain: 16*16*9 + 32 + SE(16 -> 4 -> 16: 16*4 + 4 + 4*16 + 16); classifier 16*10 + 10.
    assert count_params(spec, FMNIST, 10) == 88 + 2 * 480 + 248 + 2336 + 148 + 170
    assert spec.describe() == "stem 8 | inv2:8k3x2, dw:16k3s2, c:16k3+se | relu"


# --------------------------------------------------------------------------- the mbconv search space

def _sampled(parameterisation: str, budget: int, shape=FMNIST, n: int = 120, seed: int = 1):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    family = get_family("mbconv")
    for _ in range(n):
        trial = study.ask()
        spec = family.sample(trial, budget, shape, 10, parameterisation)
        study.tell(trial, 0.0)
        yield trial, spec


@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_mbconv_parameters_keep_one_distribution(parameterisation):
    seen: dict[str, object] = {}
    for budget in (5_000, 200_000):
        for trial, _ in _sampled(parameterisation, budget, n=60, seed=budget):
            for name, distribution in trial.distributions.items():
                assert seen.setdefault(name, distribution) == distribution, name
    assert {"stage4_block", "stage4_expansion", "head_conv"} <= set(seen)


@pytest.mark.parametrize("budget", [5_000, 50_000, 200_000])
def test_mbconv_fit_is_within_budget_and_replays_from_its_parameters(budget):
    fills, smallest = [], get_family("mbconv").smallest_count("fit", FMNIST, 10)
    for trial, spec in _sampled("fit", budget, seed=budget):
        params = count_params(spec, FMNIST, 10)
        assert params >= smallest
        assert get_family("mbconv").sample(FixedTrial(trial.params), budget, FMNIST, 10, "fit") == spec
        if max(_widths(spec)) == 1:
            continue  # the narrowest net of its shape may exceed its fill (the objective rejects it over budget)
        assert params <= budget
        fills.append(params / (trial.params["fill"] * budget))
    assert len(fills) > 50 and max(fills) <= 1.0
    if budget >= 50_000:
        assert sorted(fills)[len(fills) // 2] > 0.9  # the scale is the largest that fits


def _widths(spec: MBConvSpec) -> list[int]:
    return [spec.stem, *(s.out_channels for s in spec.stages)] + ([spec.head] if spec.head else [])


@pytest.mark.parametrize("shape", INPUT_SHAPES)
@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_mbconv_small_inputs_drop_strides_instead_of_failing(shape, parameterisation):
    dropped = 0
    for trial, spec in _sampled(parameterisation, 50_000, shape, n=80):
        count_params(spec, shape, 10)  # raises if a stride were kept on a 1x1 map
        asked = [trial.params["stem_stride"]] + [trial.params[f"stage{i}_stride"]
                                                 for i in range(1, len(spec.stages) + 1)]
        kept = [spec.stem_stride] + [s.stride for s in spec.stages]
        dropped += sum(a != k for a, k in zip(asked, kept))
        assert all(k <= a for a, k in zip(asked, kept))
    assert (dropped > 0) == (shape == (1, 8, 8))  # 8 -> 4 -> 2 -> 1: a fifth stride has nowhere to go


@pytest.mark.parametrize("parameterisation, expected", [("fit", 42), ("direct", 82)])
def test_smallest_mbconv_of_the_space(parameterisation, expected):
    family = get_family("mbconv")
    assert family.smallest_count(parameterisation, FMNIST, 10) == expected
    for _, spec in _sampled(parameterisation, 10**9, n=60):
        assert count_params(spec, FMNIST, 10) >= expected


@pytest.mark.parametrize("parameterisation", ["fit", "direct"])
def test_mbconv_params_of_inverts_the_space(parameterisation):
    family, checked = get_family("mbconv"), 0
    budget = 200_000
    for _, spec in _sampled(parameterisation, budget, n=60, seed=7):
        params = count_params(spec, FMNIST, 10)
        if params > budget or (parameterisation == "fit" and (params < budget / 2 or max(_widths(spec)) == 1)):
            continue
        values = family.params_of(spec, None, budget, FMNIST, 10, parameterisation)
        assert family.sample(FixedTrial(values), budget, FMNIST, 10, parameterisation) == spec
        checked += 1
    assert checked > 20
    with pytest.raises(UsageError, match="kernels"):
        family.params_of(MBConvSpec(stem=4, stages=(Stage("plain", 4, kernel_size=7),)), None, budget, FMNIST, 10,
                         "direct")


def test_mbconv_depthwise_convs_run_in_fp32_under_cpu_autocast():
    """oneDNN's bf16 depthwise convs train several times slower than fp32 on CPU, so they opt out of
    autocast (the pointwise convs keep bf16); same weights, same outputs as without autocast."""
    from budgetnas.families.mbconv_model import DepthwiseConv2d

    spec = MBConvSpec(stem=8, stages=(Stage("inverted", 16, stride=2, expansion=4, kernel_size=5),))
    model = build_model(spec, FMNIST, 10)
    (depthwise,) = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 32
    x = torch.randn(4, 32, 14, 14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = depthwise(x.bfloat16())
        pointwise = model.blocks[1].body[0](torch.randn(4, 8, 14, 14))
    assert inside.dtype == torch.float32 and pointwise.dtype == torch.bfloat16
    torch.testing.assert_close(inside, depthwise(x.bfloat16().float()))


# --------------------------------------------------------------------------- registry and plug-ins

def test_registry_lists_and_resolves_families(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert available_families()[:3] == ["cnn", "fcn", "mbconv"]
    assert family_of(CNNSpec(conv=(ConvBlock(4),))).name == "cnn" and family_of(FCNSpec(hidden=(3,))).name == "fcn"
    plugin = get_family(PLUGIN)
    assert plugin.name == "wide-fcn" and get_family(PLUGIN) is plugin
    spec = plugin.sample(FixedTrial({"depth": 2, "dropout": 0.1, "fill": 1.0}), 50_000, FMNIST, 10)
    assert family_key(spec) == PLUGIN and spec_to_dict(spec)["family"] == PLUGIN  # stored with its module path
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert count_params(spec, FMNIST, 10) == trainable_params(build_model(spec, FMNIST, 10)) <= 50_000
    assert count_mult_adds(spec, FMNIST, 10, batch=4) == torchinfo_mult_adds(spec, FMNIST, 10, batch=4)


@pytest.mark.parametrize("ref, message", [
    ("my_family", "package.module:Name"),
    ("my_family:", "package.module:Name"),
    ("no_such_module_xyz:Fam", "cannot import module 'no_such_module_xyz'"),
    ("my_family:Nope", "has no attribute 'Nope'"),
    ("my_family:WideFCNSpec", "is not a budgetnas family"),
])
def test_bad_family_references_are_usage_errors(ref, message, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(UsageError, match=re.escape(message)):
        get_family(ref)


def test_register_family_from_python():
    from budgetnas.families.classic import FCNFamily

    class Renamed(FCNFamily):
        name = "fcn-copy"
        spec_type = type("CopySpec", (FCNSpec,), {})

    family = register_family(Renamed)
    assert get_family("fcn-copy") is family and "fcn-copy" in available_families()


@pytest.mark.parametrize("family", ["cnn", "fcn", "mbconv", PLUGIN])
def test_every_family_gets_its_dashboard_note_and_attributes(family, tmp_path, monkeypatch):
    """A trained trial's note lists the family's own layers (the dashboard once knew cnn and fcn only and
    warned "dashboard note not saved" on every mbconv trial)."""
    import warnings

    from optuna_dashboard import get_note

    from budgetnas.trainer import PAPER_RECIPE
    from budgetnas.trialnotes import annotate

    monkeypatch.syspath_prepend(str(EXAMPLES))
    fam = get_family(family)
    spec = fam.sample(FixedTrial({"depth": 2, "dropout": 0.1, "fill": 1.0}), 50_000, FMNIST, 10) if family == PLUGIN \
        else MBConvSpec(stem=8, stem_stride=2, stages=(Stage("inverted", 16, depth=2, stride=2, expansion=4, se=True),
                                                       Stage("dwsep", 24, kernel_size=5)), head=32, dropout=0.1) \
        if family == "mbconv" else fam.minimal_spec("fit", FMNIST)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", directions=["maximize", "minimize"])
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # annotate warns instead of failing: make that a failure here
        annotate(trial, None, spec, PAPER_RECIPE, 1000, 2000, 10_000, [0.5, 0.75], [1.0, 0.5], 2.0)
    stored = study.trials[0]
    assert stored.user_attrs["architecture"] == spec.describe()
    assert set(fam.readable_attrs(spec)) <= set(stored.user_attrs)
    body = get_note(trial)
    rows = fam.layers(spec)
    cells = [(name, text.replace("|", "\\|")) for name, text in rows]  # Markdown escapes a | inside a cell
    assert cells and all(f"| {name} | {text} |" in body for name, text in cells), body
    assert "1,000 of 2,000 (50.0% of the budget)" in body and "75.00% after 2 epochs" in body


# --------------------------------------------------------------------------- budget checks, every family

@pytest.mark.parametrize("family", ["cnn", "fcn", "mbconv", PLUGIN])
def test_budget_below_the_smallest_member_is_refused(family, cli, tiny_npz):
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLES)])}
    proc = cli("search", "--budget", "20", "--family", family, "--dataset", f"npz:{tiny_npz}", "--trials", "1",
               env=env)
    assert_one_line_error(proc, 2, "is smaller than the smallest")


@pytest.mark.parametrize("family", ["cnn", "fcn", "mbconv", PLUGIN])
def test_over_budget_candidates_are_rejected_before_training(family, tiny_npz, monkeypatch):
    """The objective's exact check (direct space: widths sampled as such) rejects; it never trains them."""
    from budgetnas.data import load_dataset
    from budgetnas.objective import Objective
    from budgetnas.search import SearchConfig

    monkeypatch.syspath_prepend(str(EXAMPLES))
    data = load_dataset(f"npz:{tiny_npz}", subset=200)
    budget = 2 * get_family(family).smallest_count("direct", data.input_shape, data.num_classes)
    config = SearchConfig(budget=budget, family=family, dataset=f"npz:{tiny_npz}", parameterisation="direct",
                          trials=1, epochs=1, device="cpu")
    objective = Objective(config.settings(), data, config.training_recipe())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rejected = 0
    for _ in range(15):
        trial = study.ask()
        try:
            objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            attrs = study.trials[-1].user_attrs
            assert attrs["params"] > budget and f"> budget {budget:,}" in attrs["rejected"]
            assert "spec" not in attrs and "train_seconds" not in attrs  # never trained
            rejected += 1
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            assert study.trials[-1].user_attrs["params"] <= budget
        if rejected == 3:
            break
    assert rejected == 3


# --------------------------------------------------------------------------- every command, real subprocesses

def _env(*extra: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLES), *map(str, extra)])}


@pytest.mark.slow
def test_mbconv_through_search_replay_report_count_and_train(cli, tiny_npz, tmp_path):
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    search = cli("search", "--budget", "8k", "--family", "mbconv", "--dataset", f"npz:{tiny_npz}", "--trials", "2",
                 "--epochs", "1", "--storage", url, "--device", "cpu", "--precision", "fp32", "--json", timeout=600)
    assert search.returncode == 0, search.stderr
    assert "not saved" not in search.stderr  # the dashboard note of every trained trial
    found = json.loads(search.stdout)
    assert found["study"] == "mbconv-8k-fmnist-tiny" and found["front"]
    replay = cli("replay", "--storage", url, "--device", "cpu", "--precision", "fp32", "--out", "best", "--json",
                 timeout=600)
    assert replay.returncode == 0, replay.stderr
    doc = json.loads(replay.stdout)
    assert doc["params"] <= 8000 and doc["spec"]["family"] == "mbconv" and 0 <= doc["test_accuracy"] <= 1
    assert doc["val_accuracy"] == {r["trial"]: r for r in found["front"]}[doc["trial"]]["val_accuracy"]
    assert {"export", "featuremaps", "config"} <= set(doc["artifacts"])
    report = cli("report", "--storage", url, "--out", "r.html")
    assert report.returncode == 0, report.stderr
    assert percent(doc['test_accuracy']) in (tmp_path / "r.html").read_text(encoding="utf-8")
    count = cli("count", str(tmp_path / "best" / "spec.toml"), "--batch", "1", "--json")
    assert count.returncode == 0, count.stderr
    counted = json.loads(count.stdout)
    assert counted["params"] == doc["params"] and counted["mult_adds"] * 512 == doc["mult_adds"]
    train = cli("train", str(tmp_path / "best" / "spec.toml"), "--epochs", "1", "--device", "cpu", "--json",
                "--out", "again")
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["params"] == doc["params"]
    assert load_config(tmp_path / "again" / "config.toml").spec == load_config(tmp_path / "best" / "spec.toml").spec


@pytest.mark.slow
def test_plugin_family_through_search_replay_count_and_report(cli, tiny_npz, tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    search = cli("search", "--budget", "20k", "--family", PLUGIN, "--dataset", f"npz:{tiny_npz}", "--trials", "2",
                 "--epochs", "1", "--storage", url, "--device", "cpu", "--json", env=_env(), timeout=600)
    assert search.returncode == 0, search.stderr
    assert "not saved" not in search.stderr  # the dashboard note of every trained trial
    study = json.loads(search.stdout)["study"]
    assert study == f"{PLUGIN}-20k-fmnist-tiny" and "wide " in json.loads(search.stdout)["front"][0]["spec"]
    # The printed replay command names where the module came from, so that it runs as printed from any folder
    # and shell, without the PYTHONPATH this search was started with.
    printed = json.loads(search.stdout)["commands"]["replay"]
    assert printed.startswith(f"PYTHONPATH={EXAMPLES}{os.pathsep}"), printed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pasted = subprocess.run(["bash", "-c", printed + " --out pasted --epochs 1 --json"], cwd=elsewhere, env=bare,
                            capture_output=True, text=True, timeout=600)
    assert pasted.returncode == 0 and json.loads(pasted.stdout)["spec"]["family"] == PLUGIN, pasted.stderr[-2000:]
    # The study names the module: replay and report rebuild the specs from the storage alone.
    replay = cli("replay", "--storage", url, "--device", "cpu", "--out", "best", "--json", env=_env(), timeout=600)
    assert replay.returncode == 0, replay.stderr
    doc = json.loads(replay.stdout)
    assert doc["spec"]["family"] == PLUGIN and doc["params"] <= 20_000 and "export" in doc["artifacts"]
    count = cli("count", str(tmp_path / "best" / "spec.toml"), "--json", env=_env())
    assert count.returncode == 0, count.stderr
    assert json.loads(count.stdout)["params"] == doc["params"]
    assert cli("report", "--storage", url, "--out", "r.html", env=_env()).returncode == 0
    # Without the module on the path, the stored reference says what is missing, in one line.
    missing = cli("count", str(tmp_path / "best" / "spec.toml"), env={"PYTHONPATH": str(REPO)})
    assert_one_line_error(missing, 2, "cannot import module 'my_family'")


MINIMAL_FAMILY = """
import math
from dataclasses import dataclass
from torch import nn
from budgetnas.families import Family


@dataclass(frozen=True)
class TinySpec:  # no describe(), no family attribute: the README lists neither as required
    hidden: tuple = (32,)


class Tiny(Family):
    name = "tiny"
    spec_type = TinySpec

    def count_params(self, spec, input_shape, num_classes):
        fan, total = math.prod(input_shape), 0
        for h in spec.hidden:
            total, fan = total + fan * h + h, h
        return total + fan * num_classes + num_classes

    def count_mult_adds(self, spec, input_shape, num_classes, batch=1):
        return batch * self.count_params(spec, input_shape, num_classes)

    def build(self, spec, input_shape, num_classes):
        layers, fan = [nn.Flatten()], math.prod(input_shape)
        for h in spec.hidden:
            layers, fan = layers + [nn.Linear(fan, h), nn.ReLU()], h
        return nn.Sequential(*layers, nn.Linear(fan, num_classes))

    def sample(self, trial, budget, input_shape, num_classes, parameterisation="fit"):
        return TinySpec((trial.suggest_int("w", 4, 32, log=True),))

    def minimal_spec(self, parameterisation, input_shape):
        return TinySpec((4,))
"""


@pytest.mark.slow
def test_a_family_with_only_the_required_members_works_through_search_replay_and_transfer(cli, tiny_npz, tmp_path):
    """Written as the README says, with none of the optional members: described by Family.describe's default
    (no AttributeError on a spec without describe), and --transfer-from one of its configs is skipped with a
    note (it has no params_of) instead of an internal error."""
    (tmp_path / "minimalfam.py").write_text(MINIMAL_FAMILY, encoding="utf-8")
    env, url = _env(tmp_path), f"sqlite:///{tmp_path / 'm.db'}"
    args = ("search", "--budget", "20k", "--family", "minimalfam:Tiny", "--dataset", f"npz:{tiny_npz}",
            "--epochs", "1", "--storage", url)
    search = cli(*args, "--trials", "2", env=env, timeout=600)
    assert search.returncode == 0 and "TinySpec(hidden=" in search.stderr, search.stderr[-2000:]
    replay = cli("replay", "--storage", url, "--out", "best", env=env, timeout=600)
    assert replay.returncode == 0, replay.stderr[-2000:]
    again = cli(*args, "--trials", "3", "--transfer-from", str(tmp_path / "best" / "spec.toml"), env=env,
                timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipped: the tiny family cannot start a search from a given model" in again.stderr, again.stderr[-2000:]


@pytest.mark.parametrize("ref, message", [
    ("nosuchmodule_xyz:Fam", "cannot import module 'nosuchmodule_xyz'"),
    ("my_family:Nope", "has no attribute 'Nope'"),
    ("my_family:WideFCNSpec", "is not a budgetnas family"),
    ("rnn", "unknown family 'rnn'"),
])
def test_cli_bad_family_reference_is_one_line(cli, ref, message):
    proc = cli("search", "--budget", "10k", "--family", ref, "--trials", "1", env=_env())
    assert_one_line_error(proc, 2, message)


def test_entry_point_families_are_found(cli, tiny_npz, tmp_path):
    """An installed package registers a family under the group ``budgetnas.families``."""
    dist = tmp_path / "site" / "widefamily-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: widefamily\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[budgetnas.families]\nwide = my_family:WideFCN\n")
    env = _env(tmp_path / "site")
    helped = cli("search", "--help", env=env)
    assert helped.returncode == 0 and "mbconv, wide" in " ".join(helped.stdout.split())
    proc = cli("search", "--budget", "20", "--family", "wide", "--dataset", f"npz:{tiny_npz}", env=env)
    assert_one_line_error(proc, 2, "smaller than the smallest wide")  # loaded: its smallest member was counted


def test_cnn_budgets_up_to_200k_are_searchable():
    """The paper stops at 100K; sweep lists and the fit space take 200K (widths keep filling the budget)."""
    from budgetnas.search import SearchConfig
    from budgetnas.sweep import parse_budgets

    assert parse_budgets("10k,20k,50k,100k,200k") == (10_000, 20_000, 50_000, 100_000, 200_000)
    assert SearchConfig(budget=200_000, family="cnn").study_name == "cnn-200k-fashion-mnist"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    fills = []
    for _ in range(80):
        trial = study.ask()
        spec = get_family("cnn").sample(trial, 200_000, FMNIST, 10, "fit")
        study.tell(trial, 0.0)
        params = count_params(spec, FMNIST, 10)
        assert params <= 200_000 or all(b.out_channels == 1 for b in spec.conv)
        fills.append(params / (trial.params["fill"] * 200_000))
    assert sorted(fills)[len(fills) // 2] > 0.9


def test_reports_compare_each_family_with_the_papers_models(monkeypatch):
    from budgetnas.paper import paper_models

    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert {m.family for m in paper_models("mbconv")} == {"cnn"} == {m.family for m in paper_models("cnn")}
    assert {m.family for m in paper_models("fcn")} == {"fcn"}
    assert paper_models(PLUGIN) == ()  # a plug-in names no paper family
    # The sweep's table and figure take the same models (they once matched the family name and showed
    # no paper model beside mbconv).
    from budgetnas.datasets import reference_models
    from budgetnas.sweep import SweepRow, render_markdown

    assert reference_models("fashion-mnist", "mbconv") == paper_models("mbconv")
    assert reference_models("fashion-mnist", PLUGIN) == () and reference_models("digits", "mbconv") == ()
    row = SweepRow(budget=10_000, study="mbconv-10k-fashion-mnist", trial=3, search_trials=9, search_seconds=60.0,
                   replay={"params": 7_546, "val_accuracy": 0.906, "test_accuracy": 0.9035, "train_seconds": 348.2,
                           "mult_adds": 350_000_000})
    paper_10k = next(m for m in paper_models("mbconv") if m.budget == 10_000)
    line = next(x for x in render_markdown("mbconv", "fashion-mnist", [row]).splitlines() if x.startswith("| 10k"))
    assert percent(paper_10k.test_accuracy) in line and f"{(0.9035 - paper_10k.test_accuracy) * 100:+.2f} pt" in line


def test_readme_mbconv_notation_and_toml_are_what_the_code_does():
    import tomllib

    from budgetnas.families.mbconv import MBConvFamily

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    spec = MBConvSpec(stem=16, stem_stride=2, head=128, activation="silu", dropout=0.1,
                      stages=(Stage("inverted", 24, depth=2, stride=2, expansion=6, se=True),
                              Stage("dwsep", 32, kernel_size=5), Stage("plain", 40)))
    assert spec.describe() in readme
    assert f"# {count_params(spec, FMNIST, 10)}, exact" in readme
    assert f"# {count_mult_adds(spec, FMNIST, 10)} at batch 512" in readme
    toml = next(b for b in re.findall(r"^```toml\n(.*?)^```", readme, re.M | re.S) if '"mbconv"' in b)
    from_readme = spec_from_dict(tomllib.loads(toml)["spec"])
    assert from_readme == MBConvSpec(stem=16, stem_stride=2, head=128, activation="silu", dropout=0.1,
                                     stages=spec.stages[:1])
    assert MBConvFamily().describe(from_readme) == "stem 16s2 | inv6:24k3x2s2+se | head 128 | silu dropout 0.1"
