"""Bad input, everywhere: one table, run through the real CLI in subprocesses.

Every row must give exit code 2, exactly one ``error: ...`` line on stderr that names the problem,
no traceback, nothing on stdout, and leave any study it touched unchanged (trials and study
attributes are compared before and after; a storage that did not exist must not gain trials).

Placeholders in a row's arguments are filled per test:
``{npz}`` the tiny real Fashion-MNIST npz; ``{made}`` a copy of a study with trained, rejected and
failed trials (``tiny-cnn``, trials 0-2 complete, 3 rejected, 4 failed); ``{empty}`` a study with no
finished trial; ``{two}`` a storage with two studies; ``{fresh}`` an SQLite URL whose file does not
exist yet; ``{file}`` a regular file (so ``{file}/sub`` is a folder nobody, not even root, can create);
``{tmp}`` the test's folder; ``{bad:NAME}`` a broken file made by ``BAD_FILES[NAME]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from studyfactory import BUDGET, make_study

pytestmark = pytest.mark.cli  # every row runs the real CLI in a subprocess (the quick tier leaves them out)

SECRET = "s3cret-pw"


# --- broken files a row can ask for with {bad:NAME} ----------------------------------------------

def _npz(path: Path, **changes) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (200, 28, 28), dtype=np.uint8), "y_train": np.arange(200) % 10,
              "x_test": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), "y_test": np.arange(50) % 10}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _npz_declaring_huge_shape(path: Path) -> None:
    """A valid npz except that x_train's header declares (10^9, 28, 28): 730 GiB in a small file."""
    import io
    import zipfile

    _npz(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["x_train.npy"] = members["x_train.npy"].replace(b"(200, 28, 28)", b"(1000000000, 28, 28)", 1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def _corrupt_root(path: Path) -> None:
    raw = path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03 truncated")


def _text(content: str):
    return lambda path: path.write_text(content)


GOOD_SPEC = """
[spec]
family = "cnn"
fc = [8]
[[spec.conv]]
out_channels = 4
"""

BAD_FILES = {
    "npz-float-images.npz": lambda p: _npz(p, x_train=np.zeros((200, 28, 28), np.float32)),
    "npz-2d-images.npz": lambda p: _npz(p, x_train=np.zeros((200, 784), np.uint8)),
    "npz-label-count.npz": lambda p: _npz(p, y_train=np.zeros(150, np.int64)),
    "npz-negative-labels.npz": lambda p: _npz(p, y_train=np.arange(200) % 10 - 1),
    "npz-float-labels.npz": lambda p: _npz(p, y_test=np.zeros(50, np.float32)),
    "npz-missing-keys.npz": lambda p: _npz(p, x_test=None, y_test=None),
    "npz-corrupt.npz": lambda p: p.write_bytes(b"PK\x03\x04 not a zip archive at all"),
    "npz-8x8.npz": lambda p: _npz(p, x_train=np.zeros((200, 8, 8), np.uint8), x_test=np.zeros((50, 8, 8), np.uint8)),
    "corrupt-root": _corrupt_root,
    "unknown-key.toml": _text('name = "x"\ncolour = "blue"\n' + GOOD_SPEC),
    "wrong-type.toml": _text('name = "x"\n' + GOOD_SPEC + '[recipe]\nepochs = "ten"\n'),
    "not-toml.toml": _text('name = "x\n[spec\n'),
    "zero-channels.toml": _text('[spec]\nfamily = "cnn"\n[[spec.conv]]\nout_channels = 0\n'),
    "unknown-family.toml": _text('[spec]\nfamily = "rnn"\nhidden = [10]\n'),
    "family-list.toml": _text('[spec]\nfamily = ["cnn"]\n'),
    "missing-spec-key.toml": _text('[spec]\nfamily = "cnn"\nfc = [10]\n'),
    "fc-not-a-list.toml": _text('[spec]\nfamily = "cnn"\nfc = 5\n[[spec.conv]]\nout_channels = 4\n'),
    "float-stride.toml": _text('[spec]\nfamily = "mbconv"\nstem = 8\n[[spec.stages]]\nblock = "plain"\n'
                               'out_channels = 8\nstride = 2.0\n'),
    "paper-weights-text.toml": _text(GOOD_SPEC + '[paper]\nweights = "n/a"\n'),
    "unknown-conv-key.toml": _text('[spec]\nfamily = "cnn"\n[[spec.conv]]\nout_channels = 4\nstride = 2\n'),
    "unknown-dataset.toml": _text('dataset = "imagenet"\n' + GOOD_SPEC),
    "four-pools.toml": _text('[spec]\nfamily = "cnn"\n' + '[[spec.conv]]\nout_channels = 4\npool = 2\n' * 4),
    "random-bytes.log": lambda p: p.write_bytes(bytes(range(256)) * 16),
    "op-code-only.log": lambda p: p.write_bytes(b'{"op_code": 0}\n'),  # JSON, an operation, but no study name
    # sizes that must be refused before anything is allocated
    "width-1e9.toml": _text('[spec]\nfamily = "cnn"\n[[spec.conv]]\nout_channels = 1000000000\n'),
    "width-1e20.toml": _text('[spec]\nfamily = "fcn"\nhidden = [100000000000000000000]\n'),
    "wide-300GB.toml": _text('[spec]\nfamily = "cnn"\n' + '[[spec.conv]]\nout_channels = 65536\npool = 0\n' * 3),
    "latin1.toml": lambda p: p.write_bytes('name = "caf\u00e9"\n[spec]\nfamily = "fcn"\nhidden = [8]\n'.encode("latin-1")),
    "npz-huge-shape.npz": _npz_declaring_huge_shape,
    "npz-huge-label.npz": lambda p: _npz(p, y_train=np.where(np.arange(200) == 0, 1_000_000, np.arange(200) % 10)),
    "npz-sparse-labels.npz": lambda p: _npz(p, y_train=np.arange(200) % 10 * 100, y_test=np.arange(50) % 10 * 100),
    "nested.toml": _text("a = " + "[" * 3000 + "]" * 3000 + "\n"),  # tomllib recurses once per level
    "fractional-trials.toml": _text("trials = 1.5\n"),  # --trials 1.5 is refused; the file must not cut it to 1
    "unknown-op.log": lambda p: p.write_bytes(  # Optuna asserts "Should not reach" on an unknown op_code
        b'{"op_code":0,"worker_id":"w","study_name":"tiny-cnn","directions":[1]}\n{"op_code":99}\n'),
    "torn.log": lambda p: p.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"tiny-cnn","directions":[1]}\n'
                                        b'{"op_code":4,"worker_id":"w","st'),
}


