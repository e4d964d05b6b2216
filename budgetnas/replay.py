"""Replay a trial: rebuild it from the storage alone, retrain it, test it, ship it.

The search selects on validation data; replay is where a chosen architecture meets the
test split. Everything needed comes from the study (``records``): the spec and recipe of
the trial, the dataset, subset and split seed of the study. Options override epochs,
seed, device and precision. A replay writes to ``out``::

    model.pt            state_dict of the trained Net
    spec.toml           RunConfig (spec + recipe + dataset): ``budgetnas train spec.toml`` retrains it
    metrics.json        the numbers below, plus the per-epoch curve
    learning-curve.png  train loss and validation accuracy per epoch
    featuremaps/*.png   conv-block activations of one test image per class (CNNs)
    model.pt2           torch.export program taking [0, 1] images (see budgetnas.export)

and records its metrics in the study as user attribute ``replay:<trial number>``.

    result = replay(storage="sqlite:///budgetnas.db", trial="best", epochs=20)
    result.metrics["test_accuracy"]

One run's test accuracy carries a few tenths of a point of luck at these model sizes (the seed
picks the initial weights, the batch order and the augmentation; the validation split is the
study's, the same for every seed), so a claim about a model should rest on more than one
seed: :func:`replay_seeds` replays the same trial once per seed and reports every run and the
mean.

    runs = replay_seeds(storage="sqlite:///budgetnas.db", seeds=[0, 1], epochs=20, subset=None)
    runs.summary()["mean_test_accuracy"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from budgetnas.errors import StorageError, UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.fmt import epoch_line, percent, plural
from budgetnas.records import StudySettings, recipe_of, replay_key, settings_of, spec_of
from budgetnas.runs import TrainedRun, check_seeds, seed_heading, seed_summary, write_json

ProgressFn = Callable[[str], None]


@dataclass
class Choice:
    """The trial a replay uses and a sentence saying why."""

    trial: Any  # optuna.trial.FrozenTrial
    reason: str


@dataclass
class ReplayResult:
    study: str
    trial: int
    reason: str
    out: Path
    metrics: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "study": self.study, "trial": self.trial, "reason": self.reason,
                "out": str(self.out), "artifacts": {k: str(v) for k, v in self.artifacts.items()}}


def trained_trials(study: Any) -> list[Any]:
    """COMPLETE trials that were trained (they carry a spec) and not rejected."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "spec" in t.user_attrs and "rejected" not in t.user_attrs]


def val_accuracy_of(trial: Any, settings: StudySettings | None = None) -> float:
    """The validation accuracy the search recorded for ``trial`` (its accuracy objective)."""
    objectives = list(settings.objectives) if settings else []
    if trial.values and "accuracy" in objectives and len(trial.values) == len(objectives):
        return float(trial.values[objectives.index("accuracy")])
    curve = trial.user_attrs.get("val_accuracy_curve") or []
    if curve:
        return float(curve[-1])
    return float(trial.values[0]) if trial.values else float("nan")


def choose_trial(study: Any, which: str | int = "best") -> Choice:
    """The trial ``which`` names: ``"best"`` or a trial number (raises StorageError when unusable).

    "best" is the highest validation accuracy on the Pareto front (``study.best_trials``;
    for a single objective, among all trained trials), ties going to fewer parameters.
    """
    settings = _settings_or_none(study)
    if isinstance(which, str):
        which = parse_trial(which)
    if which != "best":
        return Choice(_numbered_trial(study, which), f"trial {which}: asked for by number")
    trained = trained_trials(study)
    if not trained:
        raise StorageError(f"study {study.study_name!r} has no finished trials to replay yet; "
                           "let the search finish at least one trial")
    ids = {t.number for t in trained}
    where = "trained trials"
    candidates = trained
    if len(study.directions) > 1:
        front = [t for t in study.best_trials if t.number in ids]
        if front:
            candidates = front
            names = "/".join(settings.objectives) if settings else f"{len(study.directions)} objectives"
            where = f"trials on the Pareto front ({names})"
        else:  # every front trial infeasible or untrained: fall back to all trained trials
            where = "trained trials (none of them on a feasible Pareto front)"
    best = max(candidates, key=lambda t: (val_accuracy_of(t, settings), -int(t.user_attrs.get("params", 0))))
    accuracy = val_accuracy_of(best, settings)
    tied = [t for t in candidates if val_accuracy_of(t, settings) == accuracy]
    reason = (f"trial {best.number}: highest validation accuracy {percent(accuracy)} among the "
              f"{len(candidates)} {where}")
    if len(tied) > 1:
        reason += f"; {len(tied)} tied, the one with the fewest parameters ({best.user_attrs.get('params')}) wins"
    return Choice(best, reason)


