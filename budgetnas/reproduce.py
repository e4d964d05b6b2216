"""Run configs and the paper's picks: resolve, count, train, and compare with the paper.

``studies/paper/*.toml`` holds one :class:`~budgetnas.config.RunConfig` per model of the
paper, with the figures it reported in a ``[paper]`` table. Each file is the *as-counted*
model: the paper says it used batch normalisation, but its weight counts and mult-adds are
exactly those of the models without it. ``NAME+bn`` (e.g. ``cnn-100k+bn``) is the same
model with batch norm switched on everywhere, derived here rather than kept as a second
file, so the two can never drift apart.

The commands ``count``, ``train`` and ``reproduce`` are thin wrappers around
:func:`count_config`, :func:`train_config` and :func:`reproduce`.
"""

from __future__ import annotations

import html
import json
import os
import platform
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from budgetnas import tables
from budgetnas.config import RunConfig, load_config, save_config
from budgetnas.errors import UsageError
from budgetnas.fmt import epoch_line, percent, plural
from budgetnas.cost import check_model_memory
from budgetnas.progress import Remaining
from budgetnas.replay import check_writable
from budgetnas.families import describe as describe_spec
from budgetnas.families import family_of

PAPER_DIR_ENV = "BUDGETNAS_PAPER_DIR"
BN_SUFFIX = "+bn"
# The paper's tables in their order (Tables 1-2 FCNs, then Table 5 CNNs).
PAPER_NAMES = ("fcn-50k", "fcn-100k", "fcn-100k-default", "fcn-200k", "cnn-10k", "cnn-20k", "cnn-50k", "cnn-100k")
AS_COUNTED_NOTE = ("As counted: the paper says it used batch normalisation, but its weight counts and "
                   "mult-adds are exactly those of its models without batch norm, so each NAME is that "
                   "as-counted model and NAME+bn the same model with batch norm (2 more parameters per "
                   "normalised channel); the paper's figures are shown next to both.")

ProgressFn = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


# --------------------------------------------------------------------------- configs

def paper_dir() -> Path:
    """The folder of the paper configs: ``$BUDGETNAS_PAPER_DIR``, else ``studies/paper`` of the checkout.

    The TOMLs live in the repository (not inside the package) because they are documents
    users read and copy; an installed package finds them through the environment variable.
    """
    env = os.environ.get(PAPER_DIR_ENV)
    folder = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "studies" / "paper"
    if not folder.is_dir():
        raise UsageError(f"paper configs not found at {folder}; set ${PAPER_DIR_ENV} to the studies/paper "
                         "folder of a budgetnas checkout, or pass a CONFIG.toml path")
    return folder


def paper_names() -> list[str]:
    """Names of the paper configs (as-counted), in the paper's table order, then any extra files."""
    found = sorted(p.stem for p in paper_dir().glob("*.toml"))
    return [n for n in PAPER_NAMES if n in found] + [n for n in found if n not in PAPER_NAMES]


def with_batch_norm(config: RunConfig) -> RunConfig:
    """``config`` with batch norm on every conv block and hidden layer, named ``NAME+bn``."""
    spec = family_of(config.spec).with_batch_norm(config.spec)
    description = (config.description + " With batch norm (+bn).").strip()
    return replace(config, name=config.name + BN_SUFFIX, spec=spec, description=description)


def resolve_config(ref: str) -> RunConfig:
    """A config from a TOML path or a paper name (``cnn-100k``); a ``+bn`` suffix adds batch norm."""
    base, bn = (ref[: -len(BN_SUFFIX)], True) if ref.endswith(BN_SUFFIX) else (ref, False)
    path = Path(base).expanduser()
    if path.suffix == ".toml" or os.sep in base or path.is_file():
        config = load_config(path)
    else:
        folder = paper_dir()
        candidate = folder / f"{base}.toml"
        if not candidate.is_file():
            raise UsageError(f"no config file or paper config named {base!r}; paper configs: "
                             f"{', '.join(paper_names())} (add {BN_SUFFIX} for batch norm), or give a path "
                             "to a CONFIG.toml")
        config = load_config(candidate)
    return with_batch_norm(config) if bn else config


def override(config: RunConfig, *, epochs: int | None = None, seed: int | None = None,
             dataset: str | None = None) -> RunConfig:
    """A copy of ``config`` with command-line overrides applied (None keeps the config's value).

    The new recipe validates itself as it is made (:meth:`Recipe.with_changes`); a bad value raises
    :class:`FieldError` naming ``epochs`` or ``seed``.
    """
    from budgetnas.data import check_dataset_name

    recipe = config.recipe.with_changes(epochs=epochs, seed=seed)
    return replace(config, recipe=recipe, dataset=check_dataset_name(dataset) if dataset else config.dataset)


