"""Build a real, small budgetnas study for replay/report tests.

A real SQLite file opened with :func:`budgetnas.storage.open_storage`, a two-objective
Optuna study (validation accuracy up, training seconds down) with the study settings of
:mod:`budgetnas.records`, trials whose tiny CNNs were actually trained (1-2 epochs on the
``tiny_npz`` Fashion-MNIST slice) and stored with :func:`records.training_attrs`, one trial
rejected before training (PRUNED with ``rejected``, as the search's objective does) and
optionally one FAIL trial. No search code is used, so these tests do not depend on it.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from budgetnas import records
from budgetnas.counting import count_mult_adds, count_params
from budgetnas.data import load_dataset
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec
from budgetnas.storage import open_storage
from budgetnas.trainer import Recipe, train

BUDGET = 20_000
TINY_CNNS = (
    CNNSpec(conv=(ConvBlock(4), ConvBlock(8)), fc=(16,)),
    CNNSpec(conv=(ConvBlock(6),), fc=()),
    CNNSpec(conv=(ConvBlock(8, batch_norm=True), ConvBlock(8)), head="gap"),
)
TINY_FCNS = (FCNSpec(hidden=(16,)), FCNSpec(hidden=(24, 12)))


@dataclass
class MadeStudy:
    url: str
    name: str
    db: Path
    dataset: str
    trained: list[int]  # numbers of the trained (COMPLETE) trials
    rejected: int
    failed: int | None

    def copy_to(self, folder: Path) -> "MadeStudy":
        """A copy of the SQLite file in ``folder``, for tests that write to the study."""
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / self.db.name
        shutil.copyfile(self.db, db)
        return MadeStudy(f"sqlite:///{db}", self.name, db, self.dataset, self.trained, self.rejected, self.failed)


def make_study(folder: Path, npz: Path, *, family: str = "cnn", name: str = "tiny-cnn", epochs: int = 2,
               with_failed: bool = True) -> MadeStudy:
    """Create ``folder/study.db`` holding study ``name`` with really trained trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        # set_metric_names is "experimental"; ask/tell on an RDB storage warns about heartbeats.
        warnings.simplefilter("ignore")
        return _make(folder, npz, family, name, epochs, with_failed)


def _make(folder: Path, npz: Path, family: str, name: str, epochs: int, with_failed: bool) -> MadeStudy:
    db = folder / "study.db"
    url = f"sqlite:///{db}"
    dataset = f"npz:{npz}"
    study = optuna.create_study(storage=open_storage(url), study_name=name, directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "train_seconds"])
    settings = records.StudySettings(family=family, budget=BUDGET, dataset=dataset, epochs=epochs,
                                     objectives=("accuracy", "runtime"), sampler="tpe", parameterisation="fit",
                                     space_version=1)
    study.set_user_attr(records.SETTINGS_ATTR, settings.to_dict())
    data = load_dataset(dataset, seed=settings.split_seed)
    recipe = Recipe(epochs=epochs, seed=0)
    trained = []
    for spec in TINY_CNNS if family == "cnn" else TINY_FCNS:
        trial = study.ask()
        params = count_params(spec, data.input_shape, data.num_classes)
        trial.set_constraint("params_over_budget", params - BUDGET)
        result = train(spec, data, recipe, device="cpu", precision="fp32")
        mult_adds = count_mult_adds(spec, data.input_shape, data.num_classes)
        for key, value in records.training_attrs(spec, recipe, result, mult_adds).items():
            trial.set_user_attr(key, value)
        study.tell(trial, [result.val_accuracy, result.train_seconds])
        trained.append(trial.number)
    trial = study.ask()
    big = CNNSpec(conv=(ConvBlock(64), ConvBlock(128)), fc=(256,))
    params = count_params(big, data.input_shape, data.num_classes)
    trial.set_constraint("params_over_budget", params - BUDGET)
    trial.set_user_attr("params", params)
    trial.set_user_attr("rejected", f"{params:,} parameters > budget {BUDGET:,}: {big.describe()}")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    rejected = trial.number
    failed = None
    if with_failed:
        trial = study.ask()
        trial.set_user_attr("failed", "training loss became nan in epoch 1")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        failed = trial.number
    return MadeStudy(url, name, db, dataset, trained, rejected, failed)
