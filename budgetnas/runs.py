"""The training-run service: train one spec with one recipe and describe the run in one metrics dict.

``budgetnas train``/``reproduce`` (:func:`budgetnas.reproduce.train_config`), ``replay``
(:func:`budgetnas.replay.retrain`) and the sweep's finalists (:func:`budgetnas.sweep.rank_finalists`)
all train through :func:`train_run`, so their metrics carry the same keys with the same meaning
(mult-adds counted once, at the paper's batch) and their weights are saved the same way
(:func:`save_weights`). Each caller adds only what is its own (a name, a timestamp, artifacts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from budgetnas.counting import paper_batch_mult_adds
from budgetnas.errors import FieldError
from budgetnas.spec import spec_to_dict

# The trainer's summary keys every run's metrics carry.
SUMMARY_KEYS = ("params", "val_accuracy", "test_accuracy", "train_seconds", "lowest_loss", "lowest_loss_epoch",
                "epochs_run", "device", "precision", "curve")


@dataclass
class TrainedRun:
    """One finished training run: its metrics (JSON-ready), the trainer's result and the model."""

    metrics: dict[str, Any]
    result: Any = field(repr=False)  # budgetnas.trainer.TrainResult
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def model(self) -> Any:
        return self.result.model


def train_run(spec: Any, recipe: Any, data: Any, *, dataset: str, subset: int | None, device: str = "auto",
              precision: str = "auto", on_epoch: Callable[[Any], None] | None = None, evaluate_test: bool = True,
              threads: int | None = None) -> TrainedRun:
    """Train ``spec`` on ``data`` with ``recipe`` (test accuracy when ``evaluate_test``) and build its metrics."""
    from budgetnas.trainer import train

    result = train(spec, data, recipe, device=device, precision=precision, on_epoch=on_epoch,
                   evaluate_test=evaluate_test, threads=threads)
    summary = result.summary()
    metrics = {
        **{k: summary[k] for k in SUMMARY_KEYS},
        "mult_adds": paper_batch_mult_adds(spec, data.input_shape, data.num_classes),
        "epochs": recipe.epochs, "seed": recipe.seed, "dataset": dataset, "subset": subset,
        "train_images": len(data.train), "test_images": len(data.test) if data.test is not None else 0,
        "spec": spec_to_dict(spec), "recipe": recipe.to_dict(),
    }
    return TrainedRun(metrics=metrics, result=result)


def check_seeds(seeds: Sequence[int], field: str = "seeds") -> list[int]:
    """``seeds`` (``--seeds``; ``field`` names the setting, e.g. ``replay_seeds``) as a list, refused before
    any training when empty, negative or repeated."""
    seeds = list(seeds)
    if not seeds:
        raise FieldError(f"{field} must name at least one seed, e.g. 0,1", field)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise FieldError(f"{field} must be non-negative integers, got {seed!r}", field)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:  # the same seed twice trains the same model twice: a mean over it would overstate agreement
        raise FieldError(f"{field} must differ, got {repeated[0]} more than once", field)
    return seeds


def seed_heading(i: int, seed: int, count: int) -> str:
    """The progress line said before run ``i`` (1-based) of ``count``, one per seed."""
    return f"[seed {seed}, run {i}/{count}]"


def seed_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics of one model's runs with several seeds as each seed's accuracies and their means.

    Why: one run's test accuracy carries a few tenths of a point of luck at these model sizes (the
    seed picks initial weights, batch order and augmentation), so ``replay --seeds`` and ``train
    --seeds`` report, and the study records, every run beside the mean.
    """
    def mean(key: str) -> float:
        return sum(float(m[key]) for m in runs) / len(runs)

    return {"seeds": [{"seed": int(m["seed"]), "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
                       "train_seconds": m["train_seconds"]} for m in runs],
            "mean_val_accuracy": mean("val_accuracy"), "mean_test_accuracy": mean("test_accuracy"),
            "mean_train_seconds": mean("train_seconds")}


def save_weights(model: Any, path: Path) -> Path:
    """The model's state dict, on the CPU, at ``path`` (``build_model(spec, ...)`` + ``load_state_dict`` reads it)."""
    import torch

    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path
