"""Replay: choosing the trial, retraining from the storage alone, artifacts, errors."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from budgetnas import records
from budgetnas.config import load_config
from budgetnas.counting import count_params
from budgetnas.data import load_dataset
from budgetnas.errors import FieldError, StorageError, UsageError
from budgetnas.export import load_exported
from budgetnas.featuremaps import prepare
from budgetnas.replay import check_seeds, choose_trial, load_trained, replay, replay_seeds, val_accuracy_of
from budgetnas.storage import open_storage
from conftest import assert_one_line_error
from studyfactory import TINY_CNNS, make_study


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_npz):
    return make_study(tmp_path_factory.mktemp("study"), tiny_npz)


@pytest.fixture(scope="module")
def replayed(made, tmp_path_factory):
    study = made.copy_to(tmp_path_factory.mktemp("replayed"))
    out = study.db.parent / "out"
    result = replay(study.url, trial="best", device="cpu", precision="fp32", out=out)
    return study, result


def _study(made):
    return optuna.load_study(study_name=made.name, storage=open_storage(made.url))


def test_best_is_highest_validation_accuracy_on_the_pareto_front(made):
    study = _study(made)
    settings = records.settings_of(study)
    front = study.best_trials
    choice = choose_trial(study, "best")
    assert choice.trial.number in {t.number for t in front}
    assert val_accuracy_of(choice.trial, settings) == max(t.values[0] for t in front)
    assert f"trial {choice.trial.number}" in choice.reason and "Pareto front" in choice.reason


def test_best_breaks_ties_by_fewer_parameters(tmp_path):
    # Two trials with identical objective values are both on the front; the smaller one must win.
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 't.db'}"),
                                directions=["maximize", "minimize"])
    spec = TINY_CNNS[0].to_dict()
    for params in (900, 300, 600):
        study.add_trial(optuna.trial.create_trial(values=[0.8, 1.0], user_attrs={"spec": spec, "params": params}))
    choice = choose_trial(study, "best")
    assert choice.trial.user_attrs["params"] == 300
    assert "3 tied" in choice.reason


def test_choose_by_number_refuses_unusable_trials(made):
    study = _study(made)
    assert choose_trial(study, made.trained[0]).trial.number == made.trained[0]
    with pytest.raises(StorageError, match="rejected"):
        choose_trial(study, made.rejected)
    with pytest.raises(StorageError, match="failed"):
        choose_trial(study, made.failed)
    with pytest.raises(StorageError, match="no trial 99"):
        choose_trial(study, 99)


def test_replay_reports_test_accuracy_exact_counts_and_artifacts(replayed):
    study, result = replayed
    stored = _study(study).trials[result.trial]
    spec = records.spec_of(stored)
    m = result.metrics
    assert m["params"] == count_params(spec, (1, 28, 28), 10) == stored.user_attrs["params"]
    assert m["mult_adds"] == stored.user_attrs["mult_adds"]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["test_images"] == 300
    assert m["lowest_loss"] == min(e["train_loss"] for e in m["curve"])
    assert m["curve"][m["lowest_loss_epoch"] - 1]["train_loss"] == m["lowest_loss"]
    # Same recipe, seed, device and precision as the stored trial: the validation curve repeats exactly.
    assert [e["val_accuracy"] for e in m["curve"]] == stored.user_attrs["val_accuracy_curve"]
    for name in ("model.pt", "spec.toml", "metrics.json", "learning-curve.png", "model.pt2"):
        assert (result.out / name).is_file(), name
    assert len(list((result.out / "featuremaps").glob("*.png"))) == 10  # one test image per class
    saved = json.loads((result.out / "metrics.json").read_text())
    assert saved["test_accuracy"] == m["test_accuracy"] and saved["trial"] == result.trial
    assert saved["artifacts"]["weights"] == str(result.out / "model.pt") and result.out.is_absolute()
    curve_png = Image.open(result.out / "learning-curve.png").convert("RGB")
    assert len(curve_png.getcolors(1 << 20)) > 10  # drawn, not blank


def test_replay_is_recorded_in_the_study(replayed):
    study, result = replayed
    recorded = records.replays_of(_study(study))
    assert recorded[result.trial]["test_accuracy"] == result.metrics["test_accuracy"]
    assert recorded[result.trial]["out"] == str(result.out)


def test_weights_and_spec_toml_rebuild_the_same_model(replayed):
    study, result = replayed
    config = load_config(result.out / "spec.toml")
    assert config.spec == records.spec_of(_study(study).trials[result.trial])
    assert config.result["test_accuracy"] == result.metrics["test_accuracy"]
    model, _ = load_trained(result.out)
    data = load_dataset(study.dataset, with_test=True)
    x = prepare(data.test.x[:64], data, config.recipe)
    trained = result.model.to("cpu").eval()
    with torch.inference_mode():
        assert torch.allclose(model(x), trained(x), atol=1e-5)


def test_exported_program_matches_the_trained_model(replayed):
    study, result = replayed
    data = load_dataset(study.dataset, with_test=True)
    program = load_exported(result.out / "model.pt2")
    config = load_config(result.out / "spec.toml")
    images = data.test.x[:37]  # an odd batch: the batch dimension is dynamic
    with torch.inference_mode():
        expected = result.model.to("cpu").eval()(prepare(images, data, config.recipe))
        got = program(images.float() / 255)  # the exported contract: [0, 1] images
    assert got.shape == (37, 10)
    assert torch.allclose(got, expected, atol=1e-4)
    assert program(images[:1].float() / 255).shape == (1, 10)


def test_a_stopped_replay_into_a_used_folder_leaves_no_earlier_metrics(replayed, tmp_path, monkeypatch):
    """The folder of a replay stopped while writing its artifacts holds the new model beside the old ONNX file:
    the earlier run's metrics.json must not stay there to vouch for it (it is written last, removed first)."""
    import budgetnas.onnxexport

    study, first = replayed
    out = tmp_path / "used"
    shutil.copytree(first.out, out)
    assert (out / "metrics.json").is_file()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(budgetnas.onnxexport, "export_onnx", stopped)  # the last artifact: Ctrl-C just before
    with pytest.raises(KeyboardInterrupt):
        replay(study.url, trial="best", device="cpu", precision="fp32", out=out, seed=5, record=False)
    assert not (out / "metrics.json").exists() and (out / "model.pt").is_file()


