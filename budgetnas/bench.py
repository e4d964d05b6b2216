"""Training-speed benchmarks: per-epoch time on each device, and the trainer against a paper-style loop.

:func:`bench` times the trainer's own step (:func:`budgetnas.trainer.time_training_steps`)
for some configs on each available device and extrapolates one epoch of the paper's
54,000 training images, like the paper's "CPU-only" and "with GPU" columns.

:func:`baseline_comparison` is the benchmark of the core-library issue: in one process it
trains the same model for the same number of steps with (a) the loop a paper-style script
runs (torchvision dataset with ``ToTensor``, ``DataLoader(batch_size=512, shuffle=True)``,
fp32, NCHW, Adam, ``loss.item()`` every step) and (b) :func:`budgetnas.trainer.train`,
alternating a and b over several repeats, and reports the median images/second of each
and their ratio. Both are timed from building the model to the end of the last step; the
datasets are loaded before the clock starts (torchvision's object for a, the in-memory
tensors for b), and (b)'s time includes its one validation pass.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

from budgetnas.errors import UsageError
from budgetnas.limits import check_threads
from budgetnas.reproduce import RunConfig, _quiet, resolve_config  # _quiet: the one silent progress function

PAPER_TRAIN_IMAGES = 54_000  # 90% of Fashion-MNIST's 60,000 training images: one epoch of the paper
ProgressFn = Callable[[str], None]


# --------------------------------------------------------------------------- per-device bench

@dataclass
class BenchRow:
    """One config on one device: the median step and what it extrapolates to."""

    name: str
    device: str
    precision: str
    batch: int
    steps: int
    step_seconds: float  # median wall seconds of one training step
    images_per_second: float
    epoch_seconds: float  # extrapolated: steps of one 54,000-image epoch x the median step
    run_seconds: float  # the recipe's epochs x epoch_seconds (training steps only, no validation)
    epochs: int
    paper_cpu_seconds: float | None = None
    paper_gpu_seconds: float | None = None


@dataclass
class BenchReport:
    rows: list[BenchRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "notes": list(self.notes)}


def available_devices(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The requested devices that exist here, and a note for each one that does not."""
    import torch

    devices, notes = [], []
    for name in requested:
        if name not in ("cpu", "cuda", "mps"):
            raise UsageError(f"unknown device {name!r} in --devices; use a comma-separated list of cpu, cuda, mps")
        if name == "cuda" and not torch.cuda.is_available():
            notes.append("no CUDA GPU is visible on this machine: timing the CPU alone")
        elif name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            notes.append("Apple MPS is not available on this machine: skipped")
        elif name not in devices:
            devices.append(name)
    if not devices:
        raise UsageError("none of the requested --devices is available here; include cpu")
    return devices, notes


def bench(refs: Sequence[str] | None = None, *, devices: Sequence[str] = ("cpu", "cuda"), steps: int = 20,
          warmup: int = 3, precision: str = "auto", data_root: str | None = None, subset: int | None = None,
          threads: int | None = None, progress: ProgressFn = _quiet) -> BenchReport:
    """Time ``steps`` training steps of each config (default: the paper's) on each available device.

    ``subset`` samples the batches from fewer images (faster loading; the step is the same).
    """
    from budgetnas.data import load_dataset
    from budgetnas.reproduce import paper_names
    from budgetnas.trainer import time_training_steps

    if steps < 1 or warmup < 0:
        raise UsageError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    configs = [resolve_config(r) for r in (refs or paper_names())]
    found, notes = available_devices(devices)
    _set_threads(threads)
    datasets: dict[str, Any] = {}
    rows = []
    for config in configs:
        if config.dataset not in datasets:
            datasets[config.dataset] = load_dataset(config.dataset, data_root, subset=subset)
        data = datasets[config.dataset]
        for device in found:
            progress(f"bench {config.name} on {device}: {warmup} warm-up + {steps} timed steps")
            seconds, used = time_training_steps(config.spec, data, config.recipe, device=device,
                                                precision=precision, steps=steps, warmup=warmup)
            step = statistics.median(seconds)
            batch = min(config.recipe.batch_size, len(data.train))  # a --subset smaller than the batch: smaller steps
            epoch = math.ceil(PAPER_TRAIN_IMAGES / batch) * step  # as many of the steps timed as an epoch takes
            rows.append(BenchRow(name=config.name, device=device, precision=used, batch=batch, steps=steps,
                                 step_seconds=step, images_per_second=batch / step, epoch_seconds=epoch,
                                 run_seconds=epoch * config.recipe.epochs, epochs=config.recipe.epochs,
                                 paper_cpu_seconds=config.paper.get("cpu_seconds"),
                                 paper_gpu_seconds=config.paper.get("gpu_seconds")))
    return BenchReport(rows=rows, notes=notes)


