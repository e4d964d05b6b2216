"""Feature maps: hooks see each conv block's activation; grids are real PNGs."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from budgetnas.data import load_dataset
from budgetnas.errors import UsageError
from budgetnas.featuremaps import block_activations, one_per_class, prepare, render_feature_maps, save_feature_maps
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec
from budgetnas.trainer import Recipe, train

SPEC = CNNSpec(conv=(ConvBlock(4, batch_norm=True), ConvBlock(6, kernel_size=5, pool=None), ConvBlock(5)), fc=(8,))


@pytest.fixture(scope="module")
def trained(tiny_npz):
    data = load_dataset(f"npz:{tiny_npz}", with_test=True)
    recipe = Recipe(epochs=1, batch_size=128)
    return train(SPEC, data, recipe, device="cpu", precision="fp32").model.eval(), data, recipe


def test_activations_are_each_blocks_output_before_pooling(trained):
    model, data, recipe = trained
    x = prepare(data.test.x[:3], data, recipe)
    acts = block_activations(model, x)
    assert [a.shape for a in acts] == [(3, 4, 28, 28), (3, 6, 14, 14), (3, 5, 14, 14)]
    # Recompute by hand: block 1 is conv -> bn -> relu (-> pool); block 2 takes the pooled output.
    with torch.inference_mode():
        b1 = model.blocks[0]
        expected1 = b1[2](b1[1](b1[0](x.contiguous())))
        expected2 = model.blocks[1](model.blocks[0](x))
    assert torch.allclose(acts[0], expected1, atol=1e-5)
    assert torch.allclose(acts[1], expected2, atol=1e-5)
    assert (acts[0] >= 0).all()  # after the ReLU
    assert model.training is False  # mode restored


def test_default_is_one_test_image_per_class(trained, tmp_path):
    model, data, recipe = trained
    maps = render_feature_maps(model, data, recipe)
    labels = [int(data.test.y[m.index]) for m in maps]
    assert labels == list(range(10))
    assert [m.index for m in maps] == one_per_class(data.test.y)
    assert all(m.index == min(torch.nonzero(data.test.y == c).flatten().tolist()) for c, m in zip(labels, maps))
    paths = save_feature_maps(maps, tmp_path / "fm")
    assert len(paths) == 10 and all(p.stat().st_size > 1000 for p in paths)
    img = Image.open(io.BytesIO(maps[0].png)).convert("RGB")
    assert img.width > 200 and img.height > 300
    assert len(img.getcolors(1 << 20)) > 50  # coloured maps, not a blank canvas


def test_chosen_indices_and_errors(trained):
    model, data, recipe = trained
    maps = render_feature_maps(model, data, recipe, [5, 42])
    assert [m.index for m in maps] == [5, 42]
    assert [len(m.blocks) for m in maps] == [3, 3]
    with pytest.raises(UsageError, match="outside the test split"):
        render_feature_maps(model, data, recipe, [len(data.test)])
    fcn = train(FCNSpec(hidden=(8,)), data, Recipe(epochs=1), device="cpu", precision="fp32").model
    with pytest.raises(UsageError, match="conv blocks"):
        render_feature_maps(fcn, data, recipe)


@pytest.mark.slow
def test_feature_maps_of_a_model_from_budgetnas_train(tiny_npz, cli, tmp_path):
    # Any trained CNN: here one written by the real `budgetnas train --out`, reloaded from its folder.
    from budgetnas.config import RunConfig, save_config
    from budgetnas.replay import load_trained

    config = save_config(RunConfig("tiny", SPEC, Recipe(epochs=1, batch_size=128), dataset=f"npz:{tiny_npz}"),
                         tmp_path / "tiny.toml")
    proc = cli("train", config, "--device", "cpu", "--precision", "fp32", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    model, loaded = load_trained(tmp_path / "run")
    data = load_dataset(loaded.dataset, with_test=True)
    maps = render_feature_maps(model, data, loaded.recipe, [3])
    assert [b.shape for b in maps[0].blocks] == [(4, 28, 28), (6, 14, 14), (5, 14, 14)]
    with pytest.raises(UsageError, match="no trained model"):
        load_trained(tmp_path)
