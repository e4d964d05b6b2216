"""``budgetnas dashboard``: a real optuna-dashboard server in a subprocess, queried over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest
from conftest import REPO
from optuna.trial import TrialState, create_trial

from budgetnas.records import StudySettings
from budgetnas.storage import open_storage
from budgetnas.study import create_or_load

optuna.logging.set_verbosity(optuna.logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_study(url: str) -> None:
    """A budgetnas study with one trained-looking trial and one rejected candidate."""
    settings = StudySettings(family="cnn", budget=3000, dataset="fashion-mnist", epochs=2,
                             objectives=("accuracy", "runtime"), sampler="tpe", parameterisation="fit",
                             space_version=1)
    study = create_or_load(open_storage(url), "cnn-3k-fashion-mnist", settings)
    study.add_trial(create_trial(values=[0.81, 4.5], user_attrs={"params": 2950,
                                                                 "val_accuracy_curve": [0.74, 0.81]}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"params": 9000, "rejected": "over budget"}))


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_dashboard_serves_the_study_and_its_trials(tmp_path, kind):
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.journal"
    make_study(url)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "budgetnas", "dashboard", "--storage", url, "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # a loaded CI machine imports slowly
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", deadline)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["cnn-3k-fashion-mnist"]
        assert studies[0]["directions"] == ["maximize", "minimize"]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline)
        trials = detail["trials"]
        assert [t["state"] for t in trials] == ["Complete", "Pruned"]
        assert trials[0]["values"] == [0.81, 4.5]
        attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
        assert attrs["params"] == "2950"
        assert detail["objective_names"] == ["val_accuracy", "train_seconds"]  # from study.set_metric_names
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert f"dashboard: http://127.0.0.1:{port}/dashboard" in err
    assert "Traceback" not in err


def test_dashboard_refuses_a_missing_storage_file(tmp_path, capsys):
    from budgetnas.cli import main

    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path}/missing.db", "--port", str(free_port())]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no storage file at")
    assert not (tmp_path / "missing.db").exists()


def test_dashboard_refuses_a_busy_port(tmp_path, capsys):
    from budgetnas.cli import main

    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", url, "--port", str(port)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: cannot listen on 127.0.0.1:") and "--port" in last


def test_dashboard_serves_each_trials_architecture_note_and_learning_curve(tmp_path):
    """A trained trial's note, readable attributes and learning-curve artifact, through the real server;
    and no Optuna UserWarning in the server's console while the study pages are answered."""
    from optuna.distributions import FloatDistribution

    from budgetnas.spec import CNNSpec, ConvBlock
    from budgetnas.trainer import PAPER_RECIPE
    from budgetnas.trialnotes import annotate

    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url)
    study = optuna.load_study(study_name="cnn-3k-fashion-mnist", storage=open_storage(url))
    for names in (("conv1_width", "fill", "conv3_width"), ("conv1_width", "fill")):  # a conditional parameter
        # seen in one trial only: the importance panel warned about it on every page load
        study.add_trial(create_trial(values=[0.1 * len(names), 1.0], params={n: 0.1 * len(names) for n in names},
                                     distributions={n: FloatDistribution(0.0, 1.0) for n in names}))
    spec = CNNSpec(conv=(ConvBlock(12, 3, pool=2, batch_norm=True), ConvBlock(7, 5, pool=None)), fc=(20,), head="gap")

    # Started before any trial has a learning curve (no artifact folder yet), as while a search's first trial
    # trains: the curve stored afterwards must still be served.
    assert not list(tmp_path.glob("*.artifacts"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}  # show every warning there is
    server = subprocess.Popen([sys.executable, "-m", "budgetnas", "dashboard", "--storage", url, "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        base = f"http://127.0.0.1:{port}"
        study_id = get_json(f"{base}/api/studies", deadline)["study_summaries"][0]["study_id"]
        trial = study.ask()
        annotate(trial, url, spec, PAPER_RECIPE, 2890, 3000, 1_234_567, [0.71, 0.8], [1.2, 0.6], 3.5)
        study.tell(trial, [0.8, 3.5])
        shown = [t for t in get_json(f"{base}/api/studies/{study_id}", deadline)["trials"]
                 if t["number"] == trial.number][0]
        body = shown["note"]["body"]
        assert "conv 12k3p2bn,7k5 | gap | fc 20" in body and "12 channels, 3x3 kernel, max-pool 2x2, batch norm" in body
        assert "2,890 of 3,000 (96.3% of the budget)" in body and "80.00% after 2 epochs" in body
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["conv_channels"] == "[12, 7]" and attrs["kernels"] == "[3, 5]" and attrs["fc_widths"] == "[20]"
        (artifact,) = shown["artifacts"]
        assert artifact["mimetype"] == "image/png"
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{shown['trial_id']}/{artifact['artifact_id']}",
                                    timeout=30) as response:
            assert response.read(8) == b"\x89PNG\r\n\x1a\n"
        get_json(f"{base}/api/studies/{study_id}/param_importances", deadline)  # warned on every load before
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err and "UserWarning" not in err, err


@pytest.mark.parametrize("signum", [2, 15], ids=["sigint", "sigterm"])  # SIGINT (Ctrl-C), SIGTERM
def test_dashboard_stops_cleanly_on_a_signal_even_while_answering(tmp_path, signum):
    """A signal during requests stops the server: exit 130, no traceback (wsgiref used to print one and serve on)."""
    import signal
    import threading

    url = f"journal:{tmp_path}/s.journal"
    make_study(url)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "budgetnas", "dashboard", "--storage", url, "--port", str(port)],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def hammer() -> None:  # keep requests in flight so the signal is likely to land inside one
        while not done.is_set():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)

    try:
        get_json(f"http://127.0.0.1:{port}/api/studies", time.monotonic() + 120)
        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        server.send_signal(signal.Signals(signum))
        _, err = server.communicate(timeout=30)
    finally:
        done.set()
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "dashboard stopped" in err


def test_a_refused_dashboard_prints_no_address(tmp_path):
    make_study(f"journal:{tmp_path}/s.journal")
    proc = subprocess.run([sys.executable, "-m", "budgetnas", "dashboard", "--storage", f"journal:{tmp_path}/s.journal",
                           "--port", "99999"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "dashboard: http" not in proc.stderr and "--port must be between 1 and 65535" in proc.stderr
