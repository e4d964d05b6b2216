"""``--workers N`` on a journal file (no server needed), and what a killed worker leaves there.

Journal storage has no heartbeat: a SIGKILLed worker's trial stays RUNNING, the surviving
worker stops one short of the total instead of waiting for ever, the parent says what to do,
and ``python -m budgetnas.storage fail-running`` + rerunning the search finishes the study.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli
from optuna.trial import TrialState
from pg import assert_well_formed, counted, kill_a_training_worker, search_args, start_cli

from budgetnas.storage import open_storage
from budgetnas.workers import StopAtTotal, threads_per_worker


def test_threads_are_shared_out():
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(4, cores=2) == 1


@pytest.mark.parametrize("total, runs_here", [(4, 1), (5, 2), (3, 1)])
def test_stop_at_total_counts_running_trials_without_heartbeat(tmp_path, total, runs_here):
    """Without a heartbeat a worker does not start a trial that others' running ones would overshoot."""
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path}/s.log"))
    study.tell(study.ask(), 1.0)
    study.ask(), study.ask()  # two other workers' trials, still running
    study.optimize(lambda trial: 1.0, n_trials=10, callbacks=[StopAtTotal(total, lambda trial, retried: True)])
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 1 + runs_here  # 1 finished + 2 running + runs_here reaches total (at least one runs)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds worker processes through /proc (Linux)")
def test_killed_worker_on_journal(tiny_npz, tmp_path):
    url, study, total = f"journal:{tmp_path}/study.log", "journal-kill", 6
    parent = start_cli([*search_args(tiny_npz, url, study, trials=total, epochs=2), "--workers", "2",
                      "--pruner", "none", "--max-mult-adds", "none"], tmp_path)  # every trial trains both epochs
    try:
        kill_a_training_worker(parent, lambda: optuna.load_study(study_name=study, storage=open_storage(url)))
        _, err = parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err[-3000:]
    assert "no heartbeat" in err and "fail-running" in err

    def trials():
        return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)

    orphans = [t for t in trials() if t.state == TrialState.RUNNING]
    assert len(orphans) == 1  # the killed worker's trial; the survivor stopped instead of waiting for it
    assert len(counted(trials())) == total - 1

    fix = subprocess.run([sys.executable, "-m", "budgetnas.storage", "fail-running", "--storage", url,
                          "--study", study], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(REPO), "PATH": ""}, timeout=120)
    assert fix.returncode == 0 and f"failed 1 running trial(s): {orphans[0].number}" in fix.stdout, fix.stderr

    again = run_cli(*search_args(tiny_npz, url, study, trials=total, epochs=2), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    finished = trials()
    assert_well_formed(finished)
    assert len(counted(finished)) == total
    retry = [t for t in finished if t.system_attrs.get("failed_trial") == orphans[0].number]
    assert len(retry) == 1 and orphans[0].params.items() <= retry[0].params.items()
    assert retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_study_resumes(tiny_npz, tmp_path):
    # A total far beyond what finishes before the Ctrl-C: on an idle machine 4 tiny trials can all
    # end before the first poll sees one, and the search would exit 0 with nothing to interrupt.
    url, study = f"journal:{tmp_path}/study.log", "journal-ctrl-c"
    # Started with SIGINT ignored, as a shell starts a background job (`budgetnas search ... &`): the
    # search must still answer it, so that neither this test nor a user's `kill -INT` depends on how
    # the parent shell ran it.
    parent = start_cli([*search_args(tiny_npz, url, study, trials=200, epochs=2), "--workers", "2"], tmp_path,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def trials():
        try:
            return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)
        except KeyError:
            return []

    try:
        deadline = time.time() + 300
        while parent.poll() is None and time.time() < deadline and not any(t.state.is_finished() for t in trials()):
            time.sleep(0.2)
        parent.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal does (the workers have their own session)
        _, err = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "--workers 2" in err.split("Resume with:")[-1]
    assert not [t for t in trials() if t.state == TrialState.RUNNING]  # every worker saved its trial

    total = len(counted(trials())) + 2  # resume for two more trials
    again = run_cli(*search_args(tiny_npz, url, study, trials=total, epochs=2), "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_well_formed(trials())
    assert total <= len(counted(trials())) <= total + 1
