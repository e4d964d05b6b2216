"""Zero-cost proxies: values on tiny models checked against hand computations, determinism, both families."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from budgetnas import proxies
from budgetnas.data import load_dataset
from budgetnas.model import build_model
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec


def _two_layer(w1, b1, w2, b2, activation="relu"):
    """flatten -> Linear(w1, b1) -> activation -> Linear(w2, b2) on 1x1xD inputs, with the given weights."""
    w1, w2 = torch.tensor(w1, dtype=torch.float32), torch.tensor(w2, dtype=torch.float32)
    spec = FCNSpec(hidden=(w1.shape[0],), activation=activation)
    model = build_model(spec, (1, 1, w1.shape[1]), w2.shape[0])
    first, last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        first.weight.copy_(w1)
        first.bias.copy_(torch.tensor(b1))
        last.weight.copy_(w2)
        last.bias.copy_(torch.tensor(b2))
    return model


def test_synflow_of_a_two_layer_net_matches_the_hand_computation():
    w1 = [[0.5, -1.0, 2.0], [-0.25, 0.75, -1.5]]
    b1 = [0.1, -0.2]
    w2 = [[1.0, -2.0], [0.5, 0.25], [-3.0, 1.0]]
    b2 = [0.3, -0.3, 0.0]
    model = _two_layer(w1, b1, w2, b2)
    # By hand, on |weights| with an all-ones input: h_j = sum_i |w1_ji| + |b1_j|, c_j = sum_k |w2_kj|,
    # R = sum_k sum_j |w2_kj| h_j + ...; dR/dw1_ji = c_j and dR/dw2_kj = h_j (biases are not scored).
    h = [sum(abs(v) for v in row) + abs(b) for row, b in zip(w1, b1)]
    c = [sum(abs(w2[k][j]) for k in range(3)) for j in range(2)]
    expected = (sum(abs(w1[j][i]) * c[j] for j in range(2) for i in range(3))
                + sum(abs(w2[k][j]) * h[j] for k in range(3) for j in range(2)))
    x = torch.randn(4, 1, 1, 3)  # only its shape matters
    assert proxies.synflow(model, x) == pytest.approx(expected, rel=1e-7)  # float32 weights
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert first.weight[0, 1].item() == -1.0  # the caller's model keeps its signs


def test_synflow_ignores_batch_norm_statistics():
    """Batch norm is removed for synflow, so it scores a net with BN like the same net without it."""
    torch.manual_seed(0)
    plain = build_model(FCNSpec(hidden=(6, 5)), (1, 2, 2), 3)
    with_bn = build_model(FCNSpec(hidden=(6, 5), batch_norm=True), (1, 2, 2), 3)
    linear = [m for m in with_bn.modules() if isinstance(m, torch.nn.Linear)]
    for src, dst in zip([m for m in plain.modules() if isinstance(m, torch.nn.Linear)], linear):
        dst.load_state_dict(src.state_dict())
    x = torch.randn(8, 1, 2, 2)
    assert proxies.synflow(with_bn, x) == pytest.approx(proxies.synflow(plain, x), rel=1e-12)


def test_naswot_is_the_log_determinant_of_the_hamming_kernel():
    # identity first layer, no bias: the ReLU codes of the three images are 11, 10 and 00
    model = _two_layer([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], [[1.0, 1.0], [1.0, -1.0]], [0.0, 0.0])
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]).view(3, 1, 1, 2)
    # K_ab = number of agreeing bits: [[2,1,0],[1,2,1],[0,1,2]], det = 2*3 - 1*2 = 4
    assert proxies.naswot(model, x) == pytest.approx(math.log(4.0), rel=1e-12)
    # two identical images make the kernel singular: the lowest possible score
    assert proxies.naswot(model, x[[0, 0, 2]]) == -math.inf


def test_grad_norm_matches_the_hand_computation():
    # W2 = 0 and b2 = 0: uniform softmax p = 1/K, dL/dW2 = mean_n (p - onehot_n) h_n^T, dL/dW1 = 0
    w1 = [[0.5, -1.0], [1.5, 0.25]]
    model = _two_layer(w1, [0.0, 0.5], [[0.0, 0.0]] * 3, [0.0, 0.0, 0.0])
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [0.5, 0.5]])
    y = np.array([0, 2, 1, 2])
    hidden = np.maximum(x @ np.array(w1).T + np.array([0.0, 0.5]), 0)
    error = np.full((4, 3), 1 / 3) - np.eye(3)[y]
    expected = np.linalg.norm(error.T @ hidden / 4)
    got = proxies.grad_norm(model, torch.tensor(x, dtype=torch.float32).view(4, 1, 1, 2), torch.tensor(y))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def batch(tiny_npz):
    data = load_dataset(f"npz:{tiny_npz}")
    x, y = proxies.proxy_batch(data.train.x, data.train.y, data.mean, data.std, size=64)
    return data, x, y


@pytest.mark.parametrize("spec", [
    CNNSpec(conv=(ConvBlock(6, batch_norm=True), ConvBlock(8, kernel_size=5, batch_norm=True)), fc=(12,),
            fc_batch_norm=True, dropout=0.2),
    CNNSpec(conv=(ConvBlock(5, pool=None), ConvBlock(7)), head="gap", activation="gelu"),
    FCNSpec(hidden=(40, 30), batch_norm=True, dropout=0.1, activation="silu"),
    FCNSpec(hidden=(200,), activation="tanh", init="kaiming"),
], ids=["cnn-bn", "cnn-gap-gelu", "fcn-bn-silu", "fcn-tanh"])
def test_every_proxy_runs_on_both_families_and_is_deterministic(batch, spec):
    data, x, y = batch
    state = torch.random.get_rng_state()
    first = {name: proxies.score(name, spec, x, y, data.num_classes, seed=3) for name in proxies.PROXIES}
    assert torch.equal(torch.random.get_rng_state(), state)  # scoring leaves the global RNG alone
    again = {name: proxies.score(name, spec, x, y, data.num_classes, seed=3) for name in proxies.PROXIES}
    assert first == again
    assert all(math.isfinite(v) and v > 0 for v in first.values()), first
    other_seed = proxies.score("grad_norm", spec, x, y, data.num_classes, seed=4)
    assert other_seed != first["grad_norm"]  # the score is of the seed's initialisation


def test_unknown_proxy_is_a_usage_error(batch):
    from budgetnas.errors import UsageError

    data, x, y = batch
    with pytest.raises(UsageError, match="unknown proxy 'snip'"):
        proxies.score("snip", FCNSpec(hidden=(4,)), x, y, data.num_classes)