def parse_trial(text: str) -> str | int:
    """CLI value of ``--trial``: ``best`` or a non-negative trial number."""
    if text == "best":
        return "best"
    if text.isdigit():
        return int(text)
    raise UsageError(f"--trial must be 'best' or a trial number, got {text!r}")


def replay(storage: str | None = None, study: str | None = None, trial: str | int = "best", *,
           epochs: int | None = None, seed: int | None = None, augment: str | None = None,
           device: str = "auto", precision: str = "auto", out: str | Path | None = None,
           data_root: str | os.PathLike | None = None,
           subset: int | None | str = "study", images: Sequence[int] | None = None,
           record: bool = True, progress: ProgressFn | None = None) -> ReplayResult:
    """Retrain trial ``trial`` of ``study`` from the storage and write its artifacts to ``out``.

    ``subset="study"`` trains on the same data slice as the search; ``None`` uses the full
    dataset; an integer a stratified sample of that size. Test accuracy is always measured on
    the whole test split. ``epochs``, ``seed`` and ``augment`` override the trial's recipe (a
    sweep's finalists may choose another augmentation at full length than the short search did).
    ``images`` are the test indices for feature maps (default: the first test image of each
    class). ``record`` stores the metrics in the study (``replay:<N>``).
    """
    from budgetnas.studyio import load_existing_study

    say = progress or (lambda _msg: None)
    loaded, _url = load_existing_study(storage, study)
    settings = settings_of(loaded)  # first: a study budgetnas did not make says so, not "no trials"
    choice = choose_trial(loaded, trial)
    out = _out_folder(loaded, choice, out)
    subset, data = replay_data(settings, data_root, subset)
    return _replay_trial(loaded, settings, choice, data, subset, epochs=epochs, seed=seed, augment=augment,
                         device=device, precision=precision, out=out, images=images, record=record, say=say)


def replay_recipe(trial: Any, *, epochs: int | None = None, seed: int | None = None,
                  augment: str | None = None) -> Any:
    """The recipe a replay of ``trial`` trains with: the trial's own, with ``epochs``, ``seed`` and
    ``augment`` in place of its values where given (a sweep writes its winner's config with it before
    the replay runs)."""
    return recipe_of(trial).with_changes(epochs=epochs, seed=seed, augment=augment)


def _out_folder(loaded: Any, choice: Choice, out: str | Path | None) -> Path:
    """``out``, or runs/STUDY-trialN; checked writable before any training, and absolute so that
    metrics.json and the study record hold paths valid from any folder."""
    from budgetnas.studyio import safe_name

    if out is None:
        out = Path("runs") / f"{safe_name(loaded.study_name)}-trial{choice.trial.number}"
    out = Path(out).expanduser()
    check_writable(out)
    return out.resolve()


