"""Soak: four independent workers on one PostgreSQL study, SIGKILLed and restarted, and a server restart.

Real ``budgetnas search`` processes (the multi-machine way: one process per machine, same
command), a private real PostgreSQL cluster (``tests/pg.py``), real training on the tiny
Fashion-MNIST slice (1 epoch, a 5k budget). Every few finished trials one worker is
SIGKILLed and started again; once, the server is stopped and started while they train.
At the end the study must hold exactly ``--trials`` counted trials, consecutive unique
numbers, nothing RUNNING, no candidate proposed twice (all workers use the default seed),
and every trial a kill left behind must have been retried.
Heartbeats are shortened through the environment (1 s interval, 3 s grace).

Run it with ``pytest tests/test_soak.py -s`` to see its figures (duration, kills, retries).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO
from optuna.trial import TrialState
from pg import FAST_HEARTBEAT, assert_well_formed, counted, own_postgres, postgres_url, search_args  # noqa: F401, F811

from budgetnas.storage import Heartbeat, open_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOTAL, WORKERS, KILL_EVERY, RESTART_SERVER_AT = 60, 4, 6, 30


def _trials(url: str, study: str) -> list | None:
    try:
        storage = open_storage(url, heartbeat=Heartbeat(interval=60))
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except Exception:  # the study does not exist yet, or the server is down
        return None


def test_soak_four_workers_kills_and_a_server_restart(tiny_npz, tmp_path, own_postgres):
    """A plain test (it was a tolerant xfail while one local failure, 2026-12-01, stayed unexplained): since the
    last gap was fixed (resilience.retry_orphaned_failures) 59 of 60 local runs and every CI run passed."""
    try:
        _soak(tiny_npz, tmp_path, own_postgres)
    except Exception as exc:  # print the error whole (shown with -s), so that any failure is diagnosable,
        print(f"soak failed: {type(exc).__name__}: {str(exc)[:4000]}")  # the harness's (pg_ctl) as well as ours
        stderr = getattr(exc, "stderr", None)  # a pg_ctl that failed says why on its stderr
        if stderr:
            print(f"  stderr: {stderr[-2000:]!r}")
        raise


def _soak(tiny_npz, tmp_path, own_postgres) -> None:
    url, study = own_postgres.url, "soak"
    env = {**os.environ, "PYTHONPATH": str(REPO), **FAST_HEARTBEAT, "BUDGETNAS_STORAGE_RETRY": "60"}
    command = [sys.executable, "-m", "budgetnas", *search_args(tiny_npz, url, study, trials=TOTAL, epochs=1)]
    logs: list[Path] = []  # every worker process's stderr, in start order
    current: dict[int, Path] = {}  # the log of each worker slot's live process

    def start(index: int) -> subprocess.Popen:
        log = current[index] = tmp_path / f"worker{index}-{len(logs)}.log"
        logs.append(log)
        with log.open("w") as err:  # a file, not a pipe: a full pipe would block a chatty worker
            return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)

    began = time.time()
    workers = [start(i) for i in range(WORKERS)]
    kills, server_restarted, next_kill, victim = 0, False, KILL_EVERY, 0
    try:
        while any(w.poll() is None for w in workers):
            assert time.time() - began < 900, "the soak did not finish in 15 minutes"
            failed = [(w.returncode, current[i]) for i, w in enumerate(workers) if w.returncode not in (None, 0)]
            assert not failed, [(code, log.read_text()[-3000:]) for code, log in failed]
            time.sleep(0.3)
            trials = _trials(url, study)
            if trials is None:
                continue
            done = len(counted(trials))
            # Not while a restarted worker is still starting: a worker that finds no server exits at once (exit 2).
            connected = all("\ntrial " in current[i].read_text() for i, w in enumerate(workers) if w.poll() is None)
            if not server_restarted and done >= RESTART_SERVER_AT and connected:
                own_postgres.stop()
                time.sleep(3)
                own_postgres.start()
                server_restarted = True
            elif done >= next_kill and done <= TOTAL - 6:
                victim = (victim + 1) % WORKERS
                if workers[victim].poll() is None:
                    workers[victim].send_signal(signal.SIGKILL)
                    workers[victim].wait()
                    workers[victim] = start(victim)
                    kills += 1
                next_kill += KILL_EVERY
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    seconds = time.time() - began
    assert [w.returncode for w in workers] == [0] * WORKERS, [current[i].read_text()[-3000:] for i in range(WORKERS)]
    assert not [log for log in logs if "Traceback" in log.read_text()], "a worker printed a traceback"
    assert server_restarted and kills >= 5

    trials = _trials(url, study)
    assert trials is not None, "the study could not be read back after the workers ended"
    assert_well_formed(trials)  # consecutive unique numbers, nothing RUNNING
    assert len(counted(trials)) == TOTAL, [(t.number, t.state.name, t.user_attrs.get("surplus")) for t in trials]
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    killed = [t.number for t in trials if t.state == TrialState.FAIL
              and not {"failed", "surplus", "interrupted"} & set(t.user_attrs)]
    assert set(killed) <= retried, [(t.number, t.params, sorted(t.user_attrs), t.system_attrs,  # every kill's
                                     t.datetime_start, t.datetime_complete)  # trial was retried
                                    for t in trials if t.number in set(killed) - retried]
    fresh = [tuple(sorted(t.params.items())) for t in trials if "failed_trial" not in t.system_attrs and t.params]
    assert len(set(fresh)) == len(fresh), "independent workers with one --seed proposed the same candidate"
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert all(t.state.is_finished() for t in retries)
    figures = {"seconds": round(seconds, 1), "workers": WORKERS, "kills": kills, "trials_killed_mid_run": len(killed),
               "retries": len(retries), "surplus": sum("surplus" in t.user_attrs for t in trials),
               "trials_in_study": len(trials), "counted": len(counted(trials)), "server_restarts": 1}
    print("soak figures:", json.dumps(figures))
