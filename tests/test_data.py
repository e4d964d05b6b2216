"""Data loading: the real Fashion-MNIST files, the seeded stratified split, npz datasets and offline errors.

Everything here reads real files (the shared Fashion-MNIST copy, or npz files written by the test);
nothing is downloaded. Bad inputs must raise :class:`DataError` with a one-line message that says
what is wrong and what to do.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from budgetnas import data as data_module
from budgetnas.data import Data, load_dataset
from budgetnas.errors import DataError
from budgetnas.model import build_model
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec
from budgetnas.trainer import Recipe, train


@pytest.fixture(scope="module")
def fmnist(data_root: Path) -> Data:
    """Full Fashion-MNIST train split (54,000 / 6,000) plus test, loaded once for this module."""
    return load_dataset("fashion-mnist", data_root, with_test=True)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --- the real Fashion-MNIST files ----------------------------------------------------------------


def test_fashion_mnist_shapes_dtypes_and_split_sizes(fmnist: Data):
    assert fmnist.input_shape == (1, 28, 28) and fmnist.num_classes == 10
    assert fmnist.classes[0] == "T-shirt/top" and fmnist.classes[9] == "Ankle boot"
    assert (len(fmnist.train), len(fmnist.val), len(fmnist.test)) == (54_000, 6_000, 10_000)
    for split in (fmnist.train, fmnist.val, fmnist.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert int(split.y.min()) == 0 and int(split.y.max()) == 9
    # Normalisation statistics come from the training split and look like Fashion-MNIST's.
    assert 0.25 < fmnist.mean[0] < 0.32 and 0.30 < fmnist.std[0] < 0.38
    train_mean = fmnist.train.x.float().div(255).mean().item()
    assert fmnist.mean[0] == pytest.approx(train_mean, abs=1e-4)


def test_split_is_stratified_and_disjoint(fmnist: Data):
    # Kaggle's Fashion-MNIST has 6,000 training images per class: 5,400 train / 600 val each.
    assert torch.bincount(fmnist.train.y).tolist() == [5_400] * 10
    assert torch.bincount(fmnist.val.y).tolist() == [600] * 10
    assert torch.bincount(fmnist.test.y).tolist() == [1_000] * 10


def test_split_partitions_the_training_file(tmp_path: Path):
    """Every training image lands in exactly one of train / validation (images carry their index)."""
    n = 1000
    arrays = _arrays(n_train=n)
    arrays["x_train"][:, 0, 0], arrays["x_train"][:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    data = load_dataset(_npz(tmp_path, **arrays), seed=7)

    def index(split):
        return (split.x[:, 0, 0, 0].long() * 256 + split.x[:, 0, 0, 1].long()).tolist()

    train_idx, val_idx = index(data.train), index(data.val)
    assert len(val_idx) == n // 10 and not set(train_idx) & set(val_idx)
    assert sorted(train_idx + val_idx) == list(range(n))
    # Labels travel with their images.
    assert data.val.y.tolist() == [i % 10 for i in val_idx]


def test_data_root_from_env_equals_option(data_root: Path, monkeypatch):
    monkeypatch.setenv("BUDGETNAS_DATA", str(data_root))
    from_env = load_dataset("fashion-mnist", subset=500)
    monkeypatch.setenv("BUDGETNAS_DATA", "/nonexistent-budgetnas-root")
    from_option = load_dataset("fashion-mnist", root=data_root, subset=500)  # the option wins over the env
    assert torch.equal(from_env.train.x, from_option.train.x)
    assert torch.equal(from_env.val.y, from_option.val.y)


def test_split_is_deterministic_for_a_seed_and_differs_between_seeds(data_root: Path):
    a = load_dataset("fashion-mnist", data_root, subset=2000, seed=3)
    b = load_dataset("fashion-mnist", data_root, subset=2000, seed=3)
    c = load_dataset("fashion-mnist", data_root, subset=2000, seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.val.x, c.val.x)


def test_subset_is_stratified_and_test_only_on_request(data_root: Path):
    small = load_dataset("fashion-mnist", data_root, subset=1000)
    assert len(small.train) + len(small.val) == 1000
    assert torch.bincount(small.train.y).tolist() == [90] * 10
    assert torch.bincount(small.val.y).tolist() == [10] * 10
    assert small.test is None
    with pytest.raises(DataError, match="with_test=True"):
        small.require_test()
    with_test = load_dataset("fashion-mnist", data_root, subset=1000, with_test=True)
    assert len(with_test.test) == 1000 and torch.bincount(with_test.test.y).tolist() == [100] * 10
    with pytest.raises(DataError, match="at least 20"):
        load_dataset("fashion-mnist", data_root, subset=5)


@pytest.mark.parametrize("subset", [20, 50, 59_995])
def test_subsets_too_small_to_stratify_are_split_at_random(data_root: Path, subset: int):
    """20 images hold a validation slice of 2 (10 classes cannot each have one): scikit-learn refuses a
    stratified split then, so the split is a seeded random one instead of an error."""
    data = load_dataset("fashion-mnist", data_root, subset=subset)
    assert len(data.train) + len(data.val) == subset and len(data.val) == -(-subset // 10)
    again = load_dataset("fashion-mnist", data_root, subset=subset)
    assert torch.equal(data.val.y, again.val.y) and torch.equal(data.train.x, again.train.x)


def test_the_test_files_are_not_read_unless_asked_for(tmp_path: Path, data_root: Path):
    """The search loads without the test split: it never parses the test files (torchvision only checks
    that they exist), so nothing of the test split is in memory to be selected on; a replay reads them."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to(data_root / "FashionMNIST" / "raw" / name)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"not an idx file")
    data = load_dataset("fashion-mnist", tmp_path, subset=1000, download=False)
    reference = load_dataset("fashion-mnist", data_root, subset=1000)
    assert data.test is None and torch.equal(data.val.x, reference.val.x) and data.mean == reference.mean
    with pytest.raises(DataError, match="unreadable or corrupt"):
        load_dataset("fashion-mnist", tmp_path, subset=1000, download=False, with_test=True)


