"""What optuna-dashboard shows for a trained trial: the architecture, not just relative widths.

Why: the search samples *relative* widths and a fill fraction (``conv1_width 0.72``,
``fill 0.91``), which is all the dashboard's parameter panel can show; the channels and
kernels a user wants sit inside the ``spec`` JSON. So each trained trial also gets

* readable user attributes: ``architecture`` (the one-line notation of ``search --help``),
  the widths its family lists (``conv_channels``, ``kernels``, ``fc_widths`` for a CNN; plain
  lists, shown as such);
* a Markdown note (optuna-dashboard's ``save_note``, shown on the trial's page) with the
  architecture block by block, the exact counts, the budget share, the recipe and the result;
* its learning curve as a PNG artifact (``optuna.artifacts``), in a
  ``FileSystemArtifactStore`` beside a file storage (``s.db`` -> ``s.db.artifacts/``), which
  ``budgetnas dashboard`` serves. Server storages (PostgreSQL) get the note and attributes
  only: a local folder would be invisible to the other machines.

Everything here is best effort: a failure to annotate never fails a trained trial.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import optuna

from budgetnas import tables
from budgetnas.counting import human_count
from budgetnas.fmt import percent, plural
from budgetnas.families import describe as describe_spec
from budgetnas.families import family_of
from budgetnas.spec import Spec
from budgetnas.trainer import Recipe

ARTIFACT_SUFFIX = ".artifacts"


def artifact_dir(storage_url: str) -> Path | None:
    """The artifact folder beside a file storage (SQLite or journal); None for a server database."""
    for prefix in ("sqlite:///", "journal:"):
        if storage_url.startswith(prefix):
            path = Path(storage_url[len(prefix):]).expanduser()
            return path.with_name(path.name + ARTIFACT_SUFFIX)
    return None


def readable_attrs(spec: Spec) -> dict[str, Any]:
    """User attributes that read as an architecture in the dashboard's attribute panel."""
    return {"architecture": describe_spec(spec), **family_of(spec).readable_attrs(spec)}


def note(number: int, spec: Spec, recipe: Recipe, params: int, budget: int, mult_adds: int,
         val_curve: Sequence[float], seconds: float, stopped: str | None = None) -> str:
    """The Markdown note of one trained trial."""
    rows = [list(row) for row in family_of(spec).layers(spec)]
    rows += [["parameters", f"{params:,} of {budget:,} ({params / budget:.1%} of the budget)"],
             ["mult-adds", f"{human_count(mult_adds)} per batch of 512"],
             ["recipe", recipe.describe()]]
    if val_curve:
        rows.append(["val accuracy", f"{percent(val_curve[-1])} after {plural(len(val_curve), 'epoch')}"
                     + (f" (stopped early: {stopped})" if stopped else "")])
        rows.append(["train time", f"{seconds:.1f}s"])
    return "\n".join([f"## Trial {number}", "", f"`{describe_spec(spec)}`", "", tables.markdown(["", ""], rows), ""])


def annotate(trial: optuna.Trial, storage_url: str | None, spec: Spec, recipe: Recipe, params: int, budget: int,
             mult_adds: int, val_curve: Sequence[float], loss_curve: Sequence[float], seconds: float,
             stopped: str | None = None) -> None:
    """Readable attributes, the note and the learning-curve artifact of a trained ``trial`` (best effort)."""
    try:
        for key, value in readable_attrs(spec).items():
            trial.set_user_attr(key, value)
        from optuna_dashboard import save_note

        save_note(trial, note(trial.number, spec, recipe, params, budget, mult_adds, val_curve, seconds, stopped))
        folder = artifact_dir(storage_url) if storage_url else None
        if folder is not None and val_curve:
            upload_curve(trial, folder, val_curve, loss_curve)
    except Exception as exc:  # noqa: BLE001 - the trial is trained; a missing note must not fail it
        warnings.warn(f"trial {trial.number}: dashboard note not saved ({type(exc).__name__}: {exc})", stacklevel=2)


def upload_curve(trial: optuna.Trial, folder: Path, val_curve: Sequence[float], loss_curve: Sequence[float]) -> str:
    """Draw the learning curve and store it as an artifact of ``trial``; returns the artifact id."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from budgetnas.figures import line_panels

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"learning-curve-trial-{trial.number}.png"
        line_panels([("train loss", [("train loss", list(loss_curve))]),
                     ("validation accuracy", [("val accuracy", list(val_curve))])]).save(path)
        with warnings.catch_warnings():  # upload_artifact is marked experimental; that is not the user's news
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return upload_artifact(artifact_store=FileSystemArtifactStore(str(folder)), file_path=str(path),
                                   study_or_trial=trial, mimetype="image/png")
