"""Shared fixtures: the data root, a tiny real Fashion-MNIST slice, and a CLI runner.

Tests never touch the network: they read Fashion-MNIST from $BUDGETNAS_DATA (CI points it
at ../shared/data) and cut small stratified slices of it into npz files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("BUDGETNAS_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.exit(f"Fashion-MNIST not found under {root}: set BUDGETNAS_DATA to a folder holding "
                    "FashionMNIST/raw (see README, 'Data')", returncode=4)
    return root.resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="session", autouse=True)
def _data_env(data_root: Path):
    os.environ["BUDGETNAS_DATA"] = str(data_root)
    yield


def make_slice_npz(path: Path, root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write a stratified slice of real Fashion-MNIST as an npz dataset."""
    from torchvision.datasets import FashionMNIST

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ds = FashionMNIST(str(root), train=(split == "train"), download=False)
        x, y = ds.data.numpy(), ds.targets.numpy()
        keep = np.concatenate([rng.choice(np.flatnonzero(y == c), n // 10, replace=False) for c in range(10)])
        keep.sort()
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep].astype(np.int64)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory, data_root: Path) -> Path:
    """1,000 training and 300 test images of real Fashion-MNIST (a few seconds a trial at most)."""
    return make_slice_npz(tmp_path_factory.mktemp("data") / "fmnist-tiny.npz", data_root, 1000, 300)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m budgetnas ARGS`` in a real subprocess and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "budgetnas", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


def pytest_collection_modifyitems(items):
    """Tests that run the real CLI (the ``cli`` fixture) are marked ``cli``: each call starts Python and
    torch in a subprocess (seconds), so the quick tier (``-m "not slow and not cli"``) leaves them out."""
    for item in items:
        if "cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)


@pytest.fixture
def cli(tmp_path):
    """``cli(*args)`` runs the real CLI in a subprocess with cwd = a fresh temporary folder."""
    def run(*args, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        return run_cli(*args, **kwargs)
    return run


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int = 2, contains: str = "") -> str:
    """The contract for bad input: exit code, a single 'error:' line on stderr, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("error: "), proc.stderr
    assert contains.lower() in last.lower(), (contains, last)
    return last