def test_full_validation_is_the_whole_split_and_training_avoids_it(fmnist: Data, data_root: Path):
    """``validation="full"``: the search's trials validate on exactly the split a replay validates on,
    train on as many images as a slice would, stratified, and never on a validation image."""
    sliced = load_dataset("fashion-mnist", data_root, subset=2000)
    full = load_dataset("fashion-mnist", data_root, subset=2000, validation="full")
    assert len(full.train) == len(sliced.train) == 1800 and len(sliced.val) == 200
    assert torch.equal(full.val.x, fmnist.val.x) and torch.equal(full.val.y, fmnist.val.y)
    assert torch.bincount(full.train.y).tolist() == [180] * 10
    val_images = {bytes(x.numpy().tobytes()) for x in fmnist.val.x}
    train_images = {bytes(x.numpy().tobytes()) for x in fmnist.train.x}
    # every training image of the search comes from the replay's training split (Fashion-MNIST holds a
    # few byte-identical images, so membership is checked against the training split, not only val)
    assert all(bytes(x.numpy().tobytes()) in train_images for x in full.train.x)
    assert sum(bytes(x.numpy().tobytes()) in val_images for x in full.train.x) <= 1  # a duplicate at most
    assert full.mean != fmnist.mean  # normalised with its own training images' statistics, as any run
    same = load_dataset("fashion-mnist", data_root, subset=2000, validation="full")
    assert torch.equal(same.train.x, full.train.x)  # deterministic for a seed
    with pytest.raises(DataError, match="validation must be one of slice, full"):
        load_dataset("fashion-mnist", data_root, subset=2000, validation="all")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataError) as exc:
        load_dataset("imagenet")
    assert "fashion-mnist" in _one_line(exc) and "npz:PATH" in str(exc.value)


# --- offline behaviour -------------------------------------------------------------------------


