"""One readable training loop over preloaded tensors.

Why it is fast on a laptop CPU: images are converted to normalised floats once (not per
sample through PIL and ``ToTensor``), batches are sliced from one tensor with a seeded
permutation (no ``DataLoader`` workers, no collation), conv nets run channels_last, and
evaluation runs under ``inference_mode`` with large batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from budgetnas.cost import check_model_memory
from budgetnas.data import Data
from budgetnas.device import Placement, resolve_placement
from budgetnas.errors import TrainingDiverged, UsageError
from budgetnas.families import family_of
from budgetnas.inputs import scale
from budgetnas.model import build_model, trainable_params
from budgetnas.recipe import AUGMENTS, OPTIMIZERS, PAPER_RECIPE, SCHEDULES, EpochStats, Recipe  # noqa: F401 (re-exported)
from budgetnas.spec import Spec

@dataclass
class TrainResult:
    params: int
    epochs: list[EpochStats]
    train_seconds: float
    device: str
    precision: str
    test_accuracy: float | None = None
    stopped_early: str | None = None  # reason, when a callback stopped the run
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy after the last epoch (the number the search records)."""
        return self.epochs[-1].val_accuracy if self.epochs else 0.0

    @property
    def lowest_loss(self) -> tuple[float, int]:
        """(lowest epoch train loss, its 1-based epoch): a column of the paper's tables."""
        best = min(self.epochs, key=lambda e: e.train_loss)
        return best.train_loss, best.epoch

    def summary(self) -> dict[str, Any]:
        loss, loss_epoch = self.lowest_loss
        return {
            "params": self.params, "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy,
            "train_seconds": self.train_seconds, "lowest_loss": loss, "lowest_loss_epoch": loss_epoch,
            "epochs_run": len(self.epochs), "device": self.device, "precision": self.precision,
            "stopped_early": self.stopped_early,
            "curve": [asdict(e) for e in self.epochs],
        }


class StopTraining(Exception):
    """Raised by an epoch callback to end training early; the result is kept (see ``stopped_early``)."""


EpochCallback = Callable[[EpochStats], None]
# (epoch, step within the epoch (1-based), steps per epoch, images in this step): a progress display's hook.
StepCallback = Callable[[int, int, int, int], None]


def train(spec: Spec, data: Data, recipe: Recipe = Recipe(), *, device: str = "auto", precision: str = "auto",
          on_epoch: EpochCallback | None = None, evaluate_test: bool = False,
          threads: int | None = None, on_step: StepCallback | None = None) -> TrainResult:
    """Train ``spec`` on ``data`` with ``recipe``; validate after every epoch.

    ``on_epoch`` is called with each epoch's stats. It may raise :class:`StopTraining`
    to end the run early (the result so far is returned) or any other exception (e.g.
    ``optuna.TrialPruned``), which propagates. Test accuracy is computed only when
    ``evaluate_test`` is true. A NaN or infinite loss raises :class:`TrainingDiverged`.
    ``on_step`` (optional) is told after every optimizer step where the epoch stands; it never
    waits for the device, so a GPU's queue keeps running ahead.
    """
    run = _Session(spec, data, recipe, device, precision, threads)
    model, dev, placement = run.model, run.device, run.placement
    generator = torch.Generator().manual_seed(recipe.seed)

    result = TrainResult(params=trainable_params(model), epochs=[], train_seconds=0.0,
                         device=str(dev), precision=placement.precision)
    try:
        start = time.perf_counter()
        for epoch in range(1, recipe.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            order = torch.randperm(len(data.train), generator=generator).to(dev)
            loss_sum = torch.zeros((), device=dev)
            steps = math.ceil(len(order) / recipe.batch_size)
            for step, first in enumerate(range(0, len(order), recipe.batch_size), start=1):
                loss_sum += run.step(order[first:first + recipe.batch_size])
                if on_step is not None:
                    on_step(epoch, step, steps, min(recipe.batch_size, len(order) - first))
            train_loss = loss_sum.item() / len(order)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}; "
                                       "lower the learning rate or use --precision fp32")
            val_accuracy = evaluate(model, run.inputs.val_x, data.val.y, placement)
            stats = EpochStats(epoch, train_loss, val_accuracy, time.perf_counter() - epoch_start)
            result.epochs.append(stats)
            result.train_seconds = time.perf_counter() - start
            if on_epoch is not None:
                try:
                    on_epoch(stats)
                except StopTraining as stop:
                    result.stopped_early = str(stop) or f"stopped after epoch {epoch}"
                    break
        if evaluate_test:
            test = data.require_test()
            result.test_accuracy = evaluate(model, run.inputs.prepare(test.x), test.y, placement)
    finally:
        run.restore_order()  # the model leaves in the order the builder made it
    result.model = model
    return result


