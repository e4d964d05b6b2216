"""The datasets budgetnas knows by name: one entry each, so a new dataset is one entry here.

Each :class:`Dataset` says where torchvision keeps it (class and folder under the data root),
its input shape and class names (so a study's settings can be checked and a model built
without loading any images), and the paper's reference figures when the paper reported
some for it (Fashion-MNIST only): reports and sweeps draw the paper's models beside ours
only there. Loading lives in :mod:`budgetnas.data`; this module is torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetnas.paper import PAPER_DATASET, PAPER_MODELS, PaperModel, compared_with


@dataclass(frozen=True)
class Dataset:
    name: str
    torchvision: str  # class name in torchvision.datasets
    folder: str  # what torchvision reads under the data root
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    reference: tuple[PaperModel, ...] = ()  # the paper's models with the figures it reported on this dataset

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("fashion-mnist", "FashionMNIST", "FashionMNIST/raw", (1, 28, 28),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            reference=PAPER_MODELS),
    Dataset("mnist", "MNIST", "MNIST/raw", (1, 28, 28), _DIGITS),
    Dataset("kmnist", "KMNIST", "KMNIST/raw", (1, 28, 28), ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
    Dataset("cifar10", "CIFAR10", "cifar-10-batches-py", (3, 32, 32),
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
)}
assert DATASETS[PAPER_DATASET].reference  # the paper's figures belong to the paper's dataset


def reference_models(dataset: str, family: str | None = None) -> tuple[PaperModel, ...]:
    """The paper's models ``family`` is compared with (its ``paper_family``: the paper's CNNs for cnn and
    mbconv), with figures on ``dataset`` (none for other datasets and npz files)."""
    entry = DATASETS.get(dataset)
    return compared_with(entry.reference if entry else (), family)