# --- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    contains: str  # the error line must contain this (case-insensitive), usually the bad value itself
    study: str | None = None  # "made" / "empty" / "two" / "fresh": compare the storage before and after


def row(*args: str, contains: str, study: str | None = None) -> Row:
    return Row(tuple(args), contains, study)


# A search that would finish in seconds if the bad input slipped through.
SEARCH = ("search", "--dataset", "npz:{npz}", "--trials", "1", "--epochs", "1", "--device", "cpu",
          "--storage", "{fresh}")
S100 = SEARCH + ("--budget", "100k")
RESUME = ("search", "--dataset", "npz:{npz}", "--trials", "6", "--epochs", "2", "--device", "cpu",
          "--storage", "{made}", "--study", "tiny-cnn")
REPLAY = ("replay", "--storage", "{made}", "--device", "cpu", "--epochs", "1")
CPU1 = ("--epochs", "1", "--device", "cpu")

ROWS = {
    # budgets
    "budget-letters": row(*SEARCH, "--budget", "10x", contains="'10x'"),
    "budget-zero": row(*SEARCH, "--budget", "0", contains="positive"),
    "budget-negative": row(*SEARCH, "--budget=-5k", contains="-5k"),
    "budget-missing": row(*SEARCH, contains="--budget"),
    "budget-nothing-fits-cnn": row(*SEARCH, "--budget", "20", contains="20", study="fresh"),
    "budget-nothing-fits-fcn": row(*SEARCH, "--family", "fcn", "--budget", "500", contains="500", study="fresh"),
    # unknown names
    "unknown-family": row(*S100, "--family", "rnn", contains="rnn"),
    "unknown-dataset": row(*S100, "--dataset", "imagenet", contains="imagenet"),
    "unknown-sampler": row(*S100, "--sampler", "cmaes", contains="cmaes"),
    "unknown-objective": row(*S100, "--objectives", "accuracy,beauty", contains="beauty", study="fresh"),
    "unknown-device": row(*S100, "--device", "tpu", contains="tpu"),
    "unknown-precision": row(*S100, "--precision", "fp8", contains="fp8"),
    "missing-cuda": row(*S100, "--device", "cuda", contains="cuda", study="fresh"),
    # other search options
    "timeout-malformed": row(*S100, "--timeout", "5x", contains="5x"),
    "trials-negative": row(*S100, "--trials=-1", contains="trials", study="fresh"),
    "epochs-zero": row(*S100, "--epochs", "0", contains="epochs", study="fresh"),
    "subset-too-small": row(*S100, "--subset", "3", contains="subset", study="fresh"),
    "workers-zero": row(*S100, "--workers", "0", contains="workers", study="fresh"),
    "workers-on-sqlite": row(*S100, "--workers", "2", contains="sqlite", study="fresh"),
    # data roots and npz files
    "data-root-missing": row(*S100, "--dataset", "fashion-mnist", "--data-root", "{tmp}/nowhere",
                             contains="BUDGETNAS_DATA", study="fresh"),
    "data-root-corrupt": row(*S100, "--dataset", "fashion-mnist", "--data-root", "{bad:corrupt-root}",
                             contains="corrupt", study="fresh"),
    "data-root-is-a-file": row(*S100, "--dataset", "fashion-mnist", "--data-root", "{file}",
                               contains="--data-root", study="fresh"),
    "npz-missing-file": row(*S100, "--dataset", "npz:{tmp}/absent.npz", contains="does not exist", study="fresh"),
    "npz-corrupt": row(*S100, "--dataset", "npz:{bad:npz-corrupt.npz}", contains="cannot read", study="fresh"),
    "npz-float-images": row(*S100, "--dataset", "npz:{bad:npz-float-images.npz}", contains="uint8", study="fresh"),
    "npz-wrong-shape": row(*S100, "--dataset", "npz:{bad:npz-2d-images.npz}", contains="NHWC", study="fresh"),
    "npz-negative-labels": row(*S100, "--dataset", "npz:{bad:npz-negative-labels.npz}", contains="negative",
                               study="fresh"),
    "npz-huge-shape": row(*S100, "--dataset", "npz:{bad:npz-huge-shape.npz}", contains="declares shape",
                          study="fresh"),
    "npz-huge-label": row(*S100, "--dataset", "npz:{bad:npz-huge-label.npz}", contains="labels", study="fresh"),
    "npz-sparse-labels": row(*S100, "--dataset", "npz:{bad:npz-sparse-labels.npz}", contains="label 1 is missing",
                             study="fresh"),
    "subset-larger-than-data": row(*S100, "--subset", "5000", contains="larger than", study="fresh"),
    # refused before the study is created: a study made first would keep the bad value and refuse the fix
    "epochs-above-limit": row(*S100[:6], "200000", *S100[7:], contains="100,000", study="fresh"),
    "threads-huge": row(*S100, "--threads", "1000000000", contains="1,024", study="fresh"),
    "study-control-characters": row(*S100, "--study", "a\x1b[31mred", contains="printable", study="fresh"),
    "config-nested-too-deeply": row(*S100, "--config", "{bad:nested.toml}", contains="nest too deeply", study="fresh"),
    "config-fractional-trials": row(*S100, "--config", "{bad:fractional-trials.toml}", contains="1.5",
                                    study="fresh"),
    "config-dev-zero": row(*S100, "--config", "/dev/zero", contains="not a regular file", study="fresh"),
    "count-nested-too-deeply": row("count", "{bad:nested.toml}", contains="nest too deeply"),
    "enqueue-nested-too-deeply": row(*S100, "--enqueue", "{bad:nested.toml}", contains="nest too deeply",
                                     study="fresh"),
    # sizes, seeds and names refused before anything is allocated or created
    "budget-1000G": row(*SEARCH, "--budget", "1000G", contains="100,000,000", study="fresh"),
    "budget-full-width-digits": row(*SEARCH, "--budget", "\uff11\uff10\uff10k", contains="ASCII"),
    "seed-negative": row(*S100, "--seed=-1", contains="--seed", study="fresh"),
    "seed-2-64": row(*S100, "--seed", str(2**64), contains="--seed", study="fresh"),
    "storage-empty": row(*SEARCH[:-1], "", "--budget", "100k", contains="empty"),
    "study-empty": row(*S100, "--study", "", contains="--study", study="fresh"),
    "study-500-chars": row(*S100, "--study", "s" * 500, contains="at most 100", study="fresh"),
    "report-storage-empty": row("report", "--storage", "", contains="empty"),
    "count-width-1e9": row("count", "{bad:width-1e9.toml}", contains="65,536"),
    "count-width-1e20": row("count", "{bad:width-1e20.toml}", contains="65,536"),
    "count-needs-300GB": row("count", "{bad:wide-300GB.toml}", contains="memory"),
    "count-batch-1e9": row("count", "cnn-10k", "--batch", str(10**9), contains="memory"),
    "count-dev-zero": row("count", "/dev/zero", contains="not a regular file"),
    "count-not-utf8": row("count", "{bad:latin1.toml}", contains="UTF-8"),
    "train-width-1e9": row("train", "{bad:width-1e9.toml}", "--dataset", "npz:{npz}", *CPU1, contains="65,536"),
    "train-seed-2-64": row("train", "cnn-10k", "--dataset", "npz:{npz}", *CPU1, "--seed", str(2**64),
                           contains="seed"),
    "search-enqueue-not-utf8": row(*S100, "--enqueue", "{bad:latin1.toml}", contains="UTF-8", study="fresh"),
    "npz-float-labels": row(*S100, "--dataset", "npz:{bad:npz-float-labels.npz}", contains="integers",
                            study="fresh"),
    # storages
    "storage-unknown-scheme": row(*SEARCH[:-1], "foo://bar", "--budget", "100k", contains="foo://bar"),
    "storage-not-a-url": row(*SEARCH[:-1], "results.db", "--budget", "100k", contains="results.db"),
    "storage-journal-without-path": row(*SEARCH[:-1], "journal:", "--budget", "100k", contains="journal"),
    "storage-unreachable-postgres": row(*SEARCH[:-1], f"postgresql://nas:{SECRET}@127.0.0.1:9/nas",
                                        "--budget", "100k", contains="127.0.0.1"),
    "storage-password-in-query": row(*SEARCH[:-1], f"postgresql://nas@127.0.0.1:9/nas?password={SECRET}",
                                     "--budget", "100k", contains="127.0.0.1"),
    "storage-sqlite-folder-missing": row(*SEARCH[:-1], "sqlite:///{tmp}/no/such/folder/s.db", "--budget", "100k",
                                         contains="no/such/folder"),
    "report-journal-unreplayable": row("report", "--storage", "journal:{bad:op-code-only.log}",
                                       contains="cannot replay"),
    "storage-journal-random-bytes": row(*SEARCH[:-1], "journal:{bad:random-bytes.log}", "--budget", "100k",
                                         contains="not an Optuna journal"),
    "storage-journal-torn": row(*SEARCH[:-1], "journal:{bad:torn.log}", "--budget", "100k", contains="repair journal:"),
    "report-journal-torn": row("report", "--storage", "journal:{bad:torn.log}", contains="partial last record"),
    "report-journal-unknown-operation": row("report", "--storage", "journal:{bad:unknown-op.log}",
                                            contains="unreadable line(s) 2"),
    "storage-journal-under-a-file": row(*SEARCH[:-1], "journal:{file}/j.log", "--budget", "100k",
                                        contains="{file}"),
    "dashboard-malformed-storage": row("dashboard", "--storage", "foo://bar", contains="foo://bar"),
    "dashboard-missing-sqlite": row("dashboard", "--storage", "{fresh}", contains="fresh.db", study="fresh"),
    "dashboard-bad-port": row("dashboard", "--storage", "{made}", "--port", "70000", contains="70000", study="made"),
    # a study whose settings differ
    "resume-other-budget": row(*RESUME, "--budget", "50k", contains="budget", study="made"),
    "resume-other-family": row(*RESUME, "--budget", str(BUDGET), "--family", "fcn", contains="family", study="made"),
    "resume-other-epochs": row(*RESUME[:-4], "--storage", "{made}", "--study", "tiny-cnn", "--epochs", "5",
                               "--budget", str(BUDGET), contains="epochs", study="made"),
    # replay
    "replay-trial-missing": row(*REPLAY, "--trial", "99", contains="99", study="made"),
    "replay-trial-word": row(*REPLAY, "--trial", "first", contains="first", study="made"),
    "replay-trial-rejected": row(*REPLAY, "--trial", "3", contains="3", study="made"),
    "replay-trial-failed": row(*REPLAY, "--trial", "4", contains="4", study="made"),
    "replay-no-finished-trials": row("replay", "--storage", "{empty}", *CPU1, contains="empty-study",
                                     study="empty"),
    "replay-unknown-study": row(*REPLAY, "--study", "nope", contains="nope", study="made"),
    "replay-which-study": row("replay", "--storage", "{two}", *CPU1, contains="--study", study="two"),
    "replay-storage-missing": row("replay", "--storage", "{fresh}", *CPU1, contains="fresh.db", study="fresh"),
    "replay-out-not-writable": row(*REPLAY, "--trial", "0", "--out", "{file}/sub", contains="{file}", study="made"),
    "replay-unknown-device": row(*REPLAY, "--device", "tpu", contains="tpu", study="made"),
    "replay-epochs-zero": row(*REPLAY[:-1], "0", contains="--epochs must be an integer >= 1, got 0", study="made"),
    "replay-epochs-above-limit": row(*REPLAY[:-1], "200000", contains="--epochs must be <= 100,000", study="made"),
    "replay-seed-negative": row(*REPLAY, "--seed=-1", contains="--seed must be an integer >= 0", study="made"),
    # report
    "report-unknown-study": row("report", "--storage", "{made}", "--study", "nope", contains="nope", study="made"),
    "report-out-not-writable": row("report", "--storage", "{made}", "--out", "{file}/r.html", contains="{file}",
                                   study="made"),
    "report-storage-missing": row("report", "--storage", "{fresh}", contains="fresh.db", study="fresh"),
    # configs
    "config-unknown-key": row("count", "{bad:unknown-key.toml}", contains="colour"),
    "config-wrong-type": row("count", "{bad:wrong-type.toml}", contains="epochs"),
    "config-not-toml": row("count", "{bad:not-toml.toml}", contains="TOML"),
    "config-zero-channels": row("count", "{bad:zero-channels.toml}", contains="out_channels"),
    "config-unknown-family": row("count", "{bad:unknown-family.toml}", contains="rnn"),
    "config-family-list": row("count", "{bad:family-list.toml}", contains="needs a family"),
    "config-missing-spec-key": row("count", "{bad:missing-spec-key.toml}", contains="lacks key(s) conv"),
    "config-fc-not-a-list": row("count", "{bad:fc-not-a-list.toml}", contains="fc must be a list"),
    "config-float-stride": row("train", "{bad:float-stride.toml}", *CPU1, contains="stride must be 1 or 2"),
    "config-paper-weights-text": row("count", "{bad:paper-weights-text.toml}", contains="weights must be a number"),
    # readers never create a storage file, however the URL spells it
    "report-driver-url-absent": row("report", "--storage", "sqlite+pysqlite:///{tmp}/absent.db",
                                    contains="does not exist"),
    "fail-running-absent-journal": row("storage", "fail-running", "--storage", "journal:{tmp}/absent.log",
                                       "--study", "x", contains="does not exist"),
    "config-unknown-conv-key": row("count", "{bad:unknown-conv-key.toml}", contains="stride"),
    "config-unknown-dataset": row("count", "{bad:unknown-dataset.toml}", contains="imagenet"),
    "config-missing": row("count", "{tmp}/absent.toml", contains="absent"),
    "count-unknown-paper-name": row("count", "cnn-999k", contains="cnn-999k"),
    "count-batch-zero": row("count", "cnn-10k", "--batch", "0", contains="batch"),
    "train-wrong-type": row("train", "{bad:wrong-type.toml}", contains="epochs"),
    "train-pools-below-1x1": row("train", "{bad:four-pools.toml}", "--dataset", "npz:{bad:npz-8x8.npz}", *CPU1,
                                 contains="1x1"),
    "train-out-not-writable": row("train", "cnn-10k", "--dataset", "npz:{npz}", *CPU1, "--out", "{file}/sub",
                                  contains="{file}"),
    "train-unknown-dataset": row("train", "cnn-10k", "--dataset", "imagenet", *CPU1, contains="imagenet"),
    "reproduce-unknown-name": row("reproduce", "cnn-999k", *CPU1, contains="cnn-999k"),
    "reproduce-out-not-writable": row("reproduce", "cnn-10k", "--subset", "200", *CPU1, "--out", "{file}/sub",
                                      contains="{file}"),
    # bench and sweep
    "bench-unknown-device": row("bench", "--devices", "cpu,tpu", contains="tpu"),
    "bench-steps-zero": row("bench", "--steps", "0", contains="steps"),
    "bench-config-missing": row("bench", "{tmp}/absent.toml", contains="absent"),
    "sweep-bad-budget": row("sweep", "--family", "cnn", "--budgets", "10k,abc", "--storage", "{fresh}",
                            contains="abc", study="fresh"),
    "sweep-no-budgets": row("sweep", "--family", "cnn", "--budgets", ",", "--storage", "{fresh}",
                            contains="budgets", study="fresh"),
    # checked before the searches: a typo here used to surface after them, naming --epochs
    "sweep-replay-epochs-zero": row("sweep", "--family", "cnn", "--budgets", "10k", "--replay-epochs", "0",
                                    "--storage", "{fresh}", contains="--replay-epochs", study="fresh"),
    "sweep-replay-subset-tiny": row("sweep", "--family", "cnn", "--budgets", "10k", "--replay-subset", "5",
                                    "--storage", "{fresh}", contains="--replay-subset", study="fresh"),
}


