"""One self-contained HTML report of a study (plotly, its JavaScript inlined: no network).

Sections: the study's settings and trial counts; the Pareto front (validation accuracy vs
training time, coloured by parameters); accuracy vs parameters with the budget marked and
the paper's models of the same family as reference points; the optimisation history;
learning curves of the best trials; the replays (test accuracy) and, when the best trial's
replay artifacts exist, its feature maps.

As in ``optuna.visualization``, gathering the data (:func:`report_info`, plain dataclasses,
testable without plotly) is kept apart from drawing (:func:`figures`, :func:`render_html`).

    write_report("sqlite:///budgetnas.db", out="report.html")
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from budgetnas import tables
from budgetnas.counting import human_count
from budgetnas.datasets import reference_models
from budgetnas.errors import StorageError, UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.fmt import percent
from budgetnas.paper import PaperModel, paper_models
from budgetnas.records import StudySettings, replays_of, settings_of
from budgetnas.replay import choose_trial, trained_trials, val_accuracy_of
from budgetnas.storage import redact

CURVES_OF = 5  # learning curves drawn: the best this many trials on the front
MAX_FEATURE_MAPS = 10


@dataclass
class Point:
    """One trained trial as the plots need it."""

    number: int
    accuracy: float  # validation accuracy (the search's objective)
    seconds: float  # training wall time
    params: int
    mult_adds: int
    spec: str  # one-line description
    on_front: bool
    val_curve: list[float]
    loss_curve: list[float]


@dataclass
class ReportInfo:
    study: str
    storage: str  # redacted URL
    settings: StudySettings
    directions: list[str]
    counts: dict[str, int]  # trial state (plus "rejected", "stopped early") -> number
    points: list[Point]  # COMPLETE trained trials, in trial order
    best: int  # the trial replay would choose
    best_reason: str
    replays: dict[int, dict[str, Any]]
    paper: tuple[PaperModel, ...]
    stopped: list[tuple[int, float]] = field(default_factory=list)  # (trial, last val accuracy) of stopped trials
    feature_maps: list[tuple[str, bytes]] = field(default_factory=list)  # (title, PNG) of the best's replay
    feature_maps_note: str = ""


def report_info(study: Any, storage_url: str = "") -> ReportInfo:
    """Gather what the report shows from ``study`` (raises StorageError when nothing was trained)."""
    from budgetnas.spec import spec_from_dict

    settings = settings_of(study)
    trained = trained_trials(study)
    if not trained:
        raise StorageError(f"study {study.study_name!r} has no trained trials yet; nothing to report "
                           "(let the search finish at least one trial)")
    choice = choose_trial(study, "best")
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else {choice.trial.number}
    points = [Point(t.number, val_accuracy_of(t, settings), float(t.user_attrs.get("train_seconds", math.nan)),
                    int(t.user_attrs.get("params", 0)), int(t.user_attrs.get("mult_adds", 0)),
                    describe_spec(spec_from_dict(t.user_attrs["spec"])), t.number in front,
                    list(t.user_attrs.get("val_accuracy_curve", [])), list(t.user_attrs.get("train_loss_curve", [])))
              for t in trained]
    counts: dict[str, int] = {}
    stopped = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        if "rejected" in t.user_attrs:
            state = "rejected"
        elif state == "pruned" and "spec" in t.user_attrs:
            state = "stopped early"
            if t.user_attrs.get("val_accuracy_curve"):
                stopped.append((t.number, float(t.user_attrs["val_accuracy_curve"][-1])))
        counts[state] = counts.get(state, 0) + 1
    info = ReportInfo(study.study_name, redact(storage_url), settings,
                      [d.name.lower() for d in study.directions], counts, points, choice.trial.number,
                      choice.reason, replays_of(study), paper_models(settings.family), stopped)
    _attach_feature_maps(info)
    return info


def _attach_feature_maps(info: ReportInfo) -> None:
    replay = info.replays.get(info.best)
    if replay is None:
        info.feature_maps_note = (f"Trial {info.best} (the best) has not been replayed yet: run "
                                  f"'budgetnas replay --study {info.study}' to add its test accuracy and feature maps.")
        return
    folder = Path(str(replay.get("out", ""))) / "featuremaps"
    pngs = sorted(folder.glob("*.png"))[:MAX_FEATURE_MAPS] if folder.is_dir() else []
    if not pngs:
        info.feature_maps_note = (f"The replay of trial {info.best} has no feature maps at {folder} "
                                  "(moved, deleted, or an FCN).")
        return
    info.feature_maps = [(p.stem, p.read_bytes()) for p in pngs]


def figures(info: ReportInfo) -> dict[str, Any]:
    """The report's plotly figures, by section id."""
    return {"pareto": _pareto_figure(info), "params": _params_figure(info),
            "history": _history_figure(info), "curves": _curves_figure(info)}


