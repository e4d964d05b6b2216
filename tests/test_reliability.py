"""Reliability: torn journals, sizes checked before allocation, outages, signals, secrets (issue 15).

Real files, real subprocesses, real training on the tiny Fashion-MNIST slice. Bad-input cases
that fit the one-line-error table live in ``test_bad_input.py``; this module holds the crash
tests, the byte-identical checks and the library-level checks.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from conftest import REPO, assert_one_line_error, run_cli
from pg import own_postgres, postgres_url  # noqa: F401, F811

from budgetnas.errors import StorageError
from budgetnas.journal import check_journal, repair_journal
from budgetnas.storage import Heartbeat, open_storage

TORN = b'{"op_code":4,"worker_id":"dead-worker","trial_id":0,"par'


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def storage_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "budgetnas.storage", *args], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": ""}, timeout=120)


def small_search(npz: Path, url: str, trials: int = 1, *extra: str) -> list[str]:
    return ["search", "--budget", "5k", "--dataset", f"npz:{npz}", "--trials", str(trials), "--epochs", "1",
            "--device", "cpu", "--storage", url, "--study", "j", *extra]


def _journal_with_trials(path: Path, n: int = 3) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(f"journal:{path}"), study_name="s")
    for value in range(n):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), value)


# --- journals -----------------------------------------------------------------------------------

def test_torn_journal_is_refused_byte_identical_then_repaired_and_resumed(tiny_npz, tmp_path, cli):
    """A crash mid-write leaves a partial last line: no command appends to it; repair keeps every trial."""
    journal = tmp_path / "study.log"
    first = cli(*small_search(tiny_npz, f"journal:{journal}"))
    assert first.returncode == 0, first.stderr[-2000:]
    records = check_journal(journal).records
    with journal.open("ab") as f:
        f.write(TORN)
    before = digest(journal)

    for args in (small_search(tiny_npz, f"journal:{journal}", 2),  # resume
                 small_search(tiny_npz, f"journal:{journal}", 2, "--epochs", "3"),  # resume, other settings
                 ["report", "--storage", f"journal:{journal}", "--out", str(tmp_path / "r.html")]):
        assert_one_line_error(cli(*args), 2, "repair journal:")
        assert digest(journal) == before, f"budgetnas {args[0]} changed the torn journal"
    fail_running = storage_cli("fail-running", "--storage", f"journal:{journal}", "--study", "j", cwd=tmp_path)
    assert fail_running.returncode == 2 and "repair" in fail_running.stderr, fail_running.stderr
    assert digest(journal) == before

    fixed = storage_cli("repair", f"journal:{journal}", cwd=tmp_path)
    assert fixed.returncode == 0 and f"kept {records} complete records" in fixed.stdout, fixed.stderr
    backups = list(tmp_path.glob("study.log.torn-*"))
    assert len(backups) == 1 and digest(backups[0]) == before  # the original, byte for byte
    assert check_journal(journal).healthy

    again = cli(*small_search(tiny_npz, f"journal:{journal}", 2))
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name="j", storage=open_storage(f"journal:{journal}")).trials
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)


def test_repair_keeps_a_record_glued_onto_a_torn_one(tmp_path):
    """What an older budgetnas (plain Optuna) did: append after the torn tail. Repair still keeps that record."""
    path = tmp_path / "j.log"
    _journal_with_trials(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + TORN + lines[-1])  # trial 2's last record glued onto torn bytes
    with pytest.raises(StorageError, match="unreadable line"):
        open_storage(f"journal:{path}")
    result = repair_journal(path)
    assert result.backup is not None and result.dropped_bytes == len(TORN)
    values = [t.value for t in optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}")).trials]
    assert values == [0.0, 1.0, 2.0]


def test_guarded_journal_never_appends_after_a_torn_tail(tmp_path):
    """A writer that dies mid-record while this process runs: the next append is refused, the file unchanged."""
    path = tmp_path / "j.log"
    _journal_with_trials(path, 1)
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}"))
    with path.open("ab") as f:
        f.write(TORN)
    before = digest(path)
    with pytest.raises(StorageError, match="partial last record"):
        study.tell(study.ask(), 1.0)
    assert digest(path) == before


def test_repair_of_a_healthy_or_foreign_file_changes_nothing(tmp_path):
    path = tmp_path / "j.log"
    _journal_with_trials(path, 2)
    before = digest(path)
    assert repair_journal(path).backup is None and digest(path) == before
    noise = tmp_path / "noise.log"
    noise.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(StorageError, match="no journal record"):
        repair_journal(noise)
    assert noise.read_bytes() == bytes(range(256)) * 8 and not list(tmp_path.glob("noise.log.*"))


# --- sizes and edges --------------------------------------------------------------------------

def test_budget_parsing_is_exact_decimal_and_ascii_only():
    from budgetnas.budget import parse_budget
    from budgetnas.errors import UsageError

    assert [parse_budget(t) for t in ("1.005k", "0.3k", "1.1M", "2.5G", "100_000")] == \
        [1005, 300, 1_100_000, 2_500_000_000, 100_000]
    for text in ("\u0661\u0660\u0660k", "\uff11\uff10\uff10", "1.0005k"):  # Arabic-Indic, full-width, a fraction
        with pytest.raises(UsageError):
            parse_budget(text)


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_bad_seed_creates_nothing(cli, tiny_npz, tmp_path, seed):
    db = tmp_path / "fresh.db"
    proc = cli("search", "--budget", "5k", "--dataset", f"npz:{tiny_npz}", "--trials", "1", "--storage",
               f"sqlite:///{db}", f"--seed={seed}")
    assert_one_line_error(proc, 2, "--seed")
    assert not db.exists()


def test_model_memory_is_estimated_before_building():
    from budgetnas.errors import UsageError
    from budgetnas.cost import model_bytes
    from budgetnas.limits import available_memory
    from budgetnas.model import build_model
    from budgetnas.spec import FCNSpec

    small = FCNSpec(hidden=(16,))
    assert model_bytes(small, (1, 28, 28), 10) == (784 * 16 + 16 + 16 * 10 + 10) * 4
    assert model_bytes(small, (1, 28, 28), 10, batch=8, training=True) > 4 * model_bytes(small, (1, 28, 28), 10)
    huge = FCNSpec(hidden=(65536, 65536, 65536, 65536))  # 12.9G parameters: 51 GB of weights
    if model_bytes(huge, (1, 28, 28), 10) <= available_memory():
        pytest.skip("this machine has more memory than the huge model needs")
    with pytest.raises(UsageError, match="memory available"):
        build_model(huge, (1, 28, 28), 10)


# --- outages, kills and signals -------------------------------------------------------------------

def load_trials(url: str, study: str) -> list:
    return optuna.load_study(study_name=study, storage=open_storage(url, heartbeat=Heartbeat(interval=60))).get_trials(
        deepcopy=False)


def _running_for(url: str, study: str, seconds: float = 0.5) -> list:
    from optuna.trial import TrialState

    try:
        trials = load_trials(url, study)
    except Exception:  # no database or study yet
        return []
    now = time.time()
    return [t for t in trials if t.state == TrialState.RUNNING and now - t.datetime_start.timestamp() > seconds]


def _wait_for(predicate, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_postgres_stopped_mid_trial_is_one_line_then_resumes(tiny_npz, tmp_path, own_postgres, workers):
    """The server stops while a trial trains: bounded retries, one error line (exit 1), no thread's traceback;
    with several local workers too (each reports to the parent, which prints the one line)."""
    from optuna.trial import TrialState
    from pg import FAST_HEARTBEAT, assert_well_formed, counted, retried, search_args, start_cli

    url, study = own_postgres.url, "outage"
    env = {**FAST_HEARTBEAT, "BUDGETNAS_STORAGE_RETRY": "4"}
    args = search_args(tiny_npz, url, study, trials=100, epochs=40) + ["--workers", str(workers)]
    proc = start_cli(args, tmp_path, env=env)
    try:
        # A trial early in training has seconds to go; a trial that is merely RUNNING may be one about to be
        # rejected over budget or ending, finished before the server is down (CI saw that).
        _wait_for(lambda: [t for t in _running_for(url, study, seconds=0)
                           if 1 <= len(t.user_attrs.get("val_accuracy_curve", ())) <= 10], proc)
        own_postgres.stop()
        started = time.time()
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    for noise in ("Traceback", "Exception in thread", "UnboundLocalError", "internal error"):
        assert noise not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost the database" in errors[0] and "within 4s" in errors[0], err[-3000:]
    assert time.time() - started < 60  # bounded: 4 s of retries, not a hang

    own_postgres.start()
    left_running = {t.number for t in load_trials(url, study) if t.state == TrialState.RUNNING}
    assert left_running, "no trial was training when the server stopped: the test did not test the outage"
    time.sleep(4)  # past the 3 s grace: the trials that were running are failed as stale and retried
    total = len(counted(load_trials(url, study))) + 1
    again = run_cli(*search_args(tiny_npz, url, study, trials=total, epochs=40), cwd=tmp_path, env=FAST_HEARTBEAT)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load_trials(url, study)
    assert_well_formed(trials)
    assert len(counted(trials)) == total
    assert left_running <= retried(trials)  # each trial the outage interrupted was retried


def _kill_mid_trial(npz: Path, folder: Path, url: str, study: str) -> None:
    """Start a search and SIGKILL it while its first trial runs: the trial stays RUNNING, its heartbeat stops."""
    from pg import FAST_HEARTBEAT, search_args, start_cli

    proc = start_cli(search_args(npz, url, study, trials=2, epochs=2), folder, env=FAST_HEARTBEAT)
    try:
        _wait_for(lambda: _running_for(url, study), proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.slow
def test_killed_search_rerun_says_what_it_waits_for_and_retries_quietly(tiny_npz, tmp_path):
    """SIGKILL during the first trial; the rerun waits out the heartbeat grace aloud, then retries it quietly."""
    from pg import FAST_HEARTBEAT, assert_well_formed, counted, search_args

    url, study = f"sqlite:///{tmp_path}/s.db", "killed"
    _kill_mid_trial(tiny_npz, tmp_path, url, study)
    # A grace longer than the rerun's start-up and first trial: the rerun then has to wait for trial 0.
    slow_grace = {**FAST_HEARTBEAT, "BUDGETNAS_HEARTBEAT_GRACE": "30"}
    again = run_cli(*search_args(tiny_npz, url, study, trials=2, epochs=2), cwd=tmp_path, env=slow_grace)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "waiting for running trial(s) 0" in again.stderr and "30s old" in again.stderr, again.stderr[-3000:]
    assert "Warning" not in again.stderr, again.stderr[-3000:]  # no "constraint value is ignored" on the retry
    trials = load_trials(url, study)
    assert_well_formed(trials)
    assert len(counted(trials)) == 2 and [t for t in trials if t.system_attrs.get("failed_trial") == 0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_stops_a_rerun_that_waits_for_a_dead_workers_trial(tiny_npz, tmp_path, signum):
    """The rerun of a killed search waits for the dead trial's heartbeat to go stale (outside Optuna's optimize,
    where study.stop() refuses): one Ctrl-C, or the one SIGTERM a batch system sends, must end the wait."""
    from pg import FAST_HEARTBEAT, search_args, start_cli

    url, study = f"sqlite:///{tmp_path}/s.db", "waits"
    _kill_mid_trial(tiny_npz, tmp_path, url, study)
    # --trials 1: the dead trial fills the study, so the rerun waits before it starts optimize().
    rerun = start_cli(search_args(tiny_npz, url, study, trials=1, epochs=2), tmp_path,
                      env={**FAST_HEARTBEAT, "BUDGETNAS_HEARTBEAT_GRACE": "300"})
    try:
        err, deadline = "", time.time() + 120
        while "waiting for running trial(s) 0" not in err:
            assert rerun.poll() is None and time.time() < deadline, err[-3000:]
            if select.select([rerun.stderr], [], [], 1.0)[0]:
                err += os.read(rerun.stderr.fileno(), 4096).decode()
        rerun.send_signal(signum)
        _, rest = rerun.communicate(timeout=30)  # before the fix: still waiting after one signal
    finally:
        if rerun.poll() is None:
            rerun.kill()
    assert rerun.returncode == 130, (err + rest)[-3000:]
    assert "Traceback" not in err + rest


def test_an_interrupt_raised_inside_a_weakref_callback_is_delivered_again_not_printed(capsys):
    """CI once saw the SIGTERM handler's KeyboardInterrupt land inside a weakref callback, where Python
    can only print it ("Exception ignored in ...", a traceback) and drop it. It must reach the search."""
    import weakref

    from budgetnas.search import _CtrlC

    class Thing:
        pass

    def callback(_ref: object) -> None:
        raise KeyboardInterrupt  # what the handler raises when the signal arrives during the callback

    ctrl = _CtrlC()
    with pytest.raises(KeyboardInterrupt):
        with ctrl:
            ctrl.requested = True  # the first signal arrived; a second one raises at once
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing  # runs the callback
            for _ in range(200):  # the re-delivered interrupt lands here, outside the callback
                time.sleep(0.01)
    assert ref() is None and capsys.readouterr().err == ""


@pytest.mark.slow
def test_sigterm_stops_a_single_process_search_like_ctrl_c(tiny_npz, tmp_path):
    from optuna.trial import TrialState
    from pg import assert_well_formed, search_args, start_cli

    url, study = f"sqlite:///{tmp_path}/s.db", "terminated"
    proc = start_cli(search_args(tiny_npz, url, study, trials=50, epochs=3), tmp_path)
    try:
        _wait_for(lambda: _running_for(url, study), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # 130 is the contract. Known gap (issue 15, open): under CI load the process has twice ended by SIGINT (-2)
    # *after* printing the resume command and returning 130 (a KeyboardInterrupt during interpreter shutdown);
    # the study is saved and resumable either way, which the lines below check.
    assert proc.returncode in (130, -signal.SIGINT), err[-3000:]
    assert "Traceback" not in err and "Resume with:" in err, err[-3000:]
    trials = load_trials(url, study)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert any("interrupted" in t.user_attrs for t in trials)
    assert_well_formed(trials)


# --- independent processes on one study ------------------------------------------------------------

def _ask_params(study, n: int) -> list[dict]:
    from budgetnas.space import sample_spec

    out = []
    for _ in range(n):
        trial = study.ask()
        sample_spec(trial, "cnn", 5_000, (1, 28, 28), 10, "fit")
        out.append(dict(trial.params))
        study.tell(trial, [0.5, 1.0])
    return out


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_two_processes_with_one_seed_propose_different_candidates_and_one_is_reproducible(tmp_path, sampler):
    """Two loaders of one study (two machines, in effect) with the same seed, asking in turn."""
    from budgetnas.records import StudySettings
    from budgetnas.seeding import reseed
    from budgetnas.study import create_or_load

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = StudySettings(family="cnn", budget=5_000, dataset="fashion-mnist", epochs=1,
                             objectives=("accuracy", "runtime"), sampler=sampler, parameterisation="fit",
                             space_version=1)
    shared = f"journal:{tmp_path}/shared.log"
    first = create_or_load(open_storage(shared), "s", settings, sampler, seed=0)
    second = create_or_load(open_storage(shared), "s", settings, sampler, seed=0)  # started at the same moment
    proposals = []
    for _ in range(4):
        proposals += _ask_params(first, 1) + _ask_params(second, 1)
    keys = [tuple(sorted(p.items())) for p in proposals]
    assert len(set(keys)) == len(keys), "two processes proposed the same candidate"
    assert reseed(first.sampler.sampler, 1) >= 1  # the wrapper really reaches the sampler's random state

    again = [create_or_load(open_storage(f"journal:{tmp_path}/{name}.log"), "s", settings, sampler, seed=0)
             for name in ("a", "b")]
    assert _ask_params(again[0], 5) == _ask_params(again[1], 5)  # one process: reproducible from --seed


# --- credentials ----------------------------------------------------------------------------------

SECRET = "s3cret-Pw"


@pytest.mark.parametrize("url", [
    f"postgresql://me:{SECRET}@db:5432/nas",
    f"postgresql://me@db:5432/nas?password={SECRET}",
    f"postgresql://me@db/nas?sslmode=require&password={SECRET}&application_name=x",
    f"postgresql://me@db/nas?sslpassword={SECRET}",
    f"host=db user=me password={SECRET} dbname=nas",
])
def test_every_credential_form_is_redacted(url):
    from budgetnas.storage import command_storage, has_secret, redact

    assert SECRET not in redact(url) and "***" in redact(url) and has_secret(url)
    assert command_storage(url) == command_storage(redact(url)) == "$BUDGETNAS_STORAGE"
    assert not has_secret("postgresql://me@db/nas?sslmode=require") and not has_secret("sqlite:///a@b.db")


def test_printed_commands_are_runnable_without_showing_the_secret(tmp_path):
    """The resume, dashboard and replay commands name $BUDGETNAS_STORAGE, which the shell expands to the URL."""
    import argparse

    from budgetnas.cli.search import commands, resume_command
    from budgetnas.search import SearchConfig, SearchSummary

    url = f"postgresql+psycopg2://me@db:5432/nas?password={SECRET}"
    config = SearchConfig(budget=5000, storage=url, study="s")
    args = argparse.Namespace(timeout=None, device="auto", precision="auto", max_mult_adds=None, workers=1)
    summary = SearchSummary(study="s", storage_url="postgresql+psycopg2://me@db:5432/nas?password=***",
                            objectives=("accuracy", "runtime"), trials=1, complete=1, stopped_early=0, rejected=0,
                            failed=0, wall_seconds=1.0, front=[{"trial": 0}])
    printed = [resume_command(args, config), *commands(summary, config).values()]
    for line in printed:
        assert SECRET not in line and "***" not in line and '--storage "$BUDGETNAS_STORAGE"' in line, line
        # What a shell makes of the printed line: the storage argument is the real URL again.
        words = subprocess.run(["bash", "-c", f"set -- {line.removeprefix('budgetnas ')}; printf '%s\\n' \"$@\""],
                               capture_output=True, text=True, env={"BUDGETNAS_STORAGE": url}, check=True).stdout
        assert words.splitlines()[words.splitlines().index("--storage") + 1] == url


def test_storage_from_the_environment_and_no_secret_on_stderr(cli, tiny_npz, tmp_path):
    """$BUDGETNAS_STORAGE is the storage when --storage is left out; a ?password= URL is never echoed."""
    from test_storage import closed_port

    url = f"postgresql://me@127.0.0.1:{closed_port()}/nas?password={SECRET}"
    for how in ({"env": {"BUDGETNAS_STORAGE": url}}, {}):
        extra = () if how else ("--storage", url)
        proc = cli("search", "--budget", "5k", "--dataset", f"npz:{tiny_npz}", "--trials", "1", *extra, **how)
        assert_one_line_error(proc, 2, "cannot reach database")
        assert SECRET not in proc.stderr + proc.stdout and "password=***" in proc.stderr
    assert not list(tmp_path.glob("*.db"))  # the environment's storage was used, not ./budgetnas.db


def test_load_weights_is_safe_and_load_exported_is_documented_as_trusted_only(tiny_npz, tmp_path, cli):
    import torch

    from budgetnas import export

    assert "Trusted files only" in export.load_exported.__doc__
    out = tmp_path / "run"
    proc = cli("train", "cnn-10k", "--dataset", f"npz:{tiny_npz}", "--epochs", "1", "--device", "cpu",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, config = export.load_weights(out)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and config.spec.family == "cnn"

    class Payload:  # what a crafted file would carry: code that runs when it is unpickled
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "pwned", "ran"))

    torch.save({"weights": Payload()}, out / "model.pt")
    with pytest.raises(Exception):
        export.load_weights(out)
    assert not (tmp_path / "pwned").exists()


def test_a_trial_killed_before_its_first_heartbeat_becomes_stale(tmp_path):
    """Optuna skips trials without any heartbeat: one killed while it was being sampled would stay RUNNING."""
    from optuna.trial import TrialState

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=Heartbeat(interval=1, grace_period=2))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name="s")
    with warnings.catch_warnings():  # ask() with a heartbeat storage, and the "experimental" helper
        warnings.simplefilter("ignore")
        orphan = study.ask()  # created RUNNING; its worker dies before the heartbeat thread starts
        assert storage._get_stale_trial_ids(study._study_id) == []  # too young
        time.sleep(3.5)  # past grace + one interval
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL
    assert [t.system_attrs["failed_trial"] for t in trials if t.state == TrialState.WAITING] == [orphan.number]


def test_a_trial_a_lost_connection_interrupted_is_retried_once_the_database_answers(tmp_path):
    """The soak's gap: a storage error raised inside a trial makes Optuna record it FAIL, and no heartbeat retries it.

    A real SQLite study; the lost connection is a real SQLAlchemy ``OperationalError`` raised where the
    sampler's read would raise it, inside the objective. ``optimize_once`` must wait, then queue that trial's
    retry (once, with the same parameters), and go on.
    """
    from optuna.trial import TrialState
    from sqlalchemy.exc import OperationalError

    from budgetnas.search import _Running, optimize_once

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=Heartbeat(interval=60))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    calls: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        calls.append(trial.number)
        if len(calls) == 3:  # the retry of trial 0, then one new trial
            trial.study.stop()
        if len(calls) == 1:
            raise OperationalError("SELECT trials", {}, ConnectionRefusedError("server closed the connection"))
        return x

    running, said = _Running(objective, None), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert optimize_once(study, running, None, time.perf_counter(), [], said.append) is False  # lost: call again
        assert running.lost and "waiting" in said[-1]
        assert optimize_once(study, running, None, time.perf_counter(), [], said.append) is True
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and not running.lost
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[0].params  # the same candidate, run again
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2



def test_a_database_that_refuses_writes_is_one_error_at_once_not_an_outage(tmp_path):
    """A read-only SQLite file raises SQLAlchemy's OperationalError, as a lost server does, but no wait cures it:
    the storage says what to fix at once (a StorageError: exit 2) instead of retrying for a minute. The write is a
    trial's creation, which Optuna's cached storage makes through a private backend method (``_create_new_trial``),
    so that one is retried and classified like the public calls; a lost connection stays transient."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from budgetnas.resilience import RetryingRDBStorage, is_transient, refusal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s").optimize(lambda t: 1.0, n_trials=1)
    before = (tmp_path / "s.db").read_bytes()
    read_only = RetryingRDBStorage(f"sqlite:///file:{tmp_path}/s.db?mode=ro&uri=true", where="s.db", seconds=60)
    study = optuna.load_study(storage=read_only, study_name="s")
    assert len(study.trials) == 1  # reads work
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"refuses writes \(attempt to write a readonly database\); make the file"):
        study.ask()
    assert time.monotonic() - start < 30 and read_only.unavailable is None
    assert (tmp_path / "s.db").read_bytes() == before

    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    lost = OperationalError("SELECT", {}, ConnectionRefusedError("server closed the connection"))
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert is_transient(locked) and is_transient(lost) and refusal(lost) is None
    assert not is_transient(full) and "disk is full" in refusal(full)


