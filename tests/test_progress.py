"""What a search shows while it runs: plain lines off a terminal, a live display on one, --quiet,
"resuming: ...", and --config / --threads / printed commands that paste (real CLI subprocesses)."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import optuna
import pytest
import test_search
from conftest import REPO, assert_one_line_error

from budgetnas.progress import Monitor, Remaining, monitor

small_npz = test_search.small_npz  # the 8x8 slice (cheap convolutions), shared with tests/test_search.py

ANSI_ESCAPE = "\x1b["


@pytest.fixture
def search(cli, small_npz, tmp_path):
    def run(*extra, epochs="1"):
        return cli("search", "--budget", "3k", "--dataset", f"npz:{small_npz}", "--epochs", epochs,
                   "--storage", f"sqlite:///{tmp_path}/s.db", "--study", "t", "--device", "cpu", *extra)
    return run


def test_the_monitor_advances_the_search_by_training_steps_and_caps_the_eta_by_the_time_budget():
    out = io.StringIO()
    shown = Monitor(stream=out)  # plain: lines only, the bars tracked without drawing
    shown.start(total=4, done=1, timeout=3600)
    for step in range(1, 5):
        shown.step(trial=1, epoch=1, epochs=2, step=step, steps=4, images=100, epoch_images=400)
        time.sleep(0.01)
    search = shown._task(shown.search)
    assert 1.4 < search.completed < 1.6  # trial 1 is half trained: one of its two epochs
    assert shown._task(shown.trial).completed == 400 and "step 4/4" in shown._task(shown.trial).fields["detail"]
    eta = shown.trial_finished(2)
    assert eta is not None and 0 < eta <= 3600  # measured from the steps, never past the --timeout deadline
    shown("a message")
    shown.stop()
    assert out.getvalue() == "a message\n"  # nothing drawn off a terminal
    quiet = io.StringIO()
    Monitor(stream=quiet, quiet=True)("not shown")
    assert quiet.getvalue() == ""
    assert not monitor(stream=io.StringIO()).live  # a StringIO is not a terminal


def test_off_a_terminal_each_event_is_one_plain_line_and_quiet_prints_nothing(search):
    proc = search("--trials", "2")
    assert proc.returncode == 0, proc.stderr
    assert ANSI_ESCAPE not in proc.stderr and "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("[1/2] trial 0") for line in lines)
    assert any(line.startswith("[2/2] trial 1") and "ETA" in line for line in lines)
    again = search("--trials", "3", "--quiet")
    assert again.returncode == 0 and again.stderr == ""
    assert "3 finished trials" in again.stdout


def test_a_resumed_search_says_so(search):
    assert search("--trials", "1", "--quiet").returncode == 0
    proc = search("--trials", "2")
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 1 of 2 trials finished" in proc.stderr


def test_printed_commands_run_as_printed(search, tmp_path):
    proc = search("--trials", "1")
    assert proc.returncode == 0, proc.stderr
    commands = dict(line.split(": ", 1) for line in proc.stdout.splitlines()
                    if line.startswith(("dashboard: ", "replay: ")))
    assert shlex.split(commands["dashboard"])[:3] == [sys.executable, "-m", "budgetnas"]  # what is running
    assert f"sqlite:///{tmp_path}/s.db" in commands["dashboard"]
    if "replay" in commands:  # a front exists: the replay command pastes too (from another folder)
        replay = shlex.split(commands["replay"]) + ["--epochs", "1", "--out", str(tmp_path / "r"), "--json"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(replay, cwd=tmp_path.parent, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["test_accuracy"] >= 0


def test_config_file_sets_options_and_flags_override_it(cli, small_npz, tmp_path):
    (tmp_path / "search.toml").write_text(
        f'budget = "3k"\ndataset = "npz:{small_npz}"\ntrials = 1\nepochs = 1\ndevice = "cpu"\n'
        f'storage = "sqlite:///{tmp_path}/s.db"\nstudy = "from-file"\nearly-stop = false\nthreads = 1\n'
        'sampler = "random"\n')
    proc = cli("search", "--config", "search.toml", "--study", "flag-wins", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["study"] == "flag-wins"
    config = document["config"]  # the resolved options, printed back
    assert config["budget"] == "3k" and config["trials"] == 1 and config["threads"] == 1
    assert config["early-stop"] is False and config["sampler"] == "random" and config["study"] == "flag-wins"
    names = optuna.get_all_study_names(f"sqlite:///{tmp_path}/s.db")
    assert names == ["flag-wins"]


@pytest.mark.parametrize("body, contains", [
    ('budget = "3k"\nbogus = 1\n', "unknown key 'bogus'"),
    ('budget = "3k"\nsampler = "grid"\n', "sampler must be one of tpe, nsga2, random"),
    ('budget = "3k"\ntrials = "many"\n', "trials: invalid value"),
    ('budget = [\n', "is not valid TOML"),
])
def test_a_bad_config_file_is_one_error_line(cli, tmp_path, body, contains):
    (tmp_path / "bad.toml").write_text(body)
    assert_one_line_error(cli("search", "--config", "bad.toml"), 2, contains)


def test_threads_below_one_is_refused(search):
    assert_one_line_error(search("--trials", "1", "--threads", "0"), 2, "--threads must be from 1 to 1,024")


@pytest.mark.skipif(shutil.which("tmux") is None and os.environ.get("CI") != "true", reason="tmux not installed")
def test_on_a_terminal_the_search_is_drawn_live_in_colour_unless_no_color(small_npz, tmp_path):
    """In a real terminal (tmux): the trials bar, the running trial's epoch, step, images/s and ETA, in colour;
    with NO_COLOR set, the same display without colour."""
    colour = re.compile(r"\x1b\[[0-9;]*?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")  # an SGR foreground colour
    screen = _live_screen(small_npz, tmp_path / "colour", "")
    plain = _strip(screen)
    assert "trials" in plain and "0/1" in plain, plain
    assert "trial 0 epoch" in plain and "step " in plain and "img/s" in plain and "ETA" in plain, plain
    assert colour.search(screen), plain
    no_colour = _live_screen(small_npz, tmp_path / "no-colour", "NO_COLOR=1")
    assert "trial 0 epoch" in _strip(no_colour) and not colour.search(no_colour), repr(no_colour[:2000])


def _live_screen(npz, folder, env_extra: str) -> str:
    """The tmux screen (with its escape codes) once a search's live display shows a training step."""
    folder.mkdir()
    session = f"budgetnas-test-{os.getpid()}-{folder.name}"
    # Thousands of epochs: on an idle machine 30 epochs of this tiny set end within a second, and the live
    # display is gone before the screen is read; the session is killed once a training step shows.
    command = shlex.join([sys.executable, "-m", "budgetnas", "search", "--budget", "3k", "--dataset",
                          f"npz:{npz}", "--epochs", "5000", "--trials", "1", "--no-early-stop",
                          "--storage", f"sqlite:///{folder}/s.db", "--device", "cpu", "--threads", "1"])
    env = f"PYTHONPATH={shlex.quote(str(REPO))} OMP_NUM_THREADS=1 {env_extra}"
    tmux = ["tmux", "-L", session]  # a server of its own: no race with another session's shutdown
    # The pane outlives the command (sleep), so a search that fails shows its error in the assertion.
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "30",
                    f"cd {shlex.quote(str(folder))} && env {env} {command}; sleep 600"], check=True)
    try:
        screen, deadline = "", time.time() + 120
        while time.time() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-e", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            plain = _strip(screen)
            if "img/s" in plain and "step " in plain and "trial 0 epoch" in plain and "━" in plain:
                break
            time.sleep(0.5)
        return screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def _strip(screen: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", screen)


def test_remaining_work_eta_comes_from_measured_progress():
    left = Remaining(total=10.0)
    assert left.at(1.0) is None  # one timed update: no speed yet
    time.sleep(0.05)
    eta = left.at(2.0)
    assert eta is not None and eta > 0  # 8 units left at the measured rate
    assert left.at(10.0) == 0.0


def test_accuracies_and_counts_read_the_same_everywhere():
    from budgetnas.fmt import chance_hint, percent, plural

    assert percent(0.91274) == "91.27%" and percent(None) == "-"
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs"
    assert "too short" in chance_hint(0.1, 10, 1) and "--epochs" in chance_hint(0.1, 10, 1)
    assert "learning rate" in chance_hint(0.11, 10, 20)
    assert chance_hint(0.6, 10, 1) is None


def test_bench_says_its_no_gpu_note_once(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the note is about a missing GPU")
    proc = cli("bench", "fcn-50k", "--steps", "1", "--warmup", "0", "--devices", "cpu,cuda", "--subset", "600")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("no CUDA GPU is visible") == 1


def test_an_onnx_export_that_differs_from_the_model_is_refused(tmp_path, monkeypatch):
    """The check is real: a file whose outputs differ from the model's is deleted and reported."""
    import torch

    from budgetnas import onnxexport
    from budgetnas.data import Data, Split
    from budgetnas.errors import RunFailure
    from budgetnas.model import build_model
    from budgetnas.spec import FCNSpec
    from budgetnas.trainer import Recipe

    x = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(40) % 2
    data = Data(name="toy", input_shape=(1, 4, 4), num_classes=2, classes=("a", "b"), mean=(0.5,), std=(0.25,),
                train=Split(x, y), val=Split(x[:20], y[:20]))
    model = build_model(FCNSpec(hidden=(8,)), (1, 4, 4), 2)
    good = onnxexport.export_onnx(model, data, Recipe(), tmp_path / "m.onnx")
    assert good.exists()
    monkeypatch.setattr(onnxexport, "TOLERANCE", -1.0)  # nothing can pass: the file must go
    with pytest.raises(RunFailure, match="ONNX export"):
        onnxexport.export_onnx(model, data, Recipe(), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_the_trainer_reports_every_step_of_every_epoch(tiny_npz):
    from budgetnas.data import load_dataset
    from budgetnas.spec import FCNSpec
    from budgetnas.trainer import Recipe, train

    data = load_dataset(f"npz:{tiny_npz}", subset=300)
    steps = []
    train(FCNSpec(hidden=(8,)), data, Recipe(epochs=2, batch_size=128), device="cpu", precision="fp32",
          on_step=lambda *call: steps.append(call))
    n = len(data.train)
    per_epoch = -(-n // 128)
    assert [(e, s) for e, s, _, _ in steps] == [(e, s) for e in (1, 2) for s in range(1, per_epoch + 1)]
    assert all(total == per_epoch for _, _, total, _ in steps)
    assert sum(images for e, _, _, images in steps if e == 1) == n
