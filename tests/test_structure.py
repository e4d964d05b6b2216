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


def test_a_budget_is_checked_once_on_its_way_to_the_trainer(monkeypatch, tiny_npz, tmp_path, capsys):
    import budgetnas.search as search
    from budgetnas.cli import main

    calls = {"parse": 0, "fits": 0}
    parse, fits = search.parse_budget, search.check_budget

    def counted_parse(*args, **kwargs):
        calls["parse"] += 1
        return parse(*args, **kwargs)

    def counted_fits(*args, **kwargs):
        calls["fits"] += 1
        return fits(*args, **kwargs)

    monkeypatch.setattr(search, "parse_budget", counted_parse)
    monkeypatch.setattr(search, "check_budget", counted_fits)
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--budget", "20k", "--family", "fcn", "--dataset", f"npz:{tiny_npz}", "--trials", "1",
                 "--epochs", "1", "--device", "cpu", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--json"])
    assert code == 0, capsys.readouterr().err
    # parsed and checked positive once (SearchConfig), checked against the smallest net once (search.prepare)
    assert calls == {"parse": 1, "fits": 1}


def test_a_recipe_is_validated_once_per_value_on_its_way_to_the_trainer(monkeypatch, tiny_npz, tmp_path, capsys):
    from budgetnas.cli import main
    from budgetnas.recipe import Recipe

    seen = []
    check = Recipe.__post_init__

    def counted(self):
        seen.append(tuple(self.to_dict().items()))
        check(self)

    monkeypatch.setattr(Recipe, "__post_init__", counted)
    code = main(["train", "fcn-50k", "--epochs", "1", "--seed", "2", "--dataset", f"npz:{tiny_npz}",
                 "--device", "cpu", "--precision", "fp32", "--json"])
    assert code == 0, capsys.readouterr().err
    assert len(seen) == len(set(seen)) == 2  # the config file's recipe, then the one with --epochs and --seed
