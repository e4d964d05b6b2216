"""Datasets, loaded once into compact in-memory tensors.

Images stay ``uint8`` (N, C, H, W) until the trainer converts them once to normalised
floats on the training device; labels are ``int64``. The training set is split 90/10
into train and validation with a stratified, seeded split (scikit-learn), as in the
paper. The test split is only read when asked for (``with_test=True``): the search never
asks, so it cannot select on test data (a torchvision dataset's test files are not read, only
checked to exist by torchvision; an npz file is read whole, its test arrays checked and dropped).

Data root: the ``root`` argument, else ``$BUDGETNAS_DATA``, else ``./data``. torchvision
datasets are read from there in torchvision's own layout; they are downloaded only when
missing, and a failed download (no network) raises :class:`DataError` saying where to
put the files.
"""

from __future__ import annotations

import math
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from budgetnas.choices import VALIDATIONS
from budgetnas.datasets import DATASETS as REGISTRY
from budgetnas.errors import DataError
from budgetnas.limits import MIN_SUBSET

DATA_ENV = "BUDGETNAS_DATA"

DATASETS = tuple(REGISTRY) + ("npz:PATH",)  # the names; each known dataset is one entry of budgetnas.datasets


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Data:
    """A dataset split into train / validation (and test when requested)."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    val: Split
    test: Split | None = None

    def require_test(self) -> Split:
        if self.test is None:
            raise DataError("this dataset was loaded without its test split; load it with with_test=True")
        return self.test


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: the given one, else $BUDGETNAS_DATA, else ./data."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("data")


def check_dataset_name(name: str) -> str:
    if name in REGISTRY or name.startswith("npz:"):
        return name
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def check_validation(validation: str) -> str:
    """``validation`` if it is one of :data:`~budgetnas.choices.VALIDATIONS` (see :func:`load_dataset`)."""
    if validation not in VALIDATIONS:
        raise DataError(f"validation must be one of {', '.join(VALIDATIONS)}, got {validation!r}")
    return validation


def load_dataset(name: str = "fashion-mnist", root: str | os.PathLike | None = None, *,
                 val_fraction: float = 0.1, seed: int = 0, with_test: bool = False,
                 subset: int | None = None, download: bool = True, validation: str = "slice") -> Data:
    """Load ``name`` into memory and split it.

    ``subset`` keeps a stratified sample of that many training images (and at most as many
    test images), for quick runs and tests. Where its validation images come from is
    ``validation``:

    ``"slice"``
        ``val_fraction`` of the subset (2,000 of a 20,000-image subset): cheap, but a noisy
        yardstick for choosing between candidates (the standard error of an accuracy near 91%
        measured on 2,000 images is 0.64 points, more than the gaps between a search's best).
    ``"full"``
        the whole dataset's validation split, the very one a run without ``subset`` (a replay,
        a finalist) validates on: 6,000 images on Fashion-MNIST, standard error 0.37 points.
        The subset's training images, as many as ``"slice"`` would train on, are drawn from the
        rest of the training split, so none of them is a validation image.

    Without ``subset`` both are the same split.
    """
    check_dataset_name(name)
    check_validation(validation)  # before the files are read: a bad value fails fast
    if name.startswith("npz:"):
        x_train, y_train, x_test, y_test, classes = _load_npz(Path(name[4:]).expanduser())
    else:
        x_train, y_train, x_test, y_test, classes = _load_torchvision(name, resolve_root(root), download, with_test)
    num_classes = len(classes)
    if subset is not None:
        if subset < MIN_SUBSET:
            raise DataError(f"subset must be at least {MIN_SUBSET} images, got {subset}")
        if subset > len(y_train):
            raise DataError(f"subset {subset:,} is larger than the {len(y_train):,} training images of {name}")
        if with_test:
            x_test, y_test = _stratified_take(x_test, y_test, subset, seed)
    if subset is not None and validation == "full":
        train_idx, val_idx = _split_indices(y_train, val_fraction, seed)  # the split of a run without subset
        keep = subset - math.ceil(subset * val_fraction)  # as many training images as "slice" keeps
        train_idx, _ = _stratified_take(train_idx, y_train[train_idx], keep, seed)
    else:
        if subset is not None:
            x_train, y_train = _stratified_take(x_train, y_train, subset, seed)
        train_idx, val_idx = _split_indices(y_train, val_fraction, seed)
    train = Split(torch.from_numpy(x_train[train_idx]), torch.from_numpy(y_train[train_idx]))
    val = Split(torch.from_numpy(x_train[val_idx]), torch.from_numpy(y_train[val_idx]))
    test = Split(torch.from_numpy(x_test), torch.from_numpy(y_test)) if with_test else None
    # Per-channel statistics of the training split only (never validation or test).
    pixels = train.x.to(torch.float32).div_(255)
    mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(max(s, 1e-6) for s in pixels.std(dim=(0, 2, 3)).tolist())
    return Data(name=name, input_shape=tuple(x_train.shape[1:]), num_classes=num_classes, classes=classes,
                mean=mean, std=std, train=train, val=val, test=test)


def dataset_info(name: str, root: str | os.PathLike | None = None) -> tuple[tuple[int, int, int], int]:
    """(input_shape, num_classes) of a dataset without keeping it in memory."""
    if name in REGISTRY:
        return REGISTRY[name].input_shape, REGISTRY[name].num_classes
    data = load_dataset(name, root, subset=None)
    return data.input_shape, data.num_classes


def _load_torchvision(name: str, root: Path, download: bool, with_test: bool):
    """Train images and labels, test images and labels (None unless ``with_test``), class names."""
    import torchvision

    entry = REGISTRY[name]
    cls, classes = getattr(torchvision.datasets, entry.torchvision), entry.classes
    where = root / entry.folder
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False) if with_test else None
    except Exception as missing:  # torchvision raises RuntimeError, AssertionError, ValueError, ...
        if not _is_not_found(missing):
            raise DataError(f"{name} files under {where} are unreadable or corrupt ({_short(missing)}); "
                            f"replace them with the original files in torchvision's layout, or point "
                            f"--data-root / ${DATA_ENV} at a folder that has them") from missing
        if not download:
            raise DataError(f"{name} not found under {where}; put the files there or set "
                            f"--data-root / ${DATA_ENV} to a folder that has them") from missing
        new_dirs = _missing_dirs(where)
        try:
            # torchvision's urlopen has no timeout: without one a firewalled network would hang
            # for minutes. A per-read timeout still lets a real (slow) download finish.
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                train = cls(str(root), train=True, download=True)
                test = cls(str(root), train=False, download=True) if with_test else None
        except Exception as failed:  # no network, proxy refusal, read-only root, ...
            _remove_if_empty(new_dirs)  # a failed download leaves no empty data/... folders behind
            raise DataError(
                f"{name} is not under {where} and could not be downloaded ({_short(failed)}); "
                f"copy the dataset files there in torchvision's layout, or point --data-root / "
                f"${DATA_ENV} at a folder that has them") from failed
    x_train, y_train = _as_nchw(train.data), np.asarray(train.targets, dtype=np.int64)
    if test is None:
        return x_train, y_train, None, None, classes
    x_test, y_test = _as_nchw(test.data), np.asarray(test.targets, dtype=np.int64)
    return x_train, y_train, x_test, y_test, classes


_DOWNLOAD_TIMEOUT_S = 15.0


def _is_not_found(exc: BaseException) -> bool:
    """torchvision's "Dataset not found" (files absent), as opposed to files that fail to parse.

    CIFAR-10 checks md5 sums and says "not found or corrupted": a download is the right answer then too.
    """
    return isinstance(exc, (RuntimeError, FileNotFoundError)) and "not found" in str(exc).lower()


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(dirs: list[Path]) -> None:
    for folder in dirs:
        if not folder.exists():
            continue  # e.g. CIFAR-10's folder: torchvision only made the root
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return


@contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _as_nchw(images) -> np.ndarray:
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 3:
        return np.ascontiguousarray(arr[:, None])
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # CIFAR: NHWC -> NCHW


def _load_npz(path: Path):
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; give npz:PATH to a file with "
                        "x_train, y_train, x_test, y_test")
    try:
        _check_npz_sizes(path)  # from the headers, before numpy allocates what they declare
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path} as an npz file ({_short(exc)})") from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks array(s) {', '.join(missing)}; it needs x_train, y_train, x_test, y_test")
    xs = [_npz_images(arrays[k], k, path) for k in ("x_train", "x_test")]
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise DataError(f"{path}: x_train images are {xs[0].shape[1:]} but x_test images are {xs[1].shape[1:]}")
    ys = [_npz_labels(arrays[k], k, path, len(x)) for k, x in (("y_train", xs[0]), ("y_test", xs[1]))]
    present = np.unique(ys[0])
    num_classes = int(present[-1]) + 1
    if num_classes > len(present):  # sparse labels would silently become extra (empty) classes
        missing = int(np.setdiff1d(np.arange(min(num_classes, len(present) + 1)), present)[0])
        raise DataError(f"{path}: y_train labels must be 0..K-1 with every class present, but its {len(present)} "
                        f"distinct labels go up to {num_classes - 1:,} (label {missing} is missing)")
    if num_classes < 2:
        raise DataError(f"{path}: y_train has a single class; labels must be 0..K-1 with K >= 2")
    if int(ys[1].max()) >= num_classes:
        raise DataError(f"{path}: y_test has label {int(ys[1].max())} not seen in y_train (0..{num_classes - 1})")
    return xs[0], ys[0], xs[1], ys[1], tuple(str(i) for i in range(num_classes))


def _check_npz_sizes(path: Path) -> None:
    """Refuse arrays whose declared size exceeds what the file stores, or all of them the free memory."""
    import zipfile

    from budgetnas.limits import available_memory, gib

    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(member)
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size:
                raise DataError(f"{path}: {info.filename.removesuffix('.npy')} declares shape {shape} "
                                f"({declared:,} bytes) but the file stores only {info.file_size:,}; it is corrupt")
            total += declared
    if total > available_memory():
        raise DataError(f"{path} needs {gib(total)} of memory, more than the {gib(available_memory())} available")


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {key} has dtype {x.dtype}; images must be uint8 (0..255)")
    if x.ndim == 3:
        return np.ascontiguousarray(x[:, None])
    if x.ndim == 4:
        if x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
            return np.ascontiguousarray(x)  # NCHW
        if x.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC
    raise DataError(f"{path}: {key} has shape {x.shape}; images must be NHW, NCHW or NHWC")


def _npz_labels(y: np.ndarray, key: str, path: Path, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} has dtype {y.dtype}; labels must be integers")
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {key} has shape {y.shape}; expected ({n},), one label per image")
    if n == 0:
        raise DataError(f"{path}: {key} is empty")
    if y.min() < 0:
        raise DataError(f"{path}: {key} has negative label {int(y.min())}; labels must be 0..K-1")
    return y.astype(np.int64)


def _split_indices(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    n_val = math.ceil(val_fraction * len(y))
    stratify = y if _stratifiable(counts, n_val, len(y) - n_val) else None
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=stratify)
    return np.sort(train_idx), np.sort(val_idx)


def _stratified_take(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if n >= len(counts) and _stratifiable(counts, n, len(y) - n) else None
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=stratify)
    keep = np.sort(keep)
    return x[keep], y[keep]


def _stratifiable(counts: np.ndarray, *sizes: int) -> bool:
    """Whether scikit-learn can split labels with these per-label ``counts`` into parts of ``sizes``,
    stratified: every present class needs two images, every part room for one of each. A tiny
    subset (20 images, 10 classes: a validation slice of 2) cannot be; it is split at random."""
    present = counts[counts > 0]
    return bool(present.min() >= 2 and min(sizes) >= len(present))


def _short(exc: BaseException) -> str:
    """One line from an exception: the innermost reason, e.g. 'Name or service not known'."""
    text = " ".join(str(exc).split())
    # torchvision's download error lists every mirror it tried; the reason is in <urlopen error ...>.
    reason = re.search(r"<urlopen error (.*?)>", text)
    if reason:
        text = f"download failed: {reason.group(1)}"
    return (text or type(exc).__name__)[:200]
