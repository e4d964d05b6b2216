"""``budgetnas train`` on a tiny real slice: the row, --json, --out artifacts, overrides and errors."""

from __future__ import annotations

import json

import pytest
import torch

from budgetnas.config import load_config
from budgetnas.reproduce import format_duration, paper_dir
from conftest import assert_one_line_error


@pytest.mark.slow
def test_train_json_and_out(cli, tiny_npz, tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "cnn-10k", "--dataset", f"npz:{tiny_npz}", "--epochs", "2", "--seed", "3",
               "--device", "cpu", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one JSON document
    assert doc["params"] == 9_192 and doc["epochs_run"] == 2 and doc["seed"] == 3
    assert 0.0 <= doc["val_accuracy"] <= 1.0 and 0.0 <= doc["test_accuracy"] <= 1.0
    assert doc["train_seconds"] > 0 and doc["test_images"] == 300 and doc["train_images"] == 900
    assert doc["lowest_loss_epoch"] in (1, 2) and doc["mult_adds"] == 208_333_824
    assert "epoch 2/2" in proc.stderr
    # Artifacts: weights that load into the config's model, metrics, and the config with its results.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == doc["test_accuracy"]
    saved = load_config(out / "config.toml")
    assert saved.recipe.epochs == 2 and saved.result["test_accuracy"] == doc["test_accuracy"]
    from budgetnas.model import build_model

    model = build_model(saved.spec, (1, 28, 28), 10)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))