# --------------------------------------------------------------------------- baseline comparison

@dataclass
class Timing:
    """One timed run: images trained, wall seconds, and CPU seconds of the whole process."""

    images: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_seconds


@dataclass
class BaselineReport:
    name: str
    steps: int
    batch: int
    repeats: int
    precision: str
    threads: int
    baseline: list[Timing]
    budgetnas: list[Timing]

    @property
    def baseline_images_per_second(self) -> float:
        return statistics.median(t.images_per_second for t in self.baseline)

    @property
    def budgetnas_images_per_second(self) -> float:
        return statistics.median(t.images_per_second for t in self.budgetnas)

    @property
    def ratio(self) -> float:
        return self.budgetnas_images_per_second / self.baseline_images_per_second

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in images per CPU-second: steadier than wall time on a shared machine."""
        def per_cpu(ts: list[Timing]) -> float:
            return statistics.median(t.images / t.cpu_seconds for t in ts)
        return per_cpu(self.budgetnas) / per_cpu(self.baseline)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "batch": self.batch, "repeats": self.repeats,
                "precision": self.precision, "threads": self.threads,
                "baseline_images_per_second": self.baseline_images_per_second,
                "budgetnas_images_per_second": self.budgetnas_images_per_second,
                "ratio": self.ratio, "cpu_ratio": self.cpu_ratio,
                "baseline": [asdict(t) | {"images_per_second": t.images_per_second} for t in self.baseline],
                "budgetnas": [asdict(t) | {"images_per_second": t.images_per_second} for t in self.budgetnas]}


def paper_style_model(config: RunConfig, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """The network as the paper's Algorithm 1 builds it: conv -> [BN] -> ReLU -> max-pool, then FC layers.

    Written out here (not :func:`budgetnas.model.build_model`) so that the baseline stays the
    paper's formulation whatever optimisations the builder adopts.
    """
    from torch import nn

    from budgetnas.spec import CNNSpec, FCNSpec, feature_shapes

    spec = config.spec
    if not isinstance(spec, (CNNSpec, FCNSpec)):
        raise UsageError("the paper-style baseline covers the paper's families (cnn, fcn); use budgetnas bench "
                         "for other families")
    layers: list[nn.Module] = []
    if isinstance(spec, CNNSpec):
        if spec.head != "flatten" or spec.activation != "relu":
            raise UsageError("the paper-style baseline covers the paper's CNNs: flatten head and ReLU")
        c_in = input_shape[0]
        for block in spec.conv:
            layers.append(nn.Conv2d(c_in, block.out_channels, block.kernel_size, padding=block.padding))
            if block.batch_norm:
                layers.append(nn.BatchNorm2d(block.out_channels))
            layers.append(nn.ReLU())
            if block.pool:
                layers.append(nn.MaxPool2d(block.pool))
            c_in = block.out_channels
        c, h, w = feature_shapes(spec, input_shape)[-1]
        fan_in, widths, bn = c * h * w, spec.fc, spec.fc_batch_norm
    else:
        fan_in, widths, bn = math.prod(input_shape), spec.hidden, spec.batch_norm
    layers.append(nn.Flatten())
    for width in widths:
        layers += [nn.Linear(fan_in, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    model = nn.Sequential(*layers)
    if spec.init == "xavier_normal":
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
    return model


def _paper_style_run(config: RunConfig, dataset: Any, steps: int, seed: int) -> Timing:
    """(a) the paper-style loop: DataLoader over the torchvision dataset with ToTensor, fp32, NCHW, Adam."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from budgetnas.datasets import DATASETS

    entry = DATASETS[config.dataset]
    cpu, start = _cpu_seconds(), time.perf_counter()
    torch.manual_seed(seed)
    model = paper_style_model(config, entry.input_shape, entry.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.recipe.lr)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(dataset, batch_size=config.recipe.batch_size, shuffle=True)
    running_loss, images = 0.0, 0
    model.train()
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        images += len(y)
    return Timing(images, time.perf_counter() - start, _cpu_seconds() - cpu)