def _replay_trial(loaded: Any, settings: StudySettings, choice: Choice, data: Any, subset: int | None, *,
                  out: Path, record: bool, say: ProgressFn, epochs: int | None = None, seed: int | None = None,
                  augment: str | None = None, device: str = "auto", precision: str = "auto",
                  images: Sequence[int] | None = None) -> ReplayResult:
    """:func:`replay` once the study is loaded, the trial chosen and the data loaded (``replay_seeds``
    loads them once for all its seeds)."""
    spec, stored = spec_of(choice.trial), recipe_of(choice.trial)
    recipe = replay_recipe(choice.trial, epochs=epochs, seed=seed, augment=augment)
    say(f"replaying {choice.reason}")
    say(f"  spec {describe_spec(spec)}; {plural(recipe.epochs, 'epoch')}, seed {recipe.seed}"
        + (f", augmentation {recipe.augment} (the trial's: {stored.augment})" if augment else ""))
    run = retrain(spec, recipe, settings, data, device=device, precision=precision, subset=subset, out=out,
                  images=images, name=f"{loaded.study_name}-trial{choice.trial.number}", progress=say)
    run.metrics.update(study=loaded.study_name, trial=choice.trial.number,
                       search_val_accuracy=val_accuracy_of(choice.trial, settings))
    result = ReplayResult(study=loaded.study_name, trial=choice.trial.number, reason=choice.reason, out=out,
                          metrics=run.metrics, artifacts=run.artifacts, model=run.model)
    write_json(run.artifacts["metrics"], result.to_dict())  # written once, with everything above
    if record:
        loaded.set_user_attr(replay_key(choice.trial.number), _recorded(result))
    return result


@dataclass
class SeedReplays:
    """One trial replayed once per seed (:func:`replay_seeds`): every run and their mean."""

    study: str
    trial: int
    reason: str
    out: Path
    results: list[ReplayResult]

    @property
    def seeds(self) -> list[int]:
        return [int(r.metrics["seed"]) for r in self.results]

    def summary(self) -> dict[str, Any]:
        """Each seed's validation and test accuracy and their means (:func:`budgetnas.runs.seed_summary`)."""
        return seed_summary([r.metrics for r in self.results])

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "trial": self.trial, "reason": self.reason, "out": str(self.out),
                **self.summary(), "runs": [r.to_dict() for r in self.results]}


def replay_seeds(storage: str | None = None, study: str | None = None, trial: str | int = "best", *,
                 seeds: Sequence[int], out: str | Path | None = None, record: bool = True,
                 progress: ProgressFn | None = None, on_result: Callable[[ReplayResult], None] | None = None,
                 workers: int | str = 1, **options: Any) -> SeedReplays:
    """Replay trial ``trial`` once per seed in ``seeds``, each run into ``out/seed-S``.

    ``options`` are :func:`replay`'s (epochs, augment, device, precision, data_root, subset,
    images). The trial is chosen once, before the first run, so every seed trains the same one
    even while a search is still adding trials. Each run is a whole replay (artifacts and
    ``metrics.json``); the study's record of the trial (``replay:N``) holds the first seed's run
    with every seed's figures and their means. ``on_result`` is called with each seed's run as it
    ends, so that a caller can keep what finished if a later seed is stopped (a sweep rewrites its
    found config).

    ``workers`` (a number or ``auto``, :func:`budgetnas.processes.resolve_run_workers`) trains that many
    seeds at once, each in its own process with its share of the CPU cores: on a CPU, N single-threaded
    runs finish sooner than N runs one after another with N threads each. Each run's ``train_seconds``
    is then measured beside the others, and its result carries no ``model`` (it stays in its process;
    the weights are in its artifacts).
    """
    from budgetnas.studyio import load_existing_study

    seeds = check_seeds(seeds)
    say = progress or (lambda _msg: None)
    loaded, _url = load_existing_study(storage, study)
    settings = settings_of(loaded)
    choice = choose_trial(loaded, trial)
    number = choice.trial.number
    out = _out_folder(loaded, choice, out)
    for seed in seeds:
        check_writable(out / f"seed-{seed}")  # every seed's folder before the first run trains
    data_root, subset = options.pop("data_root", None), options.pop("subset", "study")
    from budgetnas.device import resolve_placement
    from budgetnas.processes import resolve_run_workers, run_seeds

    workers = resolve_run_workers(workers, len(seeds), resolve_placement(options.get("device", "auto"),
                                                                        options.get("precision", "auto")).device.type)
    # Loaded here even when the runs load their own: a missing dataset then fails (or downloads) once,
    # before any process starts, instead of in every process at once.
    subset, data = replay_data(settings, data_root, subset)
    results: list[ReplayResult] = []
    if workers > 1:
        calls = [dict(storage=_url, study=loaded.study_name, trial=number, seed=seed, out=out / f"seed-{seed}",
                      data_root=data_root, subset=subset, record=False, **options) for seed in seeds]
        results = run_seeds("budgetnas.replay:replay_detached", calls, seeds, workers, progress,
                            on_result=(lambda _i, result: on_result(result)) if on_result else None)
    else:
        for i, seed in enumerate(seeds, start=1):
            say(seed_heading(i, seed, len(seeds)))
            results.append(_replay_trial(loaded, settings, choice, data, subset, seed=seed,
                                         out=out / f"seed-{seed}", record=False, say=say, **options))
            if on_result is not None:
                on_result(results[-1])
    replays = SeedReplays(study=loaded.study_name, trial=number, reason=choice.reason, out=out, results=results)
    if record:
        loaded.set_user_attr(replay_key(number), {**_recorded(results[0]), **replays.summary()})
    return replays


