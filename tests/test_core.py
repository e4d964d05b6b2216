"""Specs, exact counting, builder, budgets: the foundation, tested without training."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetnas import CNNSpec, ConvBlock, FCNSpec, UsageError, count_params, parse_budget
from budgetnas.budget import format_budget
from budgetnas.counting import count_mult_adds
from budgetnas.spec import ACTIVATIONS, INITS, spec_from_dict, spec_from_json, spec_to_json

INPUT_SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def conv_blocks(max_blocks: int = 4):
    block = st.builds(ConvBlock, out_channels=st.integers(1, 24), kernel_size=st.sampled_from([1, 3, 5, 7]),
                      padding=st.one_of(st.none(), st.integers(0, 3)), pool=st.sampled_from([None, 2, 3]),
                      batch_norm=st.booleans())
    return st.lists(block, min_size=1, max_size=max_blocks).map(tuple)


cnn_specs = st.builds(CNNSpec, conv=conv_blocks(), fc=st.lists(st.integers(1, 40), max_size=3).map(tuple),
                      head=st.sampled_from(["flatten", "gap"]), fc_batch_norm=st.booleans(),
                      dropout=st.sampled_from([0.0, 0.2]), activation=st.sampled_from(ACTIVATIONS),
                      init=st.sampled_from(INITS))
fcn_specs = st.builds(FCNSpec, hidden=st.lists(st.integers(1, 64), min_size=1, max_size=4).map(tuple),
                      batch_norm=st.booleans(), dropout=st.sampled_from([0.0, 0.3]),
                      activation=st.sampled_from(ACTIVATIONS), init=st.sampled_from(INITS))


def _fits(spec, shape) -> bool:
    """Whether the spec's maps stay at least 1x1, decided by torch itself (plain Conv2d/MaxPool2d layers on a
    zero image), not by ``feature_shapes``, which both count_params and build_model use to refuse."""
    if isinstance(spec, FCNSpec):
        return True
    x = torch.zeros(1, 1, *shape[1:])
    with torch.no_grad():
        for block in spec.conv:
            try:
                x = torch.nn.Conv2d(1, 1, block.kernel_size, padding=block.padding)(x)
                if block.pool:
                    x = torch.nn.MaxPool2d(block.pool)(x)
            except RuntimeError:  # torch: "Kernel size can't be greater than actual input size", ...
                return False
            if min(x.shape[-2:]) < 1:
                return False
    return True


# The counting property test (count == built model == torchinfo) covers every family: tests/test_families.py.


@settings(max_examples=100, deadline=None)
@given(spec=st.one_of(cnn_specs, fcn_specs))
def test_spec_round_trips_through_dict_and_json(spec):
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_json(spec_to_json(spec)) == spec


PAPER = {  # the paper's picks: weights and torchinfo mult-adds at batch 512, as reported
    "cnn-10k": (CNNSpec(conv=(ConvBlock(10), ConvBlock(18)), fc=(8, 20)), 9_192, "208.33M"),
    "cnn-20k": (CNNSpec(conv=(ConvBlock(20), ConvBlock(30)), fc=(9, 20)), 19_279, None),
    "cnn-50k": (CNNSpec(conv=(ConvBlock(25), ConvBlock(40)), fc=(20, 30)), 49_450, "1.03G"),
    "cnn-100k": (CNNSpec(conv=(ConvBlock(40), ConvBlock(60)), fc=(25, 50)), 97_395, "2.37G"),
    "fcn-50k": (FCNSpec(hidden=(50, 120)), 46_580, None),
    "fcn-100k": (FCNSpec(hidden=(100, 180)), 98_490, "50.43M"),
    "fcn-200k": (FCNSpec(hidden=(200, 200)), 199_210, "102.00M"),
}


@pytest.mark.parametrize("name", PAPER)
def test_paper_models_count_exactly(name):
    from budgetnas.counting import human_count

    spec, weights, mult_adds = PAPER[name]
    assert count_params(spec, (1, 28, 28), 10) == weights
    if mult_adds:
        assert human_count(count_mult_adds(spec, (1, 28, 28), 10, batch=512)) == mult_adds


def test_pooling_below_one_pixel_is_refused():
    spec = CNNSpec(conv=(ConvBlock(4), ConvBlock(4), ConvBlock(4), ConvBlock(4)))
    assert count_params(spec, (1, 28, 28), 10) > 0
    with pytest.raises(UsageError, match="below 1x1"):
        count_params(spec, (1, 8, 8), 10)


@pytest.mark.parametrize("text,value", [("100k", 100_000), ("100K", 100_000), ("0.1M", 100_000),
                                        ("100000", 100_000), ("100_000", 100_000), ("1.5m", 1_500_000)])
def test_parse_budget_accepts(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["", "abc", "0", "-5k", "1.5", "10kk", "1__000", "k", "0.0001k", "1e5"])
def test_parse_budget_rejects_with_accepted_forms(text):
    with pytest.raises(UsageError, match="accepted forms"):
        parse_budget(text)


def test_format_budget():
    assert [format_budget(v) for v in (100_000, 1_500_000, 9_192)] == ["100k", "1.5M", "9192"]


@pytest.mark.parametrize("bad", [
    {"family": "cnn", "conv": []},
    {"family": "cnn", "conv": [{"out_channels": 0}]},
    {"family": "cnn", "conv": [{"out_channels": 4, "colour": 1}]},
    {"family": "fcn", "hidden": [10] * 5},
    {"family": "fcn", "hidden": [10], "activation": "swishy"},
    {"family": "fcn", "hidden": [10], "dropout": 1.0},
    {"family": "rnn"},
])
def test_bad_specs_are_usage_errors(bad):
    with pytest.raises(UsageError):
        spec_from_dict(bad)


@pytest.mark.parametrize("bad, message", [
    ({"family": "cnn"}, "cnn spec lacks key(s) conv"),
    ({"family": "cnn", "conv": [{"kernel_size": 3}]}, "conv block lacks key(s) out_channels"),
    ({"family": "cnn", "conv": {"out_channels": 4}}, "conv must be a list"),
    ({"family": "cnn", "conv": [{"out_channels": 4}], "fc": 5}, "fc must be a list, got 5"),
    ({"family": "cnn", "conv": [{"out_channels": 4, "kernel_size": "3"}]}, "conv kernel_size must be an integer"),
    ({"family": "fcn", "hidden": 7}, "hidden must be a list, got 7"),
])
def test_spec_tables_of_the_wrong_shape_name_the_key(bad, message):
    """A config's [spec] with a key missing or a list given as a number: the key is named, no TypeError."""
    with pytest.raises(UsageError, match=re.escape(message)):
        spec_from_dict(bad)
