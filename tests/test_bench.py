"""``budgetnas bench``: real steps per device and the baseline comparison (speeds are measured, never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from budgetnas.bench import available_devices, paper_style_model
from budgetnas.errors import UsageError
from budgetnas.model import build_model, trainable_params
from budgetnas.reproduce import PAPER_NAMES, resolve_config
from conftest import assert_one_line_error


def test_bench_json_times_each_config_on_the_cpu(cli):
    proc = cli("bench", "fcn-50k", "cnn-10k", "--steps", "2", "--warmup", "1", "--devices", "cpu,cuda",
               "--subset", "2000", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == {"fcn-50k", "cnn-10k"}
    for row in rows.values():
        assert row["device"] == "cpu" and row["steps"] == 2 and row["batch"] == 512
        assert row["step_seconds"] > 0
        assert row["images_per_second"] == pytest.approx(512 / row["step_seconds"])
        assert row["epoch_seconds"] == pytest.approx(106 * row["step_seconds"])  # ceil(54,000 / 512) steps
        assert row["run_seconds"] == pytest.approx(20 * row["epoch_seconds"])
    assert rows["cnn-10k"]["paper_cpu_seconds"] == 375.81
    if not torch.cuda.is_available():
        assert any("no CUDA" in n for n in doc["notes"]) and "no CUDA" in proc.stderr


def test_a_subset_smaller_than_the_batch_counts_the_steps_of_that_batch(cli):
    """200 images train in steps of 180 (the training part of the slice), not 512: an epoch of the whole split is
    ceil(54,000 / 180) such steps, not 106 (which made the epoch look 2.8 times faster than it is)."""
    proc = cli("bench", "fcn-50k", "--steps", "1", "--warmup", "0", "--devices", "cpu", "--subset", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["batch"] == 180 and row["epoch_seconds"] == pytest.approx(300 * row["step_seconds"])


def test_bench_table_and_bad_devices(cli):
    proc = cli("bench", "fcn-50k", "--steps", "1", "--warmup", "0", "--devices", "cpu", "--subset", "600")
    assert proc.returncode == 0, proc.stderr
    assert "Images/s" in proc.stdout and "Paper CPU-only" in proc.stdout and "fcn-50k" in proc.stdout
    assert_one_line_error(cli("bench", "fcn-50k", "--devices", "tpu"), 2, "unknown device")
    assert_one_line_error(cli("bench", "fcn-50k", "--steps", "0"), 2, "--steps")


@pytest.mark.slow
def test_baseline_comparison_runs_both_loops(cli):
    proc = cli("bench", "--baseline", "cnn-10k", "--steps", "2", "--repeats", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["name"] == "cnn-10k" and doc["repeats"] == 2
    assert len(doc["baseline"]) == len(doc["budgetnas"]) == 2
    for timing in doc["baseline"] + doc["budgetnas"]:
        assert timing["images"] == 2 * 512 and timing["wall_seconds"] > 0
    assert doc["ratio"] == pytest.approx(doc["budgetnas_images_per_second"] / doc["baseline_images_per_second"])
    assert "(a) paper-style loop" in proc.stderr and "(b) budgetnas trainer" in proc.stderr


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_style_baseline_model_is_the_same_network(name):
    config = resolve_config(name)
    baseline = paper_style_model(config, (1, 28, 28), 10)
    ours = build_model(config.spec, (1, 28, 28), 10)
    assert trainable_params(baseline) == trainable_params(ours)
    # Same parameters in the same order give the same function (the builder may order ops differently).
    with torch.no_grad():
        for a, b in zip(baseline.parameters(), ours.parameters()):
            a.copy_(b)
        x = torch.rand(4, 1, 28, 28)
        torch.testing.assert_close(baseline.eval()(x), ours.eval()(x))


def test_available_devices():
    assert available_devices(["cpu"]) == (["cpu"], [])
    with pytest.raises(UsageError):
        available_devices(["tpu"])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu", "tanh", "gelu"])
def test_pool_before_activation_is_the_same_function_and_is_undone(activation):
    from budgetnas.spec import CNNSpec, ConvBlock
    from budgetnas.trainer import _pool_before_activation

    spec = CNNSpec(conv=(ConvBlock(6, batch_norm=True), ConvBlock(8, pool=None), ConvBlock(5)), fc=(12,),
                   activation=activation)
    model = build_model(spec, (1, 28, 28), 10)
    before = [list(block) for block in model.blocks]
    x = torch.randn(16, 1, 28, 28)
    expected = model(x)
    expected.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    restore = _pool_before_activation(model)
    swapped = [list(block) for block in model.blocks] != before
    assert swapped == (activation != "gelu")  # gelu is not monotone: left alone
    got = model(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, expected)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)
    restore()
    assert [list(block) for block in model.blocks] == before
    assert list(model.state_dict()) == list(build_model(spec, (1, 28, 28), 10).state_dict())


def test_train_returns_the_model_in_the_builders_order(tiny_npz):
    from budgetnas.data import load_dataset
    from budgetnas.trainer import Recipe, train

    data = load_dataset(f"npz:{tiny_npz}", subset=200)
    config = resolve_config("cnn-10k")
    result = train(config.spec, data, Recipe(epochs=1, batch_size=64), device="cpu", precision="fp32")
    assert [type(m).__name__ for m in result.model.blocks[0]] == ["Conv2d", "ReLU", "MaxPool2d"]


def test_cpu_micro_batches_give_the_same_training(tiny_npz, monkeypatch):
    import budgetnas.trainer as trainer
    from budgetnas.data import load_dataset
    from budgetnas.spec import CNNSpec, ConvBlock
    from budgetnas.trainer import Recipe, train

    data = load_dataset(f"npz:{tiny_npz}", subset=300)
    spec = CNNSpec(conv=(ConvBlock(8), ConvBlock(12)), fc=(16,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # only single-threaded CPU runs split their batches
    try:
        _same_training_with_micro_batches(data, spec, trainer, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    if threads > 1:
        assert trainer._Session(spec, data, Recipe(batch_size=128), "cpu", "fp32").micro_batch == 128


def _same_training_with_micro_batches(data, spec, trainer, monkeypatch):
    from budgetnas.spec import CNNSpec, ConvBlock
    from budgetnas.trainer import Recipe, train

    recipe = Recipe(epochs=2, batch_size=128, optimizer="sgd", lr=0.05)  # updates proportional to gradients
    whole = train(spec, data, recipe, device="cpu", precision="fp32")
    monkeypatch.setattr(trainer, "MICRO_BATCH_BYTES", 1)  # forces micro-batches of 32 images
    session = trainer._Session(spec, data, recipe, "cpu", "fp32")
    assert session.micro_batch == 32
    parts = train(spec, data, recipe, device="cpu", precision="fp32")
    for a, b in zip(whole.model.parameters(), parts.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert [e.train_loss for e in parts.epochs] == pytest.approx([e.train_loss for e in whole.epochs], rel=1e-5)
    bn = CNNSpec(conv=(ConvBlock(8, batch_norm=True),), fc=())
    assert trainer._Session(bn, data, recipe, "cpu", "fp32").micro_batch == 128  # batch norm: never split