def test_onnx_file_runs_in_onnxruntime_and_matches_the_trained_model(replayed, tmp_path):
    import onnxruntime

    study, result = replayed
    assert result.artifacts["onnx"] == result.out / "model.onnx"
    data = load_dataset(study.dataset, with_test=True)
    config = load_config(result.out / "spec.toml")
    images = data.test.x[100:137]  # not the images the export was checked on; an odd, dynamic batch
    # One self-contained file: copied alone, it still runs (no model.onnx.data sidecar to carry along).
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(result.out / "model.onnx", alone)
    assert not list(result.out.glob("*.onnx.data"))
    session = onnxruntime.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": (images.float() / 255).numpy()})
    with torch.inference_mode():
        expected = result.model.to("cpu").eval()(prepare(images, data, config.recipe)).numpy()
    assert got.shape == (37, 10)
    assert np.abs(got - expected).max() < 1e-4


def test_same_seed_same_device_fp32_gives_the_same_test_accuracy(replayed, tmp_path):
    study, first = replayed
    again = replay(study.url, trial=first.trial, device="cpu", precision="fp32", out=tmp_path / "again", record=False)
    assert again.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    assert again.metrics["curve"][-1]["val_accuracy"] == first.metrics["curve"][-1]["val_accuracy"]


def test_overrides_and_bad_image_indices(made, tmp_path):
    with pytest.raises(UsageError, match="outside the test split"):
        replay(made.url, device="cpu", out=tmp_path / "x", images=[5000], record=False)