def test_a_failed_trial_left_without_its_retry_is_queued_once_by_the_next_run(tmp_path):
    """Optuna fails a stale trial and queues its retry in two calls: a worker killed between them leaves an
    orphan. A real SQLite study with a 1 s heartbeat; the orphan is recorded as that worker would leave it."""
    from optuna.trial import TrialState

    from budgetnas.resilience import retry_orphaned_failures

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat=Heartbeat(interval=1, grace_period=2))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name="s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numbers = []
        for attrs in ({}, {"failed": "diverged"}, {}):  # orphan, a deliberate failure, a fresh orphan
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            numbers.append(trial.number)
            if not attrs and len(numbers) == 1:
                time.sleep(2.2)  # two heartbeat intervals: the first one has settled
        warnings.simplefilter("error", FutureWarning)  # no deprecation of Optuna's reaches the user
        assert retry_orphaned_failures(study) == [numbers[0]]  # not the deliberate one, not the fresh one yet
        assert retry_orphaned_failures(study) == []  # queued once
        time.sleep(2.2)
        assert retry_orphaned_failures(study) == [numbers[2]]
    trials = study.get_trials(deepcopy=False)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["failed_trial"] for t in waiting] == [numbers[0], numbers[2]]
    assert waiting[0].params == trials[numbers[0]].params