def test_missing_files_offline_fail_fast_and_say_where(tmp_path: Path):
    """No network here: the download attempt fails and the message says where the files go."""
    start = time.perf_counter()
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", tmp_path)
    message = _one_line(exc)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "--data-root" in message and "BUDGETNAS_DATA" in message
    # Not a timing assertion on speed, only a guard against hanging for minutes on a dead network.
    assert time.perf_counter() - start < 120


def test_failed_download_leaves_no_empty_folders(tmp_path: Path):
    root = tmp_path / "new-root"
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(DataError):
            load_dataset(name, root)
        assert not root.exists(), list(root.rglob("*"))


def test_missing_files_without_download_say_where(tmp_path: Path):
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path, download=False)
    message = _one_line(exc)
    assert str(tmp_path / "MNIST" / "raw") in message and "BUDGETNAS_DATA" in message


def test_download_on_a_silent_network_times_out(tmp_path: Path, monkeypatch):
    """A firewalled network that accepts connections but never answers must not hang the run.

    A real local server plays the dead mirror; the download timeout is shortened to keep the test quick.
    """
    from torchvision.datasets import FashionMNIST

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    monkeypatch.setattr(FashionMNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"])
    monkeypatch.setattr(data_module, "_DOWNLOAD_TIMEOUT_S", 1.0)
    try:
        start = time.perf_counter()
        with pytest.raises(DataError) as exc:
            load_dataset("fashion-mnist", tmp_path)
        assert time.perf_counter() - start < 60
        assert "could not be downloaded" in _one_line(exc) and "timed out" in str(exc.value)
        assert accepted, "the download never reached the silent server"
        assert socket.getdefaulttimeout() is None  # the timeout is restored afterwards
    finally:
        server.close()


def test_corrupt_torchvision_files_are_reported_as_corrupt(tmp_path: Path, data_root: Path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "FashionMNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes()[:1000])  # truncated copies
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", tmp_path)
    assert "corrupt" in _one_line(exc) and str(raw) in str(exc.value)
    for f in raw.iterdir():
        f.write_bytes(b"not an idx file\n")  # garbage: torchvision raises a bare AssertionError
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("fashion-mnist", tmp_path)


# --- npz datasets ------------------------------------------------------------------------------


def _arrays(n_train=200, n_test=60, shape=(28, 28), classes=10, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.int64) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.int64) % classes,
    }