def _hover(p: Point) -> str:
    return (f"trial {p.number}<br>val acc {percent(p.accuracy)}<br>{p.seconds:.1f}s<br>{p.params:,} params"
            f"<br>{p.mult_adds:,} mult-adds<br>{html.escape(p.spec)}")


def _pareto_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    rest = [p for p in info.points if not p.on_front]
    front = sorted((p for p in info.points if p.on_front), key=lambda p: p.seconds)
    low, high = min(p.params for p in info.points), max(p.params for p in info.points)
    colour = {"colorscale": "Viridis", "cmin": low, "cmax": max(high, low + 1)}  # one trial: still a sane bar
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p.seconds for p in rest], y=[p.accuracy for p in rest], mode="markers",
                             name="other trials", hovertext=[_hover(p) for p in rest], hoverinfo="text",
                             marker=dict(size=8, opacity=0.55, color=[p.params for p in rest], **colour)))
    fig.add_trace(go.Scatter(x=[p.seconds for p in front], y=[p.accuracy for p in front], mode="markers+lines",
                             name="Pareto front", hovertext=[_hover(p) for p in front], hoverinfo="text",
                             line=dict(shape="hv", color="rgba(200,30,30,0.6)", dash="dot"),
                             marker=dict(size=13, line=dict(width=2, color="#c81e1e"),
                                         color=[p.params for p in front], colorbar=dict(title="parameters"),
                                         **colour)))
    best = next(p for p in info.points if p.number == info.best)
    fig.add_annotation(x=best.seconds, y=best.accuracy, text=f"best: trial {best.number}", showarrow=True,
                       arrowhead=2, ax=30, ay=-30)
    objectives = "/".join(info.settings.objectives)
    fig.update_layout(title=f"Pareto front (objectives {objectives}): validation accuracy vs training time",
                      xaxis_title="training time (s)", yaxis_title="validation accuracy",
                      legend=dict(orientation="h", y=-0.18), height=480)
    return fig


def _params_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for on_front, name, colour in ((False, "other trials", "#1f77b4"), (True, "trials on the front", "#c81e1e")):
        points = [p for p in info.points if p.on_front == on_front]
        fig.add_trace(go.Scatter(x=[p.params for p in points], y=[p.accuracy for p in points], mode="markers",
                                 name=f"{name}: validation accuracy", hovertext=[_hover(p) for p in points],
                                 hoverinfo="text", marker=dict(size=9, color=colour, opacity=0.75)))
    replays = [(n, r) for n, r in sorted(info.replays.items()) if r.get("test_accuracy") is not None]
    if replays:
        fig.add_trace(go.Scatter(x=[r["params"] for _, r in replays], y=[r["test_accuracy"] for _, r in replays],
                                 mode="markers", name="replays: test accuracy", marker=dict(symbol="star", size=15,
                                                                                          color="#2ca02c"),
                                 hovertext=[f"trial {n} replayed<br>test acc {percent(r['test_accuracy'])}<br>"
                                            f"{r.get('epochs')} epochs" for n, r in replays], hoverinfo="text"))
    if info.paper and reference_models(info.settings.dataset):
        fig.add_trace(go.Scatter(x=[m.params for m in info.paper], y=[m.test_accuracy for m in info.paper],
                                 mode="markers+text", name="paper: test accuracy, 20 epochs",
                                 text=[m.name for m in info.paper], textposition="top center",
                                 marker=dict(symbol="diamond", size=12, color="#ff7f0e"),
                                 hovertext=[f"paper {m.name}<br>{m.params:,} params<br>"
                                            f"test acc {percent(m.test_accuracy)}"
                                            for m in info.paper], hoverinfo="text"))
    fig.add_vline(x=info.settings.budget, line=dict(color="black", dash="dash"),
                  annotation_text=f"budget {info.settings.budget:,}", annotation_position="bottom left")
    fig.update_layout(title="Accuracy vs parameters", xaxis_title="trainable parameters",
                      yaxis_title="accuracy", legend=dict(orientation="h", y=-0.18), height=480)
    return fig


