"""The command line as a newcomer meets it: help, examples, version, unknown commands.

All through real subprocesses: ``python -m budgetnas`` and the installed ``budgetnas`` console script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from budgetnas import __version__
from budgetnas.cli import COMMANDS

from conftest import assert_one_line_error

CONSOLE_SCRIPT = Path(sys.executable).parent / "budgetnas"


def test_python_m_help_lists_every_command(cli):
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: budgetnas")
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\b", proc.stdout, re.M), f"{name} missing from budgetnas --help"
    assert "examples:" in proc.stdout and "BUDGETNAS_DATA" in proc.stdout


def test_console_script_works_like_python_m(tmp_path):
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} missing: install the project with pip install -e ."
    script = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    module = subprocess.run([sys.executable, "-m", "budgetnas", "--help"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert script.returncode == module.returncode == 0, script.stderr + module.stderr
    assert script.stdout == module.stdout
    version = subprocess.run([str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, timeout=120)
    assert version.stdout.strip() == f"budgetnas {__version__}"


def test_every_command_is_registered(cli):
    from budgetnas.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    missing = [name for name in COMMANDS if name not in subparsers.choices]
    assert not missing, f"commands without a budgetnas/cli/<name>.py module: {missing}"


def test_help_does_not_import_heavy_libraries():
    """``--help`` must stay quick: subcommand modules import optuna, plotly, ... inside their handlers only."""
    code = ("import sys\nfrom budgetnas.cli import build_parser\nbuild_parser().format_help()\n"
            "print(','.join(m for m in ('optuna', 'plotly', 'sklearn', 'optuna_dashboard', 'torchinfo') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported while building the parser: {proc.stdout.strip()}"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_shows_an_example(cli, name):
    proc = cli(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: budgetnas {name}"), proc.stdout[:200]
    assert re.search(r"^examples?:", proc.stdout, re.M | re.I), f"budgetnas {name} --help has no examples section"
    assert re.search(rf"^\s+budgetnas {name}\b", proc.stdout, re.M), f"budgetnas {name} --help shows no example"


def test_version(cli):
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"budgetnas {__version__}"


def test_unknown_command_is_a_one_line_error(cli):
    proc = cli("frobnicate")
    line = assert_one_line_error(proc, 2, "frobnicate")
    assert "budgetnas --help" in line
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_unknown_option_is_a_one_line_error(cli):
    assert_one_line_error(cli("--colour"), 2, "--colour")


def test_no_command_prints_help_and_exits_2(cli):
    proc = cli()
    assert proc.returncode == 2 and "usage: budgetnas" in proc.stderr and proc.stdout == ""