def _npz(tmp_path: Path, name: str = "d.npz", **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_tiny_npz_fixture_is_real_fashion_mnist(tiny_npz: Path):
    data = load_dataset(f"npz:{tiny_npz}", with_test=True)
    assert (len(data.train), len(data.val), len(data.test)) == (900, 100, 300)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.classes == tuple(str(i) for i in range(10))


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
def test_npz_image_layouts_give_the_same_nchw_tensors(tmp_path: Path, layout: str):
    base = _arrays(shape=(28, 28))
    arrays = dict(base)
    if layout == "NCHW":
        arrays["x_train"], arrays["x_test"] = base["x_train"][:, None], base["x_test"][:, None]
    elif layout == "NHWC":
        arrays["x_train"], arrays["x_test"] = base["x_train"][..., None], base["x_test"][..., None]
    data = load_dataset(_npz(tmp_path, **arrays), with_test=True)
    reference = load_dataset(_npz(tmp_path, "ref.npz", **base), with_test=True)
    assert data.input_shape == (1, 28, 28)
    assert torch.equal(data.train.x, reference.train.x) and torch.equal(data.test.x, reference.test.x)


def test_npz_nhwc_colour_images_are_transposed(tmp_path: Path):
    arrays = _arrays(shape=(32, 32, 3))
    data = load_dataset(_npz(tmp_path, **arrays), with_test=True)
    assert data.input_shape == (3, 32, 32)
    assert torch.equal(data.test.x[0], torch.from_numpy(arrays["x_test"][0].transpose(2, 0, 1)))


def _bad(**changes) -> dict[str, np.ndarray]:
    arrays = _arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


BAD_NPZ = {
    "float images": (_bad(x_train=np.zeros((200, 28, 28), np.float32)), "x_train has dtype float32"),
    "int64 images": (_bad(x_test=np.zeros((60, 28, 28), np.int64)), "must be uint8"),
    "2-d images": (_bad(x_train=np.zeros((200, 784), np.uint8)), "must be NHW, NCHW or NHWC"),
    "5-d images": (_bad(x_train=np.zeros((200, 1, 1, 28, 28), np.uint8)), "must be NHW, NCHW or NHWC"),
    "train/test image shapes differ": (_bad(x_test=np.zeros((60, 32, 32), np.uint8)), "x_test images are"),
    "fewer labels than images": (_bad(y_train=np.zeros(150, np.int64)), "one label per image"),
    "2-d labels": (_bad(y_test=np.zeros((60, 1), np.int64)), "one label per image"),
    "negative labels": (_bad(y_train=np.arange(200) % 10 - 1), "negative label -1"),
    "float labels": (_bad(y_train=(np.arange(200) % 10).astype(np.float64)), "labels must be integers"),
    "single class": (_bad(y_train=np.zeros(200, np.int64)), "single class"),
    "test label unseen in train": (_bad(y_test=np.full(60, 12)), "not seen in y_train"),
    "missing keys": (_bad(y_test=None, x_test=None), "lacks array(s) x_test, y_test"),
    "empty": (_bad(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.int64)), "empty"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_raises_one_line_data_error(tmp_path: Path, case: str):
    arrays, expected = BAD_NPZ[case]
    with pytest.raises(DataError) as exc:
        load_dataset(_npz(tmp_path, **arrays))
    message = _one_line(exc)
    assert expected in message, message
    assert str(tmp_path / "d.npz") in message  # names the file


def test_corrupt_or_missing_npz_file(tmp_path: Path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(DataError) as exc:
        load_dataset(f"npz:{corrupt}")
    assert "cannot read" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    assert "does not exist" in _one_line(exc)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, **_bad(y_train=np.array([object()] * 200)))
    with pytest.raises(DataError) as exc:  # object arrays need pickle, which we never allow
        load_dataset(f"npz:{pickled}")
    _one_line(exc)


# --- unusual input sizes train end to end ------------------------------------------------------


def _learnable(shape, n_train=400, n_test=100, seed=0) -> dict[str, np.ndarray]:
    """Two classes a small net separates quickly: bright images versus dark ones."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 2
        x = rng.integers(0, 100, (n, *shape)).astype(np.uint8) + (y * 120).astype(np.uint8).reshape(-1, *[1] * len(shape))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.int64)
    return arrays


@pytest.mark.parametrize("shape, spec", [
    ((32, 32, 3), CNNSpec(conv=(ConvBlock(8), ConvBlock(8), ConvBlock(8), ConvBlock(8)), fc=(16,))),
    ((8, 8), CNNSpec(conv=(ConvBlock(8), ConvBlock(8), ConvBlock(8)), fc=(8,))),  # pools 8 -> 4 -> 2 -> 1
    ((8, 8), FCNSpec(hidden=(16,))),
], ids=["cifar10-shaped-nhwc", "tiny-1x8x8-cnn", "tiny-1x8x8-fcn"])
def test_unusual_input_sizes_load_and_train(tmp_path: Path, shape, spec):
    data = load_dataset(_npz(tmp_path, **_learnable(shape)), with_test=True)
    assert data.input_shape == ((3, 32, 32) if len(shape) == 3 else (1, 8, 8))
    assert build_model(spec, data.input_shape, data.num_classes)(data.val.x[:2].float()).shape == (2, 2)
    result = train(spec, data, Recipe(epochs=4, batch_size=32, lr=3e-3), device="cpu", precision="fp32",
                   evaluate_test=True)
    assert result.val_accuracy >= 0.9 and result.test_accuracy >= 0.9