# --- fixtures: studies and files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_npz):
    return make_study(tmp_path_factory.mktemp("made"), tiny_npz, epochs=2)


def _empty_study(db: Path, npz: Path) -> str:
    """A study with settings but no finished trial: one rejected, one failed."""
    import optuna

    from budgetnas import records
    from budgetnas.storage import open_storage

    url = f"sqlite:///{db}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(storage=open_storage(url), study_name="empty-study",
                                    directions=["maximize", "minimize"])
        study.set_user_attr(records.SETTINGS_ATTR, records.StudySettings(
            family="cnn", budget=BUDGET, dataset=f"npz:{npz}", epochs=2, objectives=("accuracy", "runtime"),
            sampler="tpe", parameterisation="fit", space_version=1).to_dict())
        trial = study.ask()
        trial.set_user_attr("rejected", "over budget")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    return url


def _two_studies(db: Path) -> str:
    import optuna

    url = f"sqlite:///{db}"
    for name in ("first", "second"):
        optuna.create_study(storage=url, study_name=name, directions=["maximize", "minimize"])
    return url


def snapshot(url: str) -> dict:
    """Everything a study holds that an error must not change."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = url.removeprefix("sqlite:///")
    if url.startswith("sqlite:///") and not Path(path).exists():
        return {}
    state = {}
    for summary in optuna.get_all_study_summaries(storage=url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        state[summary.study_name] = {
            "attrs": study.user_attrs,
            "trials": [(t.number, t.state.name, t.values, t.params, t.user_attrs, t.system_attrs)
                       for t in study.get_trials(deepcopy=False)],
        }
    return state


class Filler:
    """Resolves a row's placeholders, creating only the files that the row uses."""

    def __init__(self, tmp: Path, npz: Path, made) -> None:
        self.tmp, self.npz, self.made = tmp, npz, made
        self.urls: dict[str, str] = {}

    def url(self, kind: str) -> str:
        if kind not in self.urls:
            if kind == "made":
                self.urls[kind] = self.made.copy_to(self.tmp / "made").url
            elif kind == "empty":
                self.urls[kind] = _empty_study(self.tmp / "empty.db", self.npz)
            elif kind == "two":
                self.urls[kind] = _two_studies(self.tmp / "two.db")
            else:
                self.urls[kind] = f"sqlite:///{self.tmp / 'fresh.db'}"
        return self.urls[kind]

    def __call__(self, text: str) -> str:
        return re.sub(r"\{([a-z]+)(?::([^}]+))?\}", lambda m: self._one(m.group(1), m.group(2)), text)

    def _one(self, key: str, arg: str | None) -> str:
        if key in ("made", "empty", "two", "fresh"):
            return self.url(key)
        if key == "npz":
            return str(self.npz)
        if key == "tmp":
            return str(self.tmp)
        if key == "file":
            file = self.tmp / "a-regular-file"
            file.write_text("not a folder\n")
            return str(file)
        if key == "bad":
            path = self.tmp / arg
            if not path.exists():
                BAD_FILES[arg](path)
            return str(path)
        raise KeyError(key)


