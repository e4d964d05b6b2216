"""README smoke test: every command the README shows is real.

* The README's test command is exactly the one ``.ci/run`` runs, and its install lines pin the same
  torch/torchvision as CI.
* Every ``budgetnas ...`` line in a README code block parses with the real argument parser.
* Then the lines run for real, in README order, in one fresh folder (so ``replay`` and ``report``
  find the study that ``search`` made), with overrides appended that make them quick: one trial,
  one epoch, a few hundred images. ``dashboard`` is started, answered over HTTP, then stopped.
  Lines that need PostgreSQL use the test server when one is configured (``.ci/run`` starts one).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
TEST_COMMAND = ".venv/bin/python -m pytest"
QUICK = {  # appended to a README line: argparse keeps the last value, so these win
    "search": ["--trials", "1", "--epochs", "1", "--subset", "300", "--device", "cpu"],
    "sweep": ["--trials", "1", "--epochs", "1", "--subset", "300", "--replay-epochs", "1", "--replay-subset", "300",
              "--device", "cpu"],
    "replay": ["--epochs", "1", "--device", "cpu"],
    "train": ["--epochs", "1", "--subset", "300", "--device", "cpu"],
    "reproduce": ["--epochs", "1", "--subset", "300", "--device", "cpu"],
    "bench": ["--steps", "2", "--warmup", "1", "--repeats", "1", "--subset", "600", "--devices", "cpu"],
}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return [(m.group(1).strip().lower(), m.group(2))
            for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def code_lines(text: str) -> list[str]:
    """Shell commands of the non-Python code blocks: continuations joined, prompts and comments dropped,
    ``a && b`` and ``a; b`` split into separate commands."""
    lines = []
    for language, body in code_blocks(text):
        if language in ("python", "py", "toml", "json", "text", "markdown"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            lines.extend(part.strip() for part in re.split(r"\s*(?:&&|;)\s*", line) if part.strip())
    return lines


def budgetnas_args(line: str) -> list[str] | None:
    """The arguments after ``budgetnas`` / ``python -m budgetnas``, or None for other lines."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        words = words[1:]  # VAR=value prefixes; the tests set BUDGETNAS_DATA themselves
    if words and words[0].split("/")[-1] == "budgetnas":  # budgetnas, .venv/bin/budgetnas
        return words[1:]
    if len(words) >= 3 and words[0].split("/")[-1].startswith("python") and words[1:3] == ["-m", "budgetnas"]:
        return words[3:]
    return None


def readme_commands() -> list[list[str]]:
    assert README.exists(), "README.md is missing"
    commands = []
    for line in code_lines(README.read_text(encoding="utf-8")):
        args = budgetnas_args(line)
        if args is not None:
            commands.append(args)
    return commands


def test_readme_test_command_is_what_ci_runs():
    lines = code_lines(README.read_text(encoding="utf-8"))
    assert TEST_COMMAND in lines, f"README shows no '{TEST_COMMAND}' line"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(TEST_COMMAND)}( |$)", ci, re.M), ".ci/run does not run the README's test command"
    pins = set(re.findall(r"torch(?:vision)?==[\d.]+", "\n".join(lines)))
    assert pins and pins <= set(re.findall(r"torch(?:vision)?==[\d.]+", ci)), (pins, "differ from .ci/run")


def test_readme_commands_parse():
    from budgetnas.cli import COMMANDS, build_parser

    commands = readme_commands()
    shown = {args[0] for args in commands if args and not args[0].startswith("-")}
    assert {"search", "dashboard", "replay", "report", "reproduce", "bench"} <= shown, shown
    for args in commands:
        if any("..." in a or a.startswith("<") for a in args):
            continue  # a placeholder, not a command to copy
        if args and not args[0].startswith("-"):
            assert args[0] in COMMANDS, args
        try:
            build_parser().parse_args(args)
        except SystemExit as exit_:
            assert exit_.code == 0, f"README line does not parse: budgetnas {shlex.join(args)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard(args: list[str], cwd: Path, env: dict) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas", *args, "--port", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"dashboard exited: {proc.stdout.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not answer within 90 s"
                time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_readme_python_runs(tmp_path, data_root):
    """The README's Python snippets run as written, on a 600-image slice instead of the full data set."""
    blocks = [body for language, body in code_blocks(README.read_text(encoding="utf-8")) if language == "python"]
    assert blocks, "README shows no Python example"
    for body in blocks:
        code = body.replace('load_dataset("fashion-mnist")', 'load_dataset("fashion-mnist", subset=600)')
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "BUDGETNAS_DATA": str(data_root), "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, f"{code}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_readme_commands_run(tmp_path, data_root):
    env = {**os.environ, "BUDGETNAS_DATA": str(data_root), "PYTHONPATH": str(REPO)}
    pg_url = os.environ.get("BUDGETNAS_TEST_POSTGRES_URL")
    ran = []
    for args in readme_commands():
        if not args or args[0].startswith("-") or any("..." in a or a.startswith("<") for a in args):
            continue
        args = [os.path.expandvars(a) for a in args]
        if any(a.startswith(("postgresql://", "postgres://")) for a in args):
            if not pg_url:
                continue  # shown for several machines; tests/test_postgres.py covers it when a server exists
            args = [pg_url if a.startswith(("postgresql://", "postgres://")) else a for a in args]
        if "--data-root" in args:  # README paths are relative to the repository, we run elsewhere
            args[args.index("--data-root") + 1] = str(data_root)
        args = [str(REPO / a) if not a.startswith("-") and "/" in a and (REPO / a).exists() else a for a in args]
        command = args[0]
        if command == "dashboard":
            _dashboard(args, tmp_path, env)
        else:
            full = args + QUICK.get(command, [])
            proc = subprocess.run([sys.executable, "-m", "budgetnas", *full], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"budgetnas {shlex.join(full)}\n{proc.stderr[-3000:]}"
            assert "Traceback" not in proc.stderr
        ran.append(command)
    assert {"search", "replay", "report"} <= set(ran), ran