def replay_detached(**options: Any) -> ReplayResult:
    """:func:`replay` in a :func:`budgetnas.processes.run_calls` process: its result without the model
    (the parent would unpickle a module it does not use; the weights are in the run's artifacts)."""
    return replace(replay(**options), model=None)


def replay_data(settings: StudySettings, data_root: Any, subset: int | None | str = "study") -> tuple[int | None, Any]:
    """The slice a replay trains on (``"study"``: the search's; None: all) and the study's dataset with
    that slice to train on and the whole test split to test on, so that figures compare with the
    paper and other replays."""
    from budgetnas.data import load_dataset

    subset = settings.subset if subset == "study" else subset
    data = load_dataset(settings.dataset, data_root, with_test=True, subset=subset, seed=settings.split_seed,
                        validation=settings.validation)
    if subset is not None:
        whole = load_dataset(settings.dataset, data_root, with_test=True, seed=settings.split_seed)
        data = replace(data, test=whole.test)
    return subset, data


def retrain(spec: Any, recipe: Any, settings: StudySettings, data: Any, *, device: str, precision: str,
            subset: int | None, out: Path, images: Sequence[int] | None, name: str,
            progress: ProgressFn) -> TrainedRun:
    """Train ``spec`` with ``recipe`` on ``data`` (:func:`replay_data`) and write its artifacts
    (all but ``metrics.json``, whose path is ``artifacts["metrics"]``: the caller writes it once)."""
    from budgetnas.config import RunConfig, save_config
    from budgetnas.export import export_model
    from budgetnas.onnxexport import export_onnx
    from budgetnas.featuremaps import render_feature_maps, save_feature_maps
    from budgetnas.figures import line_panels
    from budgetnas.families import family_of
    from budgetnas.runs import save_weights, train_run

    progress(f"  data {settings.dataset}: {len(data.train)} train / {len(data.val)} val / "
             f"{len(data.require_test())} test images")
    bad = [i for i in images or () if not 0 <= i < len(data.require_test())]
    if bad:  # checked before training, not after
        raise UsageError(f"image index {bad[0]} is outside the test split (0..{len(data.require_test()) - 1})")

    def on_epoch(e: Any) -> None:
        progress(f"  {epoch_line(e, recipe.epochs)}")

    run = train_run(spec, recipe, data, dataset=settings.dataset, subset=subset, device=device, precision=precision,
                    on_epoch=on_epoch)
    trained, metrics, artifacts = run.result, run.metrics, run.artifacts
    metrics["replayed_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # metrics.json marks a finished replay: removed before the first artifact is written, written after the last,
    # so a folder a stopped replay left half rewritten never claims an earlier run's figures.
    (out / "metrics.json").unlink(missing_ok=True)
    artifacts["weights"] = save_weights(trained.model, out / "model.pt")
    header = (f"Replayed {name}: test accuracy {metrics['test_accuracy']:.4f}, {metrics['params']} params.\n"
              "Retrain with: budgetnas train spec.toml")
    artifacts["config"] = save_config(RunConfig(name=name, spec=spec, recipe=recipe, dataset=settings.dataset,
                                                result={k: metrics[k] for k in ("params", "val_accuracy",
                                                        "test_accuracy", "train_seconds", "mult_adds",
                                                        "epochs", "seed", "device", "precision")}),
                                      out / "spec.toml", header=header)
    artifacts["learning_curve"] = out / "learning-curve.png"
    line_panels([("train loss", [("train loss", [e.train_loss for e in trained.epochs])]),
                 ("validation accuracy", [("val accuracy", [e.val_accuracy for e in trained.epochs])])]
                ).save(artifacts["learning_curve"])
    if family_of(spec).feature_maps:
        maps = render_feature_maps(trained.model, data, recipe, images)
        paths = save_feature_maps(maps, out / "featuremaps")
        artifacts["featuremaps"] = out / "featuremaps"
        progress(f"  feature maps of {len(paths)} test images in {artifacts['featuremaps']}")
    artifacts["export"] = export_model(trained.model, data, recipe, out / "model.pt2")
    artifacts["onnx"] = export_onnx(trained.model, data, recipe, out / "model.onnx",  # checked with onnxruntime
                                    images=data.require_test().x[:64])
    artifacts["metrics"] = out / "metrics.json"
    progress(f"  test accuracy {percent(metrics['test_accuracy'])}; artifacts in {out}")
    return run


def load_trained(folder: str | Path) -> tuple[Any, Any]:
    """(Net with its trained weights, RunConfig) from a folder holding ``model.pt`` and its config.

    Reads a replay's ``out`` (``spec.toml``) as well as ``budgetnas train --out`` (``config.toml``);
    nothing is unpickled (:func:`budgetnas.export.load_weights`, which this is).
    """
    from budgetnas.export import load_weights

    return load_weights(folder)


def _numbered_trial(study: Any, number: int) -> Any:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise StorageError(f"study {study.study_name!r} has no trial {number} (trials are 0..{len(trials) - 1})")
    chosen = next(t for t in trials if t.number == number)
    if "rejected" in chosen.user_attrs:
        raise StorageError(f"trial {number} was rejected before training ({chosen.user_attrs['rejected']}); "
                           "choose another trial or --trial best")
    if chosen.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        state = {"FAIL": "failed", "RUNNING": "still running", "WAITING": "waiting to run"}.get(
            chosen.state.name, chosen.state.name.lower())
        why = f" ({chosen.user_attrs['failed']})" if "failed" in chosen.user_attrs else ""
        raise StorageError(f"trial {number} {state}{why}; it has no trained result to replay, "
                           "choose a finished trial or --trial best")
    spec_of(chosen)  # raises when it was never trained
    return chosen


def _settings_or_none(study: Any) -> StudySettings | None:
    try:
        return settings_of(study)
    except StorageError:
        return None


def check_writable(out: Path) -> None:
    """Fail before training when ``out`` cannot hold the artifacts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".budgetnas-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another --out") from None


def _recorded(result: ReplayResult) -> dict[str, Any]:
    """The compact dict stored in the study (the dashboard shows it; curves stay in metrics.json)."""
    keys = ("test_accuracy", "val_accuracy", "params", "mult_adds", "train_seconds", "lowest_loss",
            "lowest_loss_epoch", "epochs", "seed", "device", "precision", "subset", "replayed_at")
    return {**{k: result.metrics[k] for k in keys}, "out": str(result.out)}