def _history_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    running, best_so_far = -math.inf, []
    for p in info.points:
        running = max(running, p.accuracy)
        best_so_far.append(running)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p.number for p in info.points], y=[p.accuracy for p in info.points], mode="markers",
                             name="trained trial", hovertext=[_hover(p) for p in info.points], hoverinfo="text"))
    if info.stopped:
        fig.add_trace(go.Scatter(x=[n for n, _ in info.stopped], y=[a for _, a in info.stopped], mode="markers",
                                 name="stopped early (accuracy when stopped)",
                                 marker=dict(symbol="x", size=8, color="rgba(120,120,120,0.7)")))
    fig.add_trace(go.Scatter(x=[p.number for p in info.points], y=best_so_far, mode="lines", name="best so far",
                             line=dict(shape="hv", color="#c81e1e")))
    skipped = ", ".join(f"{n} {state}" for state, n in sorted(info.counts.items())
                        if state not in ("complete", "stopped early"))
    fig.update_layout(title="Optimisation history" + (f" (not shown: {skipped})" if skipped else ""),
                      xaxis_title="trial number", yaxis_title="validation accuracy",
                      legend=dict(orientation="h", y=-0.18), height=420)
    last = max([p.number for p in info.points] + [n for n, _ in info.stopped])
    fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil(last / 15)))
    return fig