class _Session:
    """Everything one training run holds (model, prepared inputs, optimizer, ...) and its step.

    :func:`train` loops over epochs with it; :func:`time_training_steps` times the very same
    step, so ``budgetnas bench`` measures what training actually runs.
    """

    def __init__(self, spec: Spec, data: Data, recipe: Recipe, device: str, precision: str,
                 threads: int | None = None) -> None:
        self.placement = resolve_placement(device, precision)
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(recipe.seed)
        self.device = dev = self.placement.device
        self.recipe = recipe
        # A model that cannot fit is refused before PyTorch allocates anything (budgetnas.limits).
        check_model_memory(spec, data.input_shape, data.num_classes, batch=recipe.batch_size, training=True)
        model = build_model(spec, data.input_shape, data.num_classes).to(dev)
        channels_last = family_of(spec).channels_last and dev.type != "mps"
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.restore_order = _pool_before_activation(model)
        self.inputs = _Inputs(data, recipe, dev, channels_last)
        self.optimizer = _optimizer(model, recipe)
        steps_per_epoch = math.ceil(len(data.train) / recipe.batch_size)
        self.scheduler = _scheduler(self.optimizer, recipe, steps_per_epoch)
        self.scaler = torch.amp.GradScaler(dev.type) if self.placement.precision == "fp16" else None
        self.micro_batch = _micro_batch(model, spec, data.input_shape, recipe.batch_size, dev)

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the training images ``idx``; returns the batch's summed loss (a tensor,
        so that the loop never waits for the device)."""
        x, y = self.inputs.train_batch(idx)
        self.optimizer.zero_grad(set_to_none=True)
        if len(idx) <= self.micro_batch:
            with _autocast(self.placement):
                loss = F.cross_entropy(self.model(x), y, label_smoothing=self.recipe.label_smoothing)
            self._backward(loss)
            total = loss.detach().float() * len(idx)
        else:
            # The same gradient as one pass over the batch (sum of per-image losses / batch size),
            # accumulated over micro-batches whose activations stay small: see _micro_batch.
            total = torch.zeros((), device=self.device)
            for first in range(0, len(idx), self.micro_batch):
                part = slice(first, first + self.micro_batch)
                with _autocast(self.placement):
                    loss = F.cross_entropy(self.model(x[part]), y[part], label_smoothing=self.recipe.label_smoothing,
                                           reduction="sum")
                self._backward(loss / len(idx))
                total += loss.detach().float()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return total

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()


def time_training_steps(spec: Spec, data: Data, recipe: Recipe = Recipe(), *, device: str = "auto",
                        precision: str = "auto", steps: int = 20, warmup: int = 3) -> tuple[list[float], str]:
    """Wall seconds of each of ``steps`` training steps (after ``warmup`` untimed ones), and the precision.

    The steps are exactly :func:`train`'s, over seeded random batches of ``data.train``. The
    device is synchronised after each step so that a GPU's queued work is counted where it ran.
    """
    if steps < 1 or warmup < 0:
        raise UsageError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    # Enough epochs that a schedule (OneCycleLR) never runs past its last step.
    run = _Session(spec, data, replace(recipe, epochs=max(recipe.epochs, warmup + steps)), device, precision)
    run.model.train()
    generator = torch.Generator().manual_seed(recipe.seed)
    n, batch = len(data.train), min(recipe.batch_size, len(data.train))
    seconds = []
    for i in range(warmup + steps):
        idx = torch.randperm(n, generator=generator)[:batch].to(run.device)
        _synchronize(run.device)
        start = time.perf_counter()
        run.step(idx).item()  # .item() waits for the step, as the end of an epoch does
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    run.restore_order()
    return seconds, run.placement.precision


MICRO_BATCH_BYTES = 16 * 2**20  # largest activation map a CPU micro-batch may allocate


def _micro_batch(model: nn.Module, spec: Spec, input_shape: tuple[int, int, int], batch_size: int,
                 device: torch.device) -> int:
    """How many images one forward/backward pass takes on the CPU (the whole batch elsewhere).

    The first conv block of a paper CNN writes maps of 64 MB per batch of 512 (CNN-100K:
    40 x 28 x 28 floats per image). glibc serves allocations that large with fresh mmap pages
    that fault and are zeroed on every step, and they fall out of the caches; passes over
    micro-batches whose largest map stays under MICRO_BATCH_BYTES reuse warm heap memory.
    Their gradients add up to the batch's (the loss is summed and divided by the batch size),
    so the optimizer step is the same. Batch-norm statistics would change, so nets with batch
    norm always take the whole batch. Only single-threaded runs split (search workers on a
    small machine, ``--threads 1``): on the shared 2-core development CPU, two intra-op threads
    lost more at the extra synchronisation points than the smaller maps saved (measured:
    CNN-100K 312 -> 222 img/s with 2 threads, 773 -> 992 img/s with 1).
    """
    largest = family_of(spec).largest_activation(spec, input_shape)
    if device.type != "cpu" or largest is None or torch.get_num_threads() > 1:
        return batch_size
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return batch_size
    per_image = 4 * largest
    micro = MICRO_BATCH_BYTES // max(per_image, 1)
    return batch_size if micro >= batch_size else max(32, micro // 32 * 32)


# Activations that never decrease: max-pooling commutes with them exactly.
_MONOTONE_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh)


def _pool_before_activation(model: nn.Module) -> Callable[[], None]:
    """Run each conv block as conv -> [bn] -> max-pool -> activation while training; returns the undo.

    For an activation f that never decreases, max(f(a), f(b), ...) = f(max(a, b, ...)), so
    pooling first computes the very same outputs (and gradients, up to which of several equal
    maxima receives one) while the activation and its backward touch a quarter of the
    elements. On a CPU these passes over full-resolution maps are memory-bound and cost as
    much as the conv itself (CNN-100K: 64 MB per map at batch 512). The builder keeps the
    paper's order, because feature-map tools read the activation at full resolution; the
    swap touches only parameter-free modules, so state dicts are unchanged.
    """
    swaps = []
    for block in getattr(model, "blocks", ()):
        keys = list(block._modules)
        for act_key, pool_key in zip(keys, keys[1:]):
            act, pool = block._modules[act_key], block._modules[pool_key]
            if isinstance(act, _MONOTONE_ACTIVATIONS) and isinstance(pool, nn.MaxPool2d):
                block._modules[act_key], block._modules[pool_key] = pool, act
                swaps.append((block, act_key, pool_key))

    def restore() -> None:
        while swaps:
            block, act_key, pool_key = swaps.pop()
            block._modules[act_key], block._modules[pool_key] = block._modules[pool_key], block._modules[act_key]
    return restore


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, placement: Placement,
             batch_size: int = 2048) -> float:
    """Accuracy of ``model`` on prepared inputs ``x`` (see :class:`_Inputs`) and labels ``y``."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=placement.device)
    y = y.to(placement.device)
    for first in range(0, len(y), batch_size):
        with _autocast(placement):
            logits = model(x[first:first + batch_size])
        correct += (logits.argmax(dim=1) == y[first:first + batch_size]).sum()
    return correct.item() / max(len(y), 1)


class _Inputs:
    """Float copies of the image tensors on the device, normalised once, plus augmentation."""

    def __init__(self, data: Data, recipe: Recipe, device: torch.device, channels_last: bool) -> None:
        self.recipe = recipe
        self.device = device
        self.channels_last = channels_last
        self.data = data
        self.train_x = self.prepare(data.train.x)
        self.train_y = data.train.y.to(device)
        self.val_x = self.prepare(data.val.x)
        self.gen = torch.Generator(device=device).manual_seed(recipe.seed + 1)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = scale(images, self.data, self.recipe, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.train_x.index_select(0, idx)
        augment = self.recipe.augment
        if "flip" in augment:
            flip = torch.rand(len(idx), device=self.device, generator=self.gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if "shift" in augment:
            x = _random_shift(x, 2, self.gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.train_y.index_select(0, idx)


def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels each way (zero fill), like a padded random crop."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(n, c, h, w + 2 * pad)
    cols = (dx + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = model.parameters()
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total)
    return None


def _autocast(placement: Placement):
    dtype = placement.autocast_dtype
    if dtype is None:
        return torch.autocast(placement.device.type, enabled=False)
    return torch.autocast(placement.device.type, dtype=dtype)