@pytest.mark.slow
def test_train_prints_a_row_in_the_papers_columns(cli, tiny_npz, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text((paper_dir() / "fcn-50k.toml").read_text().replace("epochs = 20", "epochs = 1"))
    proc = cli("train", str(config), "--dataset", f"npz:{tiny_npz}", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    header, _, row = proc.stdout.splitlines()[:3]
    for column in ("Weights", "Test acc.", "Train time", "Mult-adds", "Lowest loss"):
        assert column in header
    assert "fcn-50k" in row and "46,580" in row and "(epoch 1)" in row and "%" in row


@pytest.mark.slow
def test_train_bn_variant_on_a_subset(cli):
    proc = cli("train", "fcn-100k+bn", "--subset", "300", "--epochs", "1", "--device", "cpu", "--threads", "1",
               "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["params"] == 98_490 + 2 * (100 + 180) and doc["subset"] == 300 and doc["name"] == "fcn-100k+bn"
    assert doc["threads"] == 1
    assert f"tested on {doc['test_images']:,} test images" in proc.stderr  # not the whole test split: said


@pytest.mark.slow
def test_train_seeds_trains_once_per_seed_and_reports_the_mean(cli, tiny_npz, tmp_path):
    out = tmp_path / "runs"
    proc = cli("train", "cnn-10k", "--dataset", f"npz:{tiny_npz}", "--epochs", "1", "--seeds", "4,2",
               "--device", "cpu", "--precision", "fp32", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["seed"] for r in doc["runs"]] == [4, 2] and [s["seed"] for s in doc["seeds"]] == [4, 2]
    tests = [r["test_accuracy"] for r in doc["runs"]]
    assert [s["test_accuracy"] for s in doc["seeds"]] == tests
    assert doc["mean_test_accuracy"] == pytest.approx(sum(tests) / 2)
    assert doc["mean_val_accuracy"] == pytest.approx(sum(r["val_accuracy"] for r in doc["runs"]) / 2)
    assert doc["runs"][0]["curve"][0]["train_loss"] != doc["runs"][1]["curve"][0]["train_loss"]  # not copies
    for seed, test in zip((4, 2), tests):  # each seed's artifacts in its own folder
        saved = load_config(out / f"seed-{seed}" / "config.toml")
        assert saved.recipe.seed == seed and saved.result["test_accuracy"] == test
    assert "[seed 4, run 1/2]" in proc.stderr and "[seed 2, run 2/2]" in proc.stderr
    assert "note: --subset" not in proc.stderr  # the whole (tiny) test split was used
    # Without --json: one line per seed and the mean; on a slice, the caveat a single run prints, once.
    proc = cli("train", "cnn-10k", "--dataset", f"npz:{tiny_npz}", "--epochs", "1", "--seeds", "0,1",
               "--subset", "200", "--device", "cpu", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("note: --subset 200: trained on a slice and tested on") == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("cnn-10k: conv ") and "val acc" in lines[1] and "test acc" in lines[1]
    assert [line.split()[0] for line in lines[3:]] == ["0", "1", "mean"]


@pytest.mark.slow
def test_train_seeds_in_processes_train_the_same_runs_as_one_after_another(cli, tiny_npz, tmp_path):
    # --workers 2: each seed in its own single-threaded process, which saves its own run. Same config, same
    # seeds, same data: the same runs as one after another with one thread, in the order of the seeds.
    common = ("train", "cnn-10k", "--dataset", f"npz:{tiny_npz}", "--epochs", "2", "--seeds", "4,2",
              "--device", "cpu", "--precision", "fp32", "--json")
    parallel = cli(*common, "--workers", "2", "--out", str(tmp_path / "par"))
    alone = cli(*common, "--threads", "1", "--out", str(tmp_path / "seq"))
    assert parallel.returncode == 0, parallel.stderr
    assert alone.returncode == 0, alone.stderr
    par, seq = json.loads(parallel.stdout), json.loads(alone.stdout)
    assert [r["seed"] for r in par["runs"]] == [4, 2]
    for p, a in zip(par["runs"], seq["runs"]):
        assert [e["train_loss"] for e in p["curve"]] == [e["train_loss"] for e in a["curve"]]
        assert p["test_accuracy"] == a["test_accuracy"] and p["threads"] == 1
        folder = tmp_path / "par" / f"seed-{p['seed']}"
        assert p["artifacts"]["config"] == str(folder / "config.toml")
        saved = load_config(folder / "config.toml")
        assert saved.recipe.seed == p["seed"] and saved.result["test_accuracy"] == p["test_accuracy"]
        from budgetnas.model import build_model

        build_model(saved.spec, (1, 28, 28), 10).load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    assert par["mean_test_accuracy"] == seq["mean_test_accuracy"]
    assert "2 at once, each in its own process with 1 CPU thread" in parallel.stderr
    assert "[seed 4]   epoch 2/2" in parallel.stderr and "[seed 2]   epoch 2/2" in parallel.stderr


def test_a_seed_stopped_by_ctrl_c_keeps_the_seeds_that_finished(tiny_npz, tmp_path):
    # Each seed's run is saved as it ends, not after the last one: Ctrl-C in the second keeps the first.
    from budgetnas.reproduce import override, resolve_config, train_config_seeds

    config = override(resolve_config("cnn-10k"), epochs=1, dataset=f"npz:{tiny_npz}")
    started = []

    def on_epoch(_stats) -> None:
        started.append(1)
        if len(started) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_config_seeds(config, [5, 6], device="cpu", precision="fp32", out=tmp_path, on_epoch=on_epoch)
    assert load_config(tmp_path / "seed-5" / "config.toml").recipe.seed == 5
    assert (tmp_path / "seed-5" / "model.pt").is_file() and not (tmp_path / "seed-6" / "model.pt").exists()


def test_train_bad_input_is_one_line(cli, tmp_path):
    assert_one_line_error(cli("train", "cnn-10k", "--epochs", "0"), 2, "--epochs")
    assert_one_line_error(cli("train", "cnn-10k", "--subset", "5"), 2, "--subset")
    assert_one_line_error(cli("train", "cnn-10k", "--threads", "0"), 2, "--threads")
    assert_one_line_error(cli("train", str(tmp_path / "none.toml")), 2, "does not exist")
    assert_one_line_error(cli("train", "cnn-10k", "--dataset", "imagenet"), 2, "unknown dataset")
    assert_one_line_error(cli("train", "cnn-10k", "--dataset", f"npz:{tmp_path / 'x.npz'}"), 2, "npz")
    assert_one_line_error(cli("train", "cnn-10k", "--seeds", "0,0"), 2, "--seeds must differ")
    assert_one_line_error(cli("train", "cnn-10k", "--seeds", "0,-1"), 2, "--seeds must be comma-separated")
    assert_one_line_error(cli("train", "cnn-10k", "--seed", "1", "--seeds", "2,3"), 2, "--seed and --seeds")
    assert_one_line_error(cli("train", "cnn-10k", "--seeds", "0,1", "--workers", "0"), 2, "--workers must be")
    assert_one_line_error(cli("train", "cnn-10k", "--seeds", "0,1", "--workers", "2", "--threads", "1"), 2,
                          "give --threads or --workers, not both")
    # a missing dataset fails once, before any seed's process starts (not once per process)
    missing = cli("train", "cnn-10k", "--seeds", "0,1", "--workers", "2", "--dataset", f"npz:{tmp_path / 'x.npz'}")
    assert "seed 0" not in assert_one_line_error(missing, 2, "npz") and "[seed" not in missing.stderr
    (tmp_path / "file").write_text("")  # --out that cannot be a folder: refused before training, not after
    assert_one_line_error(cli("train", "cnn-10k", "--out", str(tmp_path / "file" / "sub")), 2,
                          "cannot write to output folder")


def test_format_duration_uses_the_papers_style():
    assert format_duration(152.93) == "2m 32.93s"
    assert format_duration(1431.1) == "23m 51.10s"
    assert format_duration(41.2) == "41.20s"
