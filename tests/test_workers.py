"""``--workers N`` on a journal file (no server needed), and what a killed worker leaves there.

Journal storage has no heartbeat: a SIGKILLed worker's trial stays RUNNING, the surviving
worker stops one short of the total instead of waiting for ever, the parent says what to do,
and ``python -m budgetnas.storage fail-running`` + rerunning the search finishes the study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli
from optuna.trial import TrialState
from pg import assert_well_formed, counted, kill_a_training_worker, search_args, start_cli

from budgetnas.errors import UsageError
from budgetnas.storage import open_storage
from budgetnas.workers import StopAtTotal, available_cores, resolve_workers, threads_per_worker


def test_threads_are_shared_out():
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(4, cores=2) == 1


def test_auto_is_one_worker_per_core_where_the_storage_and_device_allow():
    assert resolve_workers("auto", "journal:s.log", cores=4) == 4
    assert resolve_workers("auto", "journal:s.log", cores=1) == 1
    assert resolve_workers("auto", None, cores=4) == 1  # SQLite: one writer, the storage is never switched
    assert resolve_workers("auto", "journal:s.log", device_type="cuda", cores=4) == 1
    assert resolve_workers("3", None) == 3 and resolve_workers(2, "journal:s.log") == 2  # numbers as given
    assert resolve_workers("auto", "journal:s.log") == available_cores()
    for bad in ("0", "-1", "two", 0, True):
        with pytest.raises(UsageError, match="--workers"):
            resolve_workers(bad, "journal:s.log")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_auto_follows_the_cpu_affinity():
    """Cores are the ones this process may use (taskset, a container's cpuset), not the machine's."""
    code = ("from budgetnas.workers import available_cores, resolve_workers; "
            "print(available_cores(), resolve_workers('auto', 'journal:s.log'))")
    one = next(iter(os.sched_getaffinity(0)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=lambda: os.sched_setaffinity(0, {one}))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]
    assert available_cores() == len(os.sched_getaffinity(0))


def test_the_last_place_goes_to_one_worker_only(tmp_path):
    """Two workers counting at the same moment cannot both take the study's last trial (the file lock)."""
    study = optuna.create_study(storage=open_storage(f"journal:{tmp_path}/s.log"))
    study.tell(study.ask(), 1.0)  # 1 of 2 finished: one place left
    lock = str(tmp_path / "trials.lock")
    first, second = (StopAtTotal(2, lambda trial, retried: True, lock=lock) for _ in range(2))
    assert first.room(study)  # and holds the lock until its trial is RUNNING
    answer = []
    other = threading.Thread(target=lambda: answer.append(second.room(study)))
    other.start()
    other.join(timeout=0.5)
    assert other.is_alive() and not answer  # waits for the lock instead of counting a stale study
    study.ask()  # the first worker's trial is RUNNING
    first.release()
    other.join(timeout=30)
    assert answer == [False]  # no heartbeat on a journal: it stops instead of taking a second last place


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
    assert f"trial(s) {orphans[0].number} stay RUNNING" in err, err[-3000:]
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
    assert "fail-running" not in err, err[-3000:]  # so no worker's exit may advise failing a running trial

    total = len(counted(trials())) + 2  # resume for two more trials
    again = run_cli(*search_args(tiny_npz, url, study, trials=total, epochs=2), "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_well_formed(trials())
    assert total <= len(counted(trials())) <= total + 1


@pytest.mark.slow
def test_workers_auto_keeps_the_exact_total_and_resumes(tiny_npz, tmp_path):
    """--workers auto on a journal file: one worker per core, and the study ends with exactly --trials
    (an odd total on two cores is where two workers finishing together would both start the last trial)."""
    url, study = f"journal:{tmp_path}/study.log", "auto-total"

    def trials():
        return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials(deepcopy=False)

    errors = []
    for total in (3, 4):  # 4: the second run resumes the study for one more trial
        proc = run_cli(*search_args(tiny_npz, url, study, trials=total), "--workers", "auto", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        errors.append(proc.stderr)
        assert_well_formed(trials())
        assert len(counted(trials())) == total
        assert not [t for t in trials() if t.state == TrialState.RUNNING]
    if available_cores() > 1:
        assert f"{min(available_cores(), 3)} workers, 1 CPU thread(s) each" in errors[0]
    assert "workers," not in errors[1]  # one trial left: no second process for it
