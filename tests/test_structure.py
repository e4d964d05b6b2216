"""The package's structure: no import circle, and opening a study does not import torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import REPO


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_circle():
    tool = _import_graph()
    edges = tool.graph()
    assert {"search", "workers", "trialcount", "objective", "objectives", "study"} <= set(edges)
    assert tool.cycles(edges) == []
    # The tool does find a circle when there is one.
    assert tool.cycles({**edges, "trialcount": edges["trialcount"] | {"workers"}})
    assert "import circles: none" in tool.drawing(edges)


def test_opening_a_study_does_not_import_torch():
    code = ("import sys, budgetnas.study, budgetnas.records, budgetnas.objectives, budgetnas.trialcount; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