@pytest.mark.slow
def test_cli_replay_json(made, cli, tmp_path):
    study = made.copy_to(tmp_path / "db")
    proc = cli("replay", "--storage", study.url, "--trial", str(made.trained[0]), "--epochs", "1", "--seed", "3",
               "--augment", "shift", "--device", "cpu", "--precision", "fp32", "--images", "0,7", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON document on stdout
    for key in ("params", "val_accuracy", "test_accuracy", "train_seconds", "mult_adds", "lowest_loss"):
        assert key in doc
    assert doc["epochs_run"] == 1 and doc["seed"] == 3 and doc["trial"] == made.trained[0]
    assert doc["recipe"]["augment"] == "shift" and "augmentation shift (the trial's: " in proc.stderr
    out = tmp_path / "runs" / f"{made.name}-trial{made.trained[0]}"  # the default --out, under the cwd
    assert doc["out"] == str(out) and doc["artifacts"]["weights"] == str(out / "model.pt")  # absolute paths
    test_y = load_dataset(made.dataset, with_test=True).test.y
    assert sorted(p.name for p in (out / "featuremaps").iterdir()) == [f"image00000-{int(test_y[0])}.png",
                                                                       f"image00007-{int(test_y[7])}.png"]
    assert "epoch 1/1" in proc.stderr
    recorded = records.replays_of(_study(study))[made.trained[0]]
    assert recorded["epochs"] == 1 and recorded["seed"] == 3


def test_replay_seeds_trains_one_trial_once_per_seed_and_records_every_run_and_the_mean(made, tmp_path,
                                                                                        monkeypatch):
    import budgetnas.data
    from budgetnas.report import write_report

    study = made.copy_to(tmp_path / "db")
    loads = []
    real_load = budgetnas.data.load_dataset
    monkeypatch.setattr(budgetnas.data, "load_dataset", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    runs = replay_seeds(study.url, trial="best", seeds=[1, 0], epochs=1, device="cpu", precision="fp32",
                        out=tmp_path / "out")
    best = choose_trial(_study(made), "best").trial.number
    assert runs.trial == best and "highest validation accuracy" in runs.reason  # chosen once, as "best"
    assert runs.seeds == [1, 0] and [r.trial for r in runs.results] == [best, best]
    # The data is loaded once for both seeds: the study's slice, plus the whole test split when it has one.
    assert len(loads) == (2 if records.settings_of(_study(made)).subset else 1)
    for seed, result in zip((1, 0), runs.results):
        assert result.metrics["seed"] == seed and result.metrics["epochs_run"] == 1
        assert result.out == (tmp_path / "out" / f"seed-{seed}").resolve()
        assert json.loads((result.out / "metrics.json").read_text())["seed"] == seed
    tests = [r.metrics["test_accuracy"] for r in runs.results]
    assert runs.summary()["mean_test_accuracy"] == pytest.approx(sum(tests) / 2)
    # Another seed is other initial weights and another batch order: the two runs are not copies.
    losses = [[e["train_loss"] for e in r.metrics["curve"]] for r in runs.results]
    assert losses[0] != losses[1]
    recorded = records.replays_of(_study(study))[best]
    assert recorded["seed"] == 1 and recorded["test_accuracy"] == tests[0]  # the first seed's run ...
    assert [r["seed"] for r in recorded["seeds"]] == [1, 0]  # ... with every seed's figures and the means
    assert [r["test_accuracy"] for r in recorded["seeds"]] == tests
    assert recorded["mean_test_accuracy"] == pytest.approx(sum(tests) / 2)
    assert recorded["mean_val_accuracy"] == pytest.approx(sum(r.metrics["val_accuracy"] for r in runs.results) / 2)
    assert json.loads(json.dumps(runs.to_dict()))["mean_test_accuracy"] == recorded["mean_test_accuracy"]
    html = write_report(study.url, out=tmp_path / "report.html").read_text()
    assert f"seed 1: {tests[0] * 100:.2f}%, seed 0: {tests[1] * 100:.2f}%; mean " in html


def test_replay_seeds_in_processes_train_the_same_runs_as_one_after_another(made, tmp_path):
    # --workers 2: each seed in its own single-threaded process. Same trial, same seeds, same data: the same
    # runs as in this process with one thread, each in its own folder, in the order of the seeds whatever
    # order they end in, each handed to on_result as it ends.
    import torch

    study = made.copy_to(tmp_path / "db")
    ended = []
    options = dict(trial="best", seeds=[1, 0], epochs=1, device="cpu", precision="fp32")
    parallel = replay_seeds(study.url, workers=2, out=tmp_path / "par", on_result=ended.append,
                            progress=lambda _m: None, **options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = replay_seeds(study.url, out=tmp_path / "seq", record=False, **options)
    finally:
        torch.set_num_threads(threads)
    assert parallel.seeds == alone.seeds == [1, 0] and parallel.trial == alone.trial
    assert sorted(r.metrics["seed"] for r in ended) == [0, 1]
    for p, a in zip(parallel.results, alone.results):
        assert p.model is None and p.out == (tmp_path / "par" / f"seed-{p.metrics['seed']}").resolve()
        assert json.loads((p.out / "metrics.json").read_text())["seed"] == p.metrics["seed"]
        assert (p.out / "model.pt").is_file()
        assert [e["train_loss"] for e in p.metrics["curve"]] == [e["train_loss"] for e in a.metrics["curve"]]
        assert p.metrics["test_accuracy"] == a.metrics["test_accuracy"]
    recorded = records.replays_of(_study(study))[parallel.trial]
    assert recorded["seed"] == 1 and [r["seed"] for r in recorded["seeds"]] == [1, 0]


@pytest.mark.slow
def test_ctrl_c_stops_every_seed_process(made, tmp_path):
    # Seeds in processes of their own session: Ctrl-C reaches the CLI only, which passes it on, and
    # then exits 130 with one line and no process left behind.
    import os
    import signal
    import threading

    from pg import start_cli

    study = made.copy_to(tmp_path / "db")
    parent = start_cli(["replay", "--storage", study.url, "--trial", "best", "--seeds", "0,1", "--workers", "2",
                        "--epochs", "400", "--device", "cpu", "--out", str(tmp_path / "out")], tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(parent.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and parent.poll() is None and not all(
                any(line.startswith(f"[seed {s}]   epoch 1/400") for line in list(lines)) for s in (0, 1)):
            time.sleep(0.2)
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == parent.pid]
        assert len(children) == 2, "".join(lines)[-3000:]
        parent.send_signal(signal.SIGINT)
        parent.wait(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    reader.join(timeout=10)
    err = "".join(lines)
    assert parent.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.rstrip().endswith("interrupted")
    assert all(_parent_of(pid) is None for pid in children)  # none left running (or unreaped)


def _parent_of(pid: int) -> int | None:
    """The parent process id of ``pid`` (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_a_failed_call_in_a_process_raises_its_one_line_error(made, tmp_path):
    from budgetnas.errors import UsageError
    from budgetnas.processes import run_calls

    study = made.copy_to(tmp_path / "db")
    calls = [dict(storage=study.url, study="no-such-study", seed=seed, out=tmp_path / f"s{seed}", epochs=1,
                  device="cpu") for seed in (0, 1)]
    with pytest.raises(UsageError, match=r"^seed 0: .*no-such-study") as caught:
        run_calls("budgetnas.replay:replay_detached", calls, 2, ["seed 0", "seed 1"], verbose=False)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("seeds, message", [([], "at least one seed"), ([0, -1], "non-negative"),
                                            ([0, True], "non-negative"), ([2, 1, 2], "got 2 more than once")])
def test_replay_seeds_are_refused_before_any_training(seeds, message):
    with pytest.raises(FieldError, match=message) as caught:
        check_seeds(seeds)
    assert caught.value.fields == ("seeds",)


def _main_error(capsys, *args: str) -> str:
    """Run the CLI in-process (real parser and dispatcher) and return its one error line."""
    from budgetnas.cli import main

    code = main(list(args))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("args, contains", [
    (["--trial", "99"], "no trial 99"),
    (["--trial", "REJECTED"], "rejected"),
    (["--trial", "FAILED"], "failed"),
    (["--trial", "first"], "--trial must be"),
    (["--epochs", "0"], "--epochs"),
    (["--subset", "many"], "--subset"),
    (["--images", "1,x"], "--images"),
    (["--out", "STUDYFILE/sub"], "cannot write to output folder"),
    (["--seeds", "0,x"], "--seeds must be comma-separated non-negative integers"),
    (["--seeds", "1,0,1"], "--seeds must differ, got 1 more than once"),
    (["--seeds", ","], "--seeds must name at least one seed"),
    (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds cannot be used together"),
])
def test_cli_replay_bad_input(made, capsys, args, contains):
    subst = {"REJECTED": str(made.rejected), "FAILED": str(made.failed), "STUDYFILE/sub": f"{made.db}/sub"}
    assert contains in _main_error(capsys, "replay", "--storage", made.url, *[subst.get(a, a) for a in args])


def test_cli_replay_storage_and_study_errors(made, capsys, tmp_path):
    assert "does not exist" in _main_error(capsys, "replay", "--storage", f"sqlite:///{tmp_path}/missing.db")
    assert "studies there: tiny-cnn" in _main_error(capsys, "replay", "--storage", made.url, "--study", "nope")
    url = f"sqlite:///{tmp_path}/two.db"
    for name in ("a", "b"):
        optuna.create_study(storage=open_storage(url), study_name=name)
    assert "choose one with --study: a, b" in _main_error(capsys, "replay", "--storage", url)
    assert "not made by budgetnas" in _main_error(capsys, "replay", "--storage", url, "--study", "a")
    empty = optuna.create_study(storage=open_storage(url), study_name="empty", directions=["maximize", "minimize"])
    empty.set_user_attr(records.SETTINGS_ATTR, _study(made).user_attrs[records.SETTINGS_ATTR])
    assert "no finished trials" in _main_error(capsys, "replay", "--storage", url, "--study", "empty")


def test_cli_replay_error_in_a_real_subprocess(made, cli):
    # The exit code and single error line as a user sees them (no traceback from the real process).
    assert_one_line_error(cli("replay", "--storage", made.url, "--trial", str(made.rejected)), 2, "rejected")
    assert_one_line_error(cli("replay", "--storage", made.url, "--augment", "rotate"), 2, "--augment")


@pytest.mark.slow
def test_end_to_end_search_then_replay_then_report(tiny_npz, cli, tmp_path):
    """The real `budgetnas search` CLI writes a study; replay and report read it back from the storage alone."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search = cli("search", "--budget", "5k", "--family", "cnn", "--dataset", f"npz:{tiny_npz}", "--trials", "3",
                 "--epochs", "1", "--storage", url, "--device", "cpu", "--precision", "fp32", "--json", timeout=600)
    assert search.returncode == 0, search.stderr
    found = json.loads(search.stdout)
    proc = cli("replay", "--storage", url, "--device", "cpu", "--precision", "fp32", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    front = {row["trial"]: row for row in found["front"]}
    assert doc["trial"] in front  # the best is a trial of the search's Pareto front
    assert doc["val_accuracy"] == max(row["val_accuracy"] for row in front.values())
    # Same spec, recipe, seed, data split, device and fp32 as in the search: the same validation accuracy.
    assert doc["val_accuracy"] == front[doc["trial"]]["val_accuracy"]
    assert doc["params"] == front[doc["trial"]]["params"] <= 5000
    assert 0.0 <= doc["test_accuracy"] <= 1.0
    report = cli("report", "--storage", url, "--out", "r.html")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"{doc['test_accuracy'] * 100:.2f}%" in page and "data:image/png;base64," in page


def test_a_subset_study_trains_on_its_slice_but_tests_on_the_whole_test_split(made, tmp_path):
    study = made.copy_to(tmp_path / "db")
    loaded = _study(study)
    loaded.set_user_attr(records.SETTINGS_ATTR, dict(loaded.user_attrs[records.SETTINGS_ATTR], subset=200))
    result = replay(study.url, epochs=1, device="cpu", precision="fp32", out=tmp_path / "out", record=False)
    assert result.metrics["train_images"] == 180 and result.metrics["subset"] == 200
    assert result.metrics["test_images"] == 300  # all of tiny_npz's test images, not 200
    full = replay(study.url, epochs=1, subset=None, device="cpu", precision="fp32", out=tmp_path / "full",
                  record=False)
    assert full.metrics["train_images"] == 900 and full.metrics["subset"] is None
