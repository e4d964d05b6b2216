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
