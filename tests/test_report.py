"""The HTML report: its data, its figures, the file, and (in Chromium) that the plots render."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace

import optuna
import pytest
from PIL import Image

from budgetnas import records
from budgetnas.errors import StorageError
from budgetnas.paper import paper_models
from budgetnas.replay import choose_trial, replay
from budgetnas.report import figures, report_info, write_report
from budgetnas.storage import open_storage
from studyfactory import BUDGET, make_study

PLOTS = 4  # pareto, params, history, curves


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_npz):
    return make_study(tmp_path_factory.mktemp("study"), tiny_npz)


@pytest.fixture(scope="module")
def replayed_report(made, tmp_path_factory):
    """A report of a study whose best trial was replayed (so it has test accuracy and feature maps)."""
    folder = tmp_path_factory.mktemp("replayed")
    study = made.copy_to(folder)
    replay(study.url, device="cpu", precision="fp32", out=folder / "best")
    return study, write_report(study.url, out=folder / "report.html")


def _study(made):
    return optuna.load_study(study_name=made.name, storage=open_storage(made.url))


def test_info_holds_the_trained_trials_the_front_and_the_counts(made):
    study = _study(made)
    info = report_info(study, made.url)
    assert [p.number for p in info.points] == made.trained
    assert {p.number for p in info.points if p.on_front} == {t.number for t in study.best_trials}
    assert info.counts == {"complete": len(made.trained), "rejected": 1, "fail": 1}
    assert info.best == choose_trial(study).trial.number
    stored = study.trials[made.trained[0]].user_attrs
    first = info.points[0]
    assert (first.params, first.seconds, first.val_curve) == (stored["params"], stored["train_seconds"],
                                                               stored["val_accuracy_curve"])
    assert "has not been replayed" in info.feature_maps_note and not info.feature_maps


def test_accuracy_vs_params_marks_the_budget_and_the_papers_models(made):
    info = report_info(_study(made), made.url)
    fig = figures(info)["params"]
    assert fig.layout.shapes[0].x0 == BUDGET == fig.layout.shapes[0].x1
    assert not [t for t in fig.data if t.name.startswith("paper")]  # npz data: the paper's numbers do not apply
    info.settings = replace(info.settings, dataset="fashion-mnist")
    paper = next(t for t in figures(info)["params"].data if t.name.startswith("paper"))
    cnn = paper_models("cnn")
    assert list(paper.x) == [m.params for m in cnn] == [9_192, 19_279, 49_450, 97_395]
    assert list(paper.y) == [m.test_accuracy for m in cnn]


def test_pareto_figure_colours_by_parameters(made):
    info = report_info(_study(made), made.url)
    front = next(t for t in figures(info)["pareto"].data if t.name == "Pareto front")
    on_front = sorted((p for p in info.points if p.on_front), key=lambda p: p.seconds)
    assert list(front.marker.color) == [p.params for p in on_front]
    assert list(front.x) == [p.seconds for p in on_front]


def test_report_file_is_self_contained(made, tmp_path):
    path = write_report(made.url, out=tmp_path / "sub" / "r.html")
    page = path.read_text(encoding="utf-8")
    assert page.count("class=\"plotly-graph-div\"") == PLOTS
    sources = _script_sources(page)
    assert sources == [None] * len(sources) and len(sources) == PLOTS + 1  # plotly.js inlined once, no src=
    assert len(page) > 3_000_000


def _script_sources(page: str) -> list[str | None]:
    """The src attribute of every <script> tag (the HTML parser does not look inside scripts)."""
    from html.parser import HTMLParser

    found: list[str | None] = []

    class Scripts(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "script":
                found.append(dict(attrs).get("src"))

    Scripts().feed(page)
    return found


@pytest.mark.slow
def test_replay_adds_test_accuracy_and_feature_maps(replayed_report):
    study, path = replayed_report
    page = path.read_text(encoding="utf-8")
    replays = records.replays_of(_study(study))
    assert len(replays) == 1
    assert f"{next(iter(replays.values()))['test_accuracy'] * 100:.2f}%" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 10


def test_report_errors(made, tmp_path, cli):
    url = f"sqlite:///{tmp_path}/e.db"
    empty = optuna.create_study(storage=open_storage(url), study_name="e", directions=["maximize", "minimize"])
    empty.set_user_attr(records.SETTINGS_ATTR, _study(made).user_attrs[records.SETTINGS_ATTR])
    with pytest.raises(StorageError, match="no trained trials"):
        write_report(url)
    proc = cli("report", "--storage", made.url, "--out", f"{made.db}/x.html")
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot write report"), proc.stderr


def test_cli_report_json(made, cli, tmp_path):
    proc = cli("report", "--storage", made.url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["report"] == str(tmp_path / f"{made.name}-report.html") and doc["bytes"] > 3_000_000


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _headless(tmp_path, *args: str) -> subprocess.CompletedProcess:
    browser = _chromium()
    if browser is None:
        reason = "Chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":  # CI promises a browser: its absence fails, never skips
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=20000", "--hide-scrollbars"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.browser
def test_plots_render_in_headless_chromium(replayed_report, tmp_path):
    _, path = replayed_report
    dom = _headless(tmp_path, "--dump-dom", path.as_uri()).stdout
    # Plotly replaces each empty div by a .plot-container holding its SVG layers only when its JS ran.
    assert dom.count('class="plot-container plotly"') == PLOTS, dom[-2000:]
    assert dom.count('class="main-svg"') >= PLOTS
    assert len(re.findall(r'class="point"', dom)) >= 5  # scatter points were drawn
    assert "Pareto front" in dom and "budget 20,000" in dom


@pytest.mark.browser
def test_report_screenshot_is_not_blank(replayed_report, tmp_path):
    _, path = replayed_report
    shot = tmp_path / "shot.png"
    _headless(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", path.as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400)
    colours = img.getcolors(1 << 22)
    assert len(colours) > 200  # plots, colour bars and feature maps, not a white page
    white = max(count for count, rgb in colours if rgb == (255, 255, 255))
    assert white < 0.9 * img.width * img.height


def test_single_objective_study_and_journal_storage(made, tmp_path):
    # The same trained trials in a single-objective study kept in a journal file.
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    source = _study(made)
    journal = tmp_path / "study.log"
    single = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))), study_name="single",
                                 direction="maximize")
    settings = dict(source.user_attrs[records.SETTINGS_ATTR], objectives=["accuracy"])
    single.set_user_attr(records.SETTINGS_ATTR, settings)
    for t in source.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            single.add_trial(optuna.trial.create_trial(value=t.values[0], user_attrs=t.user_attrs))
    best = max(single.trials, key=lambda t: (t.value, -t.user_attrs["params"]))
    assert choose_trial(single).trial.number == best.number
    path = write_report(f"journal:{journal}", out=tmp_path / "single.html")
    info = report_info(single)
    assert [p.number for p in info.points if p.on_front] == [best.number]
    assert path.read_text(encoding="utf-8").count("class=\"plotly-graph-div\"") == PLOTS


def test_trials_stopped_early_appear_in_the_history_only(made, tmp_path):
    study = made.copy_to(tmp_path)
    loaded = _study(study)
    attrs = dict(loaded.trials[made.trained[0]].user_attrs, val_accuracy_curve=[0.125])
    loaded.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs))
    info = report_info(loaded)
    stopped = len(loaded.trials) - 1
    assert info.stopped == [(stopped, 0.125)] and info.counts["stopped early"] == 1
    assert stopped not in {p.number for p in info.points}  # a partial run's runtime would flatter the front
    history = figures(info)["history"]
    trace = next(t for t in history.data if t.name.startswith("stopped early"))
    assert list(trace.x) == [stopped] and list(trace.y) == [0.125]