@dataclass
class Outcome:
    args: list[str]
    contains: str
    proc: subprocess.CompletedProcess | None
    before: dict | None
    after: dict | None
    skipped: str = ""


def _run_row(name: str, folder: Path, npz: Path, made) -> Outcome:
    row = ROWS[name]
    if name == "missing-cuda" and torch.cuda.is_available():
        return Outcome([], "", None, None, None, skipped="this machine has a CUDA GPU")
    folder.mkdir(parents=True)
    fill = Filler(folder, npz, made)
    args = [fill(a) for a in row.args]
    watched = fill.url(row.study) if row.study else None
    before = snapshot(watched) if watched else None
    proc = run_cli(*args, cwd=folder, timeout=240)
    return Outcome(args, fill(row.contains), proc, before, snapshot(watched) if watched else None)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, tiny_npz, made):
    """Every row's command, started two (or more) at a time in the background.

    The rest of the suite runs serially, so on a 2-core CI machine one core would idle while a row's
    subprocess imports torch; running rows in parallel halves this table's wall time. Each row keeps
    its own folder, storage copies and before/after snapshots, so rows cannot see each other. Each
    test waits only for its own row (so the per-test timeout applies to one row, not the table).
    """
    base = tmp_path_factory.mktemp("bad-input")
    workers = min(4, max(2, os.cpu_count() or 2))
    pool = ThreadPoolExecutor(max_workers=workers)
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]  # only the rows -k kept
    yield {name: pool.submit(_run_row, name, base / name, tiny_npz, made) for name in selected}
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", ROWS)
def test_bad_input_gives_one_line_error_and_leaves_studies_alone(name, outcomes):
    outcome = outcomes[name].result()
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    proc, args = outcome.proc, outcome.args
    assert f"invalid choice: '{args[0]}'" not in proc.stderr, f"budgetnas {args[0]} does not exist yet"
    line = assert_one_line_error(proc, 2, outcome.contains)
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert "internal error" not in line, line
    assert proc.stdout == "", proc.stdout
    assert SECRET not in proc.stderr, "a password was echoed"
    if outcome.before is not None:
        if ROWS[name].study == "fresh":
            assert outcome.after == {}, f"a refused command left a study behind: {outcome.after}"
        else:
            assert outcome.after == outcome.before, "the study changed"