def test_a_journal_trial_left_running_by_a_killed_worker_is_explained(cli, tiny_npz, tmp_path):
    """A journal keeps no heartbeat: the rerun cannot tell a killed worker's trial from a live one, so it
    says which trial blocks the count and how to release it, instead of ending silently."""
    url = f"journal:{tmp_path}/j.log"
    first = cli(*small_search(tiny_npz, url, 1))
    assert first.returncode == 0, first.stderr[-2000:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="j", storage=open_storage(url))
    left = study.ask()  # RUNNING, as a SIGKILLed worker leaves its trial
    again = cli(*small_search(tiny_npz, url, 2))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"trial(s) {left.number} still RUNNING" in again.stderr, again.stderr[-2000:]
    assert f"budgetnas storage fail-running --storage {url} --study j" in again.stderr, again.stderr[-2000:]
    # With room for one more trial the rerun trains it, then ends one short of --trials: said too, not silent.
    later = cli(*small_search(tiny_npz, url, 3, "--workers", "1"))  # one process: no sibling's trial to tell apart
    assert later.returncode == 0, later.stderr[-2000:]
    assert "[3/3]" not in later.stderr and f"trial(s) {left.number} still RUNNING" in later.stderr, later.stderr[-2000:]


@pytest.mark.postgres
def test_json_and_transfer_sources_never_show_a_password(cli, tiny_npz, postgres_url, tmp_path):
    """--json's resolved options and the transfer line name the storage like every printed command: no secret."""
    from urllib.parse import urlsplit

    url, secret = postgres_url, urlsplit(postgres_url).password
    assert secret, "the test server's URL carries its password"
    proc = cli(*small_search(tiny_npz, url, 1, "--study", f"t-{os.urandom(4).hex()}", "--transfer-from", url,
                             "--json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr
    assert "transfer: " in proc.stderr and ":***@" in proc.stderr


def test_a_transfer_source_with_a_password_is_printed_redacted_in_the_resume_command():
    import argparse

    from budgetnas.cli.search import resume_command
    from budgetnas.search import SearchConfig

    storage = f"postgresql+psycopg2://me@db:5432/nas?password={SECRET}"
    other = f"postgresql://me:{SECRET}@elsewhere/nas"
    config = SearchConfig(budget=5000, storage=storage, study="s", transfer_from=(storage, other))
    args = argparse.Namespace(timeout=None, device="auto", precision="auto", max_mult_adds=None, workers=1)
    line = resume_command(args, config)
    assert SECRET not in line
    assert '--transfer-from "$BUDGETNAS_STORAGE"' in line  # the storage itself: the variable, like --storage
    assert "--transfer-from 'postgresql://me:***@elsewhere/nas'" in line, line


def test_options_the_data_refuses_leave_no_study_with_several_workers(cli, tiny_npz, tmp_path):
    """With --workers 2 the parent creates the study before the workers start: a --subset the data cannot
    give must be refused before that too (prepare loads the data), not only in a single-process search."""
    journal = tmp_path / "w.log"
    proc = cli(*small_search(tiny_npz, f"journal:{journal}", 1, "--workers", "2", "--subset", "5000"))
    assert_one_line_error(proc, 2, "larger than the 1,000 training images")
    if journal.exists():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        assert not optuna.get_all_study_summaries(open_storage(f"journal:{journal}")), "a study was left behind"