# --------------------------------------------------------------------------- count

def count_config(config: RunConfig, batch: int = 512, data_root: str | None = None) -> dict[str, Any]:
    """Exact trainable parameters and torchinfo mult-adds at ``batch``, without training."""
    from budgetnas.counting import count_mult_adds, count_params
    from budgetnas.data import dataset_info

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch!r}")
    input_shape, num_classes = dataset_info(config.dataset, data_root)
    check_model_memory(config.spec, input_shape, num_classes, batch=batch, what=config.name)  # torchinfo runs it
    return {
        "name": config.name, "dataset": config.dataset, "input_shape": list(input_shape),
        "num_classes": num_classes, "batch": batch, "spec": describe_spec(config.spec),
        "params": count_params(config.spec, input_shape, num_classes),
        "mult_adds": count_mult_adds(config.spec, input_shape, num_classes, batch=batch),
        "paper": dict(config.paper),
    }


# --------------------------------------------------------------------------- train

@dataclass
class RunReport:
    """One trained config: its metrics (JSON-ready) and the trained model."""

    config: RunConfig
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)


def train_config(config: RunConfig, *, device: str = "auto", precision: str = "auto", subset: int | None = None,
                 data_root: str | None = None, data: Any = None, on_epoch: Callable[[Any], None] | None = None,
                 threads: int | None = None) -> RunReport:
    """Train ``config`` on its dataset (90/10 split) and test it; ``data`` reuses an already loaded one.

    ``threads`` sets torch's intra-op CPU threads (None keeps the default, one per core).
    """
    from budgetnas.data import load_dataset
    from budgetnas.runs import train_run

    if data is None:
        data = load_dataset(config.dataset, data_root, with_test=True, subset=subset)
    check_model_memory(config.spec, data.input_shape, data.num_classes, batch=config.recipe.batch_size,
                       training=True, what=config.name)
    run = train_run(config.spec, config.recipe, data, dataset=config.dataset, subset=subset, device=device,
                    precision=precision, on_epoch=on_epoch, threads=threads)
    metrics = {**run.metrics, "name": config.name, "threads": _torch_threads(),
               "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return RunReport(config=config, metrics=metrics, model=run.model)


def train_config_seeds(config: RunConfig, seeds: Sequence[int], *, device: str = "auto", precision: str = "auto",
                       subset: int | None = None, data_root: str | None = None,
                       on_epoch: Callable[[Any], None] | None = None, threads: int | None = None,
                       progress: Callable[[str], None] | None = None, out: str | Path | None = None,
                       workers: int | str = 1) -> list[RunReport]:
    """Train ``config`` once per seed in ``seeds`` (``train --seeds``), on one loaded dataset.

    The seed overrides the recipe's (initial weights, batch order, augmentation); the data split
    is the same for every seed, so the runs differ only in their luck. ``progress`` hears which
    seed each run trains before it starts. :func:`budgetnas.runs.seed_summary` turns the
    reports' metrics into each seed's accuracies and their means. With ``out``, each run is saved
    into ``out/seed-S`` (:func:`save_run`) as soon as it ends, so a run stopped at a later seed
    keeps the finished ones.

    ``workers`` (a number or ``auto``, :func:`budgetnas.processes.resolve_run_workers`) trains that
    many seeds at once, each in its own process with its share of the CPU cores, as ``replay
    --seeds --workers`` does. Each process then loads the data itself, its epochs reach ``progress``
    (``on_epoch`` stays unused: the epochs happen in another process), each run's ``train_seconds``
    is measured beside the others, and its report carries no model (the weights are in ``out``).
    """
    from budgetnas.device import resolve_placement
    from budgetnas.processes import resolve_run_workers, run_seeds
    from budgetnas.runs import check_seeds, seed_heading

    seeds = check_seeds(seeds)
    folders = [Path(out) / f"seed-{seed}" if out is not None else None for seed in seeds]
    for folder in folders:
        if folder is not None:
            check_writable(folder)  # every seed's folder before the first run trains
    workers = resolve_run_workers(workers, len(seeds), resolve_placement(device, precision).device.type)
    if workers > 1 and threads is not None:  # each process's threads are its share of the cores (run_calls)
        raise UsageError(f"--threads sets the threads of one run at a time; with --workers {workers} each seed's "
                         "process gets its share of the cores: give --threads or --workers, not both")
    from budgetnas.data import load_dataset

    # Loaded here even when the runs load their own: a missing dataset then fails (or downloads) once,
    # before any process starts, instead of in every process at once.
    data = load_dataset(config.dataset, data_root, with_test=True, subset=subset)
    if workers > 1:
        calls = [dict(config=config, seed=seed, out=folder, device=device, precision=precision, subset=subset,
                      data_root=data_root) for seed, folder in zip(seeds, folders)]
        return run_seeds("budgetnas.reproduce:train_seed", calls, seeds, workers, progress)
    reports = []
    for i, (seed, folder) in enumerate(zip(seeds, folders), start=1):
        if progress:
            progress(seed_heading(i, seed, len(seeds)))
        reports.append(train_config(override(config, seed=seed), device=device, precision=precision, subset=subset,
                                    data=data, on_epoch=on_epoch, threads=threads))
        if folder is not None:
            save_run(reports[-1], folder)
    return reports


def train_seed(config: RunConfig, seed: int, *, out: Path | None, progress: Callable[[str], None] | None = None,
               **options: Any) -> RunReport:
    """One seed of :func:`train_config_seeds` in a :func:`budgetnas.processes.run_calls` process: trained,
    saved into ``out`` when given, and returned without its model (the parent would unpickle a module it
    does not use; the weights are in ``out``)."""
    def on_epoch(e: Any) -> None:
        if progress:
            progress(f"  {epoch_line(e, config.recipe.epochs)}")

    report = train_config(override(config, seed=seed), on_epoch=on_epoch, **options)
    if out is not None:
        save_run(report, out)
    return replace(report, model=None)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def save_run(report: RunReport, out: str | Path) -> dict[str, Path]:
    """Write ``model.pt`` (state dict), ``metrics.json`` and ``config.toml`` (with ``[result]``) to ``out``,
    and name the files in the report's metrics (``artifacts``)."""
    from budgetnas.runs import save_weights, write_json

    out = Path(out)
    check_writable(out)
    paths = {"weights": out / "model.pt", "metrics": out / "metrics.json", "config": out / "config.toml"}
    save_weights(report.model, paths["weights"])
    write_json(paths["metrics"], report.metrics)
    keys = ("params", "val_accuracy", "test_accuracy", "train_seconds", "mult_adds", "lowest_loss",
            "lowest_loss_epoch", "device", "precision")
    result = {k: report.metrics[k] for k in keys if report.metrics.get(k) is not None}
    save_config(replace(report.config, result=result), paths["config"],
                header=f"{report.config.name} as trained on {report.metrics['trained_at']}; [result] holds what "
                       "we measured.\nRetrain with: budgetnas train config.toml")
    report.metrics["artifacts"] = {k: str(v) for k, v in paths.items()}  # where it went, as --json prints it
    return paths


# --------------------------------------------------------------------------- formatting

def format_duration(seconds: float | None) -> str:
    """Seconds in the paper's style: ``2m 32.93s`` (or ``41.20s`` under a minute)."""
    if seconds is None:
        return "-"
    minutes, rest = divmod(float(seconds), 60)
    return f"{int(minutes)}m {rest:05.2f}s" if minutes else f"{rest:.2f}s"


def format_count(n: int | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def format_mult_adds(n: float | None) -> str:
    from budgetnas.counting import human_count

    return "-" if n is None else human_count(n)


def format_loss(loss: float | None, epoch: int | None) -> str:
    return "-" if loss is None else f"{loss:.2f} (epoch {epoch})"


def paper_row(metrics: dict[str, Any]) -> dict[str, str]:
    """One run's metrics as strings in the paper's columns (what ``budgetnas train`` prints)."""
    acc = metrics.get("test_accuracy")
    return {
        "model": metrics.get("name", ""),
        "weights": format_count(metrics.get("params")),
        "test_acc": percent(acc),
        "time": format_duration(metrics.get("train_seconds")),
        "device": metrics.get("device", ""),
        "mult_adds": format_mult_adds(metrics.get("mult_adds")),
        "lowest_loss": format_loss(metrics.get("lowest_loss"), metrics.get("lowest_loss_epoch")),
    }


PAPER_COLUMNS = [("model", "Model"), ("weights", "Weights"), ("test_acc", "Test acc."), ("time", "Train time"),
                 ("device", "Device"), ("mult_adds", "Mult-adds (b=512)"), ("lowest_loss", "Lowest loss")]


def comparison_row(metrics: dict[str, Any], paper: dict[str, Any], *, same_epochs: bool = True) -> dict[str, str]:
    """Ours next to the paper's for one model, with the differences (no time ratio over other epochs)."""
    ours = paper_row(metrics)
    acc, paper_acc = metrics.get("test_accuracy"), paper.get("test_accuracy")
    diff = "-" if acc is None or paper_acc is None else f"{acc * 100 - paper_acc:+.2f}"
    weights, paper_weights = metrics.get("params"), paper.get("weights")
    weight_diff = "-" if weights is None or paper_weights is None else f"{weights - paper_weights:+,}"
    seconds, paper_cpu = metrics.get("train_seconds"), paper.get("cpu_seconds")
    speed = "-" if not seconds or not paper_cpu or not same_epochs else f"{paper_cpu / seconds:.2f}x"
    paper_loss = paper.get("lowest_loss")
    return {
        "model": ours["model"],
        "weights": ours["weights"], "paper_weights": format_count(paper_weights), "weights_diff": weight_diff,
        "test_acc": ours["test_acc"],
        "paper_test_acc": "-" if paper_acc is None else percent(paper_acc / 100), "test_acc_diff": diff,
        "time": f"{ours['time']} ({ours['device']})",
        "paper_cpu": format_duration(paper_cpu), "paper_gpu": format_duration(paper.get("gpu_seconds")),
        "speedup": speed,
        "mult_adds": ours["mult_adds"], "paper_mult_adds": paper.get("mult_adds") or "-",
        "lowest_loss": ours["lowest_loss"],
        "paper_lowest_loss": format_loss(paper_loss, paper.get("lowest_loss_epoch")),
    }


COMPARISON_COLUMNS = [
    ("model", "Model"), ("weights", "Weights"), ("paper_weights", "Paper weights"), ("weights_diff", "Δ weights"),
    ("test_acc", "Test acc."), ("paper_test_acc", "Paper test acc."), ("test_acc_diff", "Δ acc. (points)"),
    ("time", "Train time"), ("paper_cpu", "Paper CPU-only"), ("paper_gpu", "Paper with GPU"),
    ("speedup", "Paper CPU / ours"), ("mult_adds", "Mult-adds"), ("paper_mult_adds", "Paper mult-adds"),
    ("lowest_loss", "Lowest loss"), ("paper_lowest_loss", "Paper lowest loss"),
]


# --------------------------------------------------------------------------- reproduce

@dataclass
class Reproduction:
    """What ``reproduce`` trained and wrote."""

    rows: list[dict[str, str]]
    runs: list[dict[str, Any]]
    markdown: str
    html: str
    files: dict[str, Path]


def machine_description() -> str:
    """CPU model, core count and torch version (and the GPU when CUDA is visible)."""
    import torch

    cpu = _cpu_model() or platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def reproduce(names: Sequence[str] | None = None, *, epochs: int | None = None, device: str = "auto",
              precision: str = "auto", out: str | Path = "runs/reproduce", subset: int | None = None,
              data_root: str | None = None, dataset: str | None = None, seed: int | None = None,
              threads: int | None = None, command: str = "", progress: ProgressFn = _quiet) -> Reproduction:
    """Train the named configs (default: every as-counted paper config) and compare with the paper.

    Writes ``RESULTS.md``, ``results.html`` and ``results.json`` to ``out`` and each model's
    weights, metrics and config to ``out/models/NAME``. Data is loaded once per dataset.
    """
    from budgetnas.data import load_dataset

    originals = [resolve_config(n) for n in (names or paper_names())]
    configs = [override(c, epochs=epochs, seed=seed, dataset=dataset) for c in originals]
    # The paper's figures hold for its dataset and its epochs: other data (an npz may be a slice of Fashion-MNIST,
    # or anything) and other epochs are said in a note, and over other epochs the time ratio is left out.
    other_data = sorted({c.dataset for c, o in zip(configs, originals) if c.dataset != o.dataset and o.paper})
    other_epochs = any(c.recipe.epochs != o.recipe.epochs for c, o in zip(configs, originals) if o.paper)
    out = Path(out)
    check_writable(out)
    datasets: dict[str, Any] = {}
    cost = [_cost(c) for c in configs]
    done_cost, remaining = 0.0, Remaining(sum(cost))
    runs, rows = [], []
    for i, config in enumerate(configs, start=1):
        if config.dataset not in datasets:
            datasets[config.dataset] = load_dataset(config.dataset, data_root, with_test=True, subset=subset)
        data = datasets[config.dataset]
        per_epoch = cost[i - 1] / config.recipe.epochs
        progress(f"[{i}/{len(configs)}] {config.name}: {describe_spec(config.spec)} "
                 f"({plural(config.recipe.epochs, 'epoch')}, {len(data.train)} train images)")

        def on_epoch(e: Any, i: int = i, per_epoch: float = per_epoch, config: RunConfig = config) -> None:
            eta = remaining.at(done_cost + per_epoch * e.epoch)
            progress(f"[{i}/{len(configs)}] {config.name} {epoch_line(e, config.recipe.epochs)}"
                     + (f"  ETA ~{format_duration(eta)}" if eta is not None else ""))

        report = train_config(config, device=device, precision=precision, data=data, on_epoch=on_epoch,
                              threads=threads)
        report.metrics["subset"] = subset
        done_cost += cost[i - 1]
        save_run(report, out / "models" / config.name)
        runs.append({**report.metrics, "paper": dict(config.paper)})
        rows.append(comparison_row(report.metrics, config.paper, same_epochs=config.recipe.epochs
                                   == originals[i - 1].recipe.epochs))
        progress(f"[{i}/{len(configs)}] {config.name}: test accuracy {percent(report.metrics['test_accuracy'])} "
                 f"in {format_duration(report.metrics['train_seconds'])}")
    notes = [f"Trained on {', '.join(other_data)}, not the paper's Fashion-MNIST: its figures compare only "
             "where that is Fashion-MNIST."] if other_data else []
    if other_epochs:
        notes.append(f"Trained for {plural(configs[0].recipe.epochs, 'epoch')} instead of the paper's: accuracy is "
                     "not comparable to the paper's, and the time ratio is left out.")
    return _write_reproduction(rows, runs, out, command=command, subset=subset, extra_notes=notes)


def _cost(config: RunConfig) -> float:
    """Relative cost of training ``config``, for the ETA: epochs x (mult-adds per image + a fixed overhead).

    The overhead term stands for the per-image work that does not scale with the model (data
    slicing, loss, optimizer), which dominates for the tiny FCNs.
    """
    from budgetnas.counting import count_mult_adds
    from budgetnas.data import dataset_info

    shape, classes = ((1, 28, 28), 10)
    if not config.dataset.startswith("npz:"):
        shape, classes = dataset_info(config.dataset)
    try:
        per_image = count_mult_adds(config.spec, shape, classes, batch=1)
    except UsageError:  # an npz dataset whose images are not 28x28: any positive cost will do
        per_image = 0
    return config.recipe.epochs * (per_image + 100_000)


def _write_reproduction(rows: list[dict[str, str]], runs: list[dict[str, Any]], out: Path, *, command: str,
                        subset: int | None, extra_notes: Sequence[str] = ()) -> Reproduction:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    devices = sorted({f"{r['device']} ({r['precision']})" for r in runs})
    notes = [AS_COUNTED_NOTE,
             "Paper times are 20-epoch wall times on the paper's CPU-only and GPU machines; ours are the "
             "training wall time (steps and the per-epoch validation pass) on this machine. Test accuracy "
             "is measured once, after the last epoch; Δ acc. = ours − paper in percentage points."]
    if subset:
        notes.append(f"Trained on a {subset}-image slice of the data: a smoke run, NOT comparable to the paper.")
    notes.extend(extra_notes)
    facts = [f"Date: {when}", f"Machine: {machine}", f"Device: {', '.join(devices)}"]
    if command:
        facts.append(f"Command: `{command}`")
    markdown = "\n".join(["# Reproducing the paper's models", "", *[f"- {f}" for f in facts], "",
                          tables.markdown(*tables.select(rows, COMPARISON_COLUMNS)), "", *[f"> {n}\n" for n in notes]])
    page = "\n".join([
        "<!doctype html>", "<html><head><meta charset='utf-8'><title>budgetnas reproduce</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}</style></head><body>",
        "<h1>Reproducing the paper's models</h1>",
        "<ul>" + "".join(f"<li>{html.escape(f.replace('`', ''))}</li>" for f in facts) + "</ul>",
        tables.html(*tables.select(rows, COMPARISON_COLUMNS)),
        *[f"<p>{html.escape(n)}</p>" for n in notes], "</body></html>"])
    files = {"markdown": out / "RESULTS.md", "html": out / "results.html", "json": out / "results.json"}
    files["markdown"].write_text(markdown + "\n", encoding="utf-8")
    files["html"].write_text(page + "\n", encoding="utf-8")
    files["json"].write_text(json.dumps({"date": when, "machine": machine, "command": command, "subset": subset,
                                         "note": AS_COUNTED_NOTE, "runs": runs}, indent=2, sort_keys=True,
                                        default=str) + "\n", encoding="utf-8")
    return Reproduction(rows=rows, runs=runs, markdown=markdown, html=page, files=files)
