"""The training loop on real (tiny) Fashion-MNIST: learning, seeding, callbacks, divergence, options.

Each test trains a small net on the ``tiny_npz`` slice (900 train / 100 val / 300 test images)
for one to three epochs on the CPU, so a test takes a second or two.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from budgetnas.data import Data, load_dataset
from budgetnas.cli import flag_message
from budgetnas.errors import DataError, FieldError, RunFailure, TrainingDiverged, UsageError
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec
from budgetnas.trainer import (AUGMENTS, PAPER_RECIPE, SCHEDULES, EpochStats, Recipe, StopTraining, TrainResult,
                               _random_shift, train)

SMALL_CNN = CNNSpec(conv=(ConvBlock(8), ConvBlock(16)), fc=(32,))
SMALL_FCN = FCNSpec(hidden=(64,))
QUICK = Recipe(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def tiny(tiny_npz: Path) -> Data:
    return load_dataset(f"npz:{tiny_npz}", with_test=True)


def above_chance(accuracy: float, data: Data) -> bool:
    """Clearly above guessing: chance plus three standard errors of a guesser on the validation split
    (10 classes, 100 images: 0.1 + 3 * 0.03 = 0.19), so only a net that learned something passes."""
    chance = 1 / data.num_classes
    return accuracy > chance + 3 * math.sqrt(chance * (1 - chance) / len(data.val))


def fp32(spec, data, recipe=QUICK, **kwargs) -> TrainResult:
    return train(spec, data, recipe, device="cpu", precision="fp32", **kwargs)


def test_training_reduces_loss_and_learns(tiny: Data):
    result = fp32(SMALL_CNN, tiny, Recipe(epochs=3, batch_size=64))
    losses = [e.train_loss for e in result.epochs]
    assert [e.epoch for e in result.epochs] == [1, 2, 3]
    assert losses[-1] < losses[0] < math.log(10) + 0.2  # starts near chance, then falls
    assert result.val_accuracy > 0.5  # 10 classes: chance is 0.1
    assert result.params == sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert result.train_seconds >= sum(e.seconds for e in result.epochs) * 0.99
    assert (result.device, result.precision) == ("cpu", "fp32")


@pytest.mark.parametrize("spec", [SMALL_CNN, SMALL_FCN], ids=["cnn", "fcn"])
def test_seeded_runs_are_identical(tiny: Data, spec):
    a, b = fp32(spec, tiny), fp32(spec, tiny)
    assert [dataclasses.astuple(e)[:3] for e in a.epochs] == [dataclasses.astuple(e)[:3] for e in b.epochs]
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(pa, pb)
    c = fp32(spec, tiny, dataclasses.replace(QUICK, seed=1))
    assert [e.train_loss for e in c.epochs] != [e.train_loss for e in a.epochs]


def test_callback_sees_every_epoch(tiny: Data):
    seen: list[EpochStats] = []
    result = fp32(SMALL_FCN, tiny, Recipe(epochs=3, batch_size=128), on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3]
    assert seen == result.epochs
    assert all(0.0 <= s.val_accuracy <= 1.0 and s.seconds > 0 for s in seen)
    assert result.stopped_early is None


def test_stop_training_ends_early_and_keeps_the_result(tiny: Data):
    def stop_after_two(stats: EpochStats) -> None:
        if stats.epoch == 2:
            raise StopTraining("plateau reached")

    result = fp32(SMALL_FCN, tiny, Recipe(epochs=5, batch_size=128), on_epoch=stop_after_two,
                  evaluate_test=True)
    assert len(result.epochs) == 2 and result.stopped_early == "plateau reached"
    assert result.test_accuracy is not None  # the kept model is still evaluated when asked
    silent = fp32(SMALL_FCN, tiny, Recipe(epochs=5, batch_size=128),
                  on_epoch=lambda s: (_ for _ in ()).throw(StopTraining()))
    assert len(silent.epochs) == 1 and silent.stopped_early == "stopped after epoch 1"


def test_other_callback_exceptions_propagate(tiny: Data):
    class Pruned(Exception):  # stands for optuna.TrialPruned, which the search raises here
        pass

    def prune(stats: EpochStats) -> None:
        raise Pruned(stats.epoch)

    with pytest.raises(Pruned):
        fp32(SMALL_FCN, tiny, on_epoch=prune)


def test_nan_loss_raises_training_diverged(tiny: Data):
    # A poisoned input: a zero standard deviation turns every normalised pixel into inf/NaN.
    poisoned = dataclasses.replace(tiny, std=(0.0,))
    with pytest.raises(TrainingDiverged) as exc:
        fp32(SMALL_FCN, poisoned)
    message = str(exc.value)
    assert "nan" in message.lower() and "epoch 1" in message and "learning rate" in message
    assert "\n" not in message
    assert isinstance(exc.value, RunFailure)  # the CLI maps it to exit code 1, not 2


def test_huge_learning_rate_diverges_cleanly(tiny: Data):
    """lr=10 with SGD blows the FCN up (seeded CPU runs are deterministic): a one-line TrainingDiverged."""
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        fp32(SMALL_FCN, tiny, Recipe(epochs=2, batch_size=64, lr=10.0, optimizer="sgd"))


def test_huge_learning_rate_that_survives_leaks_no_nan(tiny: Data):
    """The same lr on the CNN with seed 2 survives (loss in the millions, then back): its result is all finite."""
    result = fp32(SMALL_CNN, tiny, Recipe(epochs=2, batch_size=64, lr=10.0, optimizer="sgd", seed=2))
    assert len(result.epochs) == 2 and all(math.isfinite(e.train_loss) for e in result.epochs)


def test_test_accuracy_only_when_asked(tiny: Data, tiny_npz: Path):
    without = fp32(SMALL_FCN, tiny)
    assert without.test_accuracy is None and without.summary()["test_accuracy"] is None
    with_test = fp32(SMALL_FCN, tiny, evaluate_test=True)
    assert 0.3 < with_test.test_accuracy <= 1.0
    # Same training either way: asking for the test score does not change the model.
    assert [e.train_loss for e in with_test.epochs] == [e.train_loss for e in without.epochs]
    no_test_split = load_dataset(f"npz:{tiny_npz}")
    with pytest.raises(DataError, match="with_test=True"):
        fp32(SMALL_FCN, no_test_split, evaluate_test=True)


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"lr": 0}, "lr must be positive"),
    ({"lr": 11}, "lr must be a number in [0.0, 10.0]"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"weight_decay": -0.1}, "weight_decay must be a number"),
    ({"label_smoothing": 0.9}, "label_smoothing must be a number"),
    ({"optimizer": "lion"}, "unknown recipe optimizer 'lion'; choose one of adam, adamw, sgd"),
    ({"schedule": "step"}, "unknown recipe schedule"),
    ({"augment": "mixup"}, "unknown recipe augment"),
    ({"normalize": "yes"}, "normalize must be true or false"),
])
def test_recipe_validation(changes, message):
    with pytest.raises(UsageError) as exc:
        Recipe(**changes)
    assert message in str(exc.value)


def test_recipe_changes_name_the_bad_field_for_the_cli():
    """Overrides from a command line (replay, train, search) keep the one check of ``__post_init__`` and
    come back as a FieldError naming the field, which the CLI spells as the flag."""
    recipe = Recipe(epochs=3, seed=2)
    assert recipe.with_changes(epochs=5, seed=None) == dataclasses.replace(recipe, epochs=5)
    assert recipe.with_changes() == recipe
    for changes, field, message in [({"epochs": 0}, "epochs", "epochs must be an integer >= 1, got 0"),
                                    ({"seed": -1}, "seed", "seed must be an integer >= 0, got -1"),
                                    ({"batch_size": 10**12}, "batch_size", "batch_size must be <= ")]:
        with pytest.raises(FieldError) as exc:
            recipe.with_changes(**changes)
        assert exc.value.fields == (field,) and str(exc.value).startswith(message)
        assert flag_message(exc.value).startswith("--" + message.replace("_", "-", 1))
    # Errors that are not about one bounded field stay as they are.
    with pytest.raises(UsageError, match="unknown recipe augment") as exc:
        recipe.with_changes(augment="mixup")
    assert not isinstance(exc.value, FieldError)


def test_recipe_dict_round_trip_and_unknown_keys():
    recipe = Recipe(epochs=3, lr=3e-3, optimizer="adamw", schedule="cosine", augment="flip-shift")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe(lr=1).lr == 1.0 and isinstance(Recipe(lr=1).lr, float)
    with pytest.raises(UsageError, match="unknown key.*momentum"):
        Recipe.from_dict({"epochs": 2, "momentum": 0.9})
    # The paper's recipe: Adam 1e-3, batch 512, 20 epochs, ToTensor scaling.
    assert (PAPER_RECIPE.optimizer, PAPER_RECIPE.lr, PAPER_RECIPE.batch_size, PAPER_RECIPE.epochs,
            PAPER_RECIPE.normalize) == ("adam", 1e-3, 512, 20, False)


@pytest.mark.parametrize("augment", AUGMENTS)
def test_augmentation_modes_train(tiny: Data, augment: str):
    result = fp32(SMALL_CNN, tiny, Recipe(epochs=1, batch_size=128, augment=augment))
    assert math.isfinite(result.epochs[0].train_loss) and above_chance(result.val_accuracy, tiny)


def test_random_shift_is_a_translation_with_zero_fill():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 7, 9)
    shifted = _random_shift(x, 2, torch.Generator().manual_seed(1))
    assert shifted.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(shifted[i], padded[i, :, dy:dy + 7, dx:dx + 9])]
        assert matches, f"image {i} is not a shift of its input"
        offsets.add(matches[0])
    assert len(offsets) > 1  # images get different shifts


def test_flip_augmentation_changes_training(tiny: Data):
    plain = fp32(SMALL_CNN, tiny, Recipe(epochs=1, batch_size=128))
    flipped = fp32(SMALL_CNN, tiny, Recipe(epochs=1, batch_size=128, augment="flip"))
    assert plain.epochs[0].train_loss != flipped.epochs[0].train_loss


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_schedules_and_optimizers_run(tiny: Data, schedule: str, optimizer: str):
    recipe = Recipe(epochs=2, batch_size=256, schedule=schedule, optimizer=optimizer, lr=3e-3,
                    weight_decay=1e-4, label_smoothing=0.1)
    result = fp32(SMALL_FCN, tiny, recipe)
    assert all(math.isfinite(e.train_loss) for e in result.epochs) and above_chance(result.val_accuracy, tiny)


def test_schedules_change_the_result(tiny: Data):
    losses = {s: fp32(SMALL_FCN, tiny, Recipe(epochs=2, batch_size=256, schedule=s, lr=3e-3)).epochs[-1].train_loss
              for s in SCHEDULES}
    assert len(set(losses.values())) == len(SCHEDULES)


def test_conv_nets_train_channels_last_and_fcns_do_not(tiny: Data):
    cnn = fp32(SMALL_CNN, tiny, Recipe(epochs=1, batch_size=128))
    conv_weight = cnn.model.blocks[1][0].weight  # 8 input channels: the layouts differ
    assert conv_weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv_weight.is_contiguous()
    # The trained model gives the same logits for either memory format of the input.
    x = tiny.val.x[:32].float() / 255
    cnn.model.eval()
    with torch.no_grad():
        assert torch.allclose(cnn.model(x), cnn.model(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)
    fcn = fp32(SMALL_FCN, tiny, Recipe(epochs=1, batch_size=128))
    assert all(p.is_contiguous() for p in fcn.model.parameters())


def test_unnormalised_paper_scaling_also_learns(tiny: Data):
    result = fp32(SMALL_CNN, tiny, dataclasses.replace(PAPER_RECIPE, epochs=3, batch_size=64))
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss and result.val_accuracy > 0.4


def test_bf16_autocast_runs_on_cpu(tiny: Data):
    result = train(SMALL_CNN, tiny, Recipe(epochs=1, batch_size=128), device="cpu", precision="bf16")
    assert result.precision == "bf16" and math.isfinite(result.epochs[0].train_loss)


def test_lowest_loss_and_its_epoch(tiny: Data):
    made_up = TrainResult(params=1, train_seconds=1.0, device="cpu", precision="fp32", epochs=[
        EpochStats(1, 0.9, 0.5, 1.0), EpochStats(2, 0.4, 0.6, 1.0), EpochStats(3, 0.5, 0.7, 1.0)])
    assert made_up.lowest_loss == (0.4, 2)
    assert made_up.val_accuracy == 0.7  # the last epoch's, not the best
    summary = made_up.summary()
    assert (summary["lowest_loss"], summary["lowest_loss_epoch"], summary["epochs_run"]) == (0.4, 2, 3)
    real = fp32(SMALL_FCN, tiny, Recipe(epochs=3, batch_size=128))
    loss, epoch = real.lowest_loss
    assert loss == min(e.train_loss for e in real.epochs) and real.epochs[epoch - 1].train_loss == loss
    assert [c["epoch"] for c in real.summary()["curve"]] == [1, 2, 3]


def test_unavailable_device_is_a_usage_error(tiny: Data):
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            train(SMALL_FCN, tiny, QUICK, device="cuda")
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        train(SMALL_FCN, tiny, QUICK, device="tpu")
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        train(SMALL_FCN, tiny, QUICK, device="cpu", precision="fp8")