def _budgetnas_run(config: RunConfig, data: Any, precision: str) -> tuple[Timing, str]:
    """(b) :func:`budgetnas.trainer.train` for one epoch over exactly ``steps`` batches."""
    from budgetnas.trainer import train

    cpu, start = _cpu_seconds(), time.perf_counter()
    result = train(config.spec, data, replace(config.recipe, epochs=1), device="cpu", precision=precision)
    return Timing(len(data.train), time.perf_counter() - start, _cpu_seconds() - cpu), result.precision


def _set_threads(threads: int | None) -> None:
    """Intra-op CPU threads for everything timed here (None keeps torch's default, one per core)."""
    import torch

    if threads is not None:
        check_threads(threads)
        torch.set_num_threads(threads)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline_comparison(ref: str = "cnn-100k", *, steps: int = 20, repeats: int = 3, precision: str = "auto",
                        data_root: str | None = None, threads: int | None = None,
                        progress: ProgressFn = _quiet) -> BaselineReport:
    """Images/second of a paper-style loop (a) and of the budgetnas trainer (b), same model and steps, on the CPU.

    a and b alternate (a, b, a, b, ...) after one untimed warm-up of each, so that a busy
    machine slows both alike; the medians and their ratio are reported.
    """
    import numpy as np
    import torch
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    from budgetnas.data import Data, Split, load_dataset, resolve_root

    if steps < 1 or repeats < 1:
        raise UsageError(f"--steps and --repeats must be >= 1, got {steps} and {repeats}")
    from budgetnas.datasets import DATASETS
    from budgetnas.paper import PAPER_DATASET

    config = resolve_config(ref)
    _set_threads(threads)
    if config.dataset != PAPER_DATASET:
        raise UsageError(f"the baseline benchmark trains on the paper's {PAPER_DATASET}; {config.name} uses "
                         f"{config.dataset}")
    entry = DATASETS[config.dataset]
    batch = config.recipe.batch_size
    full = load_dataset(entry.name, data_root)
    images = steps * batch
    if images > len(full.train):
        raise UsageError(f"--steps {steps} needs {images} images; the training split has {len(full.train)}")
    torchvision_set = getattr(datasets, entry.torchvision)(str(resolve_root(data_root)), train=True, download=False,
                                                           transform=transforms.ToTensor())
    train_idx = _train_indices(torchvision_set, config.recipe.seed)
    baseline_set = Subset(torchvision_set, train_idx.tolist())
    # (b) trains one epoch over exactly `steps` batches, then validates on one batch.
    keep = torch.from_numpy(np.random.default_rng(config.recipe.seed).permutation(len(full.train))[:images])
    data = Data(name=full.name, input_shape=full.input_shape, num_classes=full.num_classes, classes=full.classes,
                mean=full.mean, std=full.std, train=Split(full.train.x[keep], full.train.y[keep]),
                val=Split(full.val.x[:batch], full.val.y[:batch]))
    warm = Data(**{**data.__dict__, "train": Split(data.train.x[:2 * batch], data.train.y[:2 * batch])})
    progress(f"warm-up: 2 steps of each ({config.name}, batch {batch}, {torch.get_num_threads()} threads)")
    _paper_style_run(config, baseline_set, 2, config.recipe.seed)
    _, used = _budgetnas_run(config, warm, precision)
    baseline, ours = [], []
    for r in range(1, repeats + 1):
        baseline.append(_paper_style_run(config, baseline_set, steps, config.recipe.seed + r))
        progress(f"repeat {r}/{repeats}: (a) paper-style loop {baseline[-1].images_per_second:,.0f} img/s")
        timing, used = _budgetnas_run(config, data, precision)
        ours.append(timing)
        progress(f"repeat {r}/{repeats}: (b) budgetnas trainer {timing.images_per_second:,.0f} img/s ({used})")
    return BaselineReport(name=config.name, steps=steps, batch=batch, repeats=repeats, precision=used,
                          threads=torch.get_num_threads(), baseline=baseline, budgetnas=ours)


def _train_indices(torchvision_set: Any, seed: int) -> Any:
    """The paper's 90/10 split of the training set with scikit-learn (stratified, seeded): the 90% indices."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    labels = torchvision_set.targets.numpy()
    train_idx, _ = train_test_split(np.arange(len(labels)), test_size=0.1, random_state=seed, stratify=labels)
    return np.sort(train_idx)