def _curves_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    chosen = sorted((p for p in info.points if p.on_front), key=lambda p: (-p.accuracy, p.params))[:CURVES_OF]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy", "train loss"))
    for i, p in enumerate(chosen):
        colour = f"hsl({(i * 67) % 360},65%,45%)"
        epochs = list(range(1, len(p.val_curve) + 1))
        fig.add_trace(go.Scatter(x=epochs, y=p.val_curve, mode="lines+markers", name=f"trial {p.number}",
                                 legendgroup=str(p.number), line=dict(color=colour)), row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=p.loss_curve, mode="lines+markers", name=f"trial {p.number}",
                                 legendgroup=str(p.number), showlegend=False, line=dict(color=colour)), row=1, col=2)
    longest = max((len(p.val_curve) for p in chosen), default=1)
    fig.update_xaxes(title_text="epoch", tickmode="linear", tick0=1, dtick=max(1, math.ceil(longest / 10)))
    fig.update_layout(title=f"Learning curves of the best {len(chosen)} trials on the front", height=420,
                      legend=dict(orientation="h", y=-0.22))
    return fig


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
.figure { margin: 1em 0 2em; }
.maps img { margin: 4px; border: 1px solid #ddd; vertical-align: top; max-width: 560px; height: auto; }
.note { color: #666; }
"""


def render_html(info: ReportInfo) -> str:
    """The complete HTML page (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    s = info.settings
    settings_rows = [("study", info.study), ("storage", info.storage), ("family", s.family),
                     ("budget", f"{s.budget:,} parameters"), ("dataset", s.dataset + _subset_note(s)),
                     ("epochs per trial", s.epochs), ("objectives", ", ".join(s.objectives)), ("sampler", s.sampler),
                     ("trials", ", ".join(f"{n} {state}" for state, n in sorted(info.counts.items()))),
                     ("best", info.best_reason)]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>budgetnas report: {_e(info.study)}</title>",
             f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
             f"<h1>budgetnas study {_e(info.study)}</h1>", tables.html(["setting", "value"], settings_rows)]
    figs = figures(info)
    for key in ("pareto", "params", "history", "curves"):
        parts.append(f"<div class='figure'>{figs[key].to_html(full_html=False, include_plotlyjs=False, div_id=key)}"
                     "</div>")
        if key == "params":
            parts.append("<p class='note'>Trials show validation accuracy after the search's epochs; the paper's "
                         "points and replays show test accuracy.</p>")
    front = sorted((p for p in info.points if p.on_front), key=lambda p: (-p.accuracy, p.params))
    parts.append("<h2>Trials on the Pareto front</h2>")
    parts.append(tables.html(["trial", "val accuracy", "train s", "params", "mult-adds", "spec", "replay test acc"],
                        [(p.number, percent(p.accuracy), f"{p.seconds:.1f}", f"{p.params:,}", human_count(p.mult_adds),
                          p.spec, percent(info.replays.get(p.number, {}).get("test_accuracy"))) for p in front]))
    parts.append("<h2>Replays</h2>")
    if info.replays:
        parts.append(tables.html(["trial", "test accuracy", "val accuracy", "params", "epochs", "seed", "device",
                             "train s", "artifacts", "every seed, test accuracy (replay --seeds)"],
                            [(n, percent(r.get("test_accuracy")), percent(r.get("val_accuracy")),
                              f"{r.get('params', 0):,}",
                              r.get("epochs"), r.get("seed"), f"{r.get('device')} {r.get('precision')}",
                              _fmt(r.get("train_seconds"), ".1f"), r.get("out"), _seeds_cell(r))
                             for n, r in sorted(info.replays.items())]))
    else:
        parts.append("<p class='note'>No replays yet.</p>")
    parts.append(f"<h2>Feature maps of trial {info.best}</h2>")
    if info.feature_maps:
        parts.append("<p class='note'>Activations of each conv block (before pooling) for one test image per class, "
                     "from the replayed model; each map scaled to its own range.</p><div class='maps'>")
        parts += [f"<img alt='{_e(title)}' title='{_e(title)}' src='data:image/png;base64,"
                  f"{base64.b64encode(png).decode()}'>" for title, png in info.feature_maps]
        parts.append("</div>")
    else:
        parts.append(f"<p class='note'>{_e(info.feature_maps_note)}</p>")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts.append(f"<p class='note'>Written by budgetnas report at {stamp}.</p></body></html>")
    return "\n".join(parts)


def write_report(storage: str | None = None, study: str | None = None, out: str | Path | None = None) -> Path:
    """Write the report of ``study`` in ``storage`` to ``out`` (default ``<study>-report.html``)."""
    from budgetnas.studyio import load_existing_study, safe_name

    loaded, url = load_existing_study(storage, study)
    info = report_info(loaded, url)
    path = Path(out) if out is not None else Path(f"{safe_name(loaded.study_name)}-report.html")
    page = render_html(info)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}; choose another --out") from None
    return path


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _seeds_cell(record: dict[str, Any]) -> str:
    """``seed 0: 93.48%, seed 1: 93.63%; mean 93.56%`` for a ``replay --seeds`` record, else "-"."""
    runs = record.get("seeds") or []
    if not runs:
        return "-"
    each = ", ".join(f"seed {r.get('seed')}: {percent(r.get('test_accuracy'))}" for r in runs)
    return f"{each}; mean {percent(record.get('mean_test_accuracy'))}"


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _subset_note(settings: Any) -> str:
    if not settings.subset:
        return ""
    where = "the whole validation split" if settings.validation == "full" else "10% of it"
    return f" (subset {settings.subset}, validated on {where})"
