"""Run configs: a spec, a training recipe and a dataset in one TOML file.

``budgetnas train``, ``count`` and ``reproduce`` read them; ``studies/paper/*.toml`` holds
the paper's models with the figures it reported (``[paper]``), and ``studies/found/*.toml``
the searched models with the figures we measured (``[result]``)::

    name = "cnn-100k"
    dataset = "fashion-mnist"

    [spec]
    family = "cnn"
    fc = [25, 50]
    [[spec.conv]]
    out_channels = 40
    kernel_size = 3
    padding = 1
    pool = 2          # 0 = no pooling
    batch_norm = false

    [recipe]          # any Recipe field; omitted ones take the paper's defaults
    epochs = 20
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from budgetnas.data import check_dataset_name
from budgetnas.errors import UsageError
from budgetnas.limits import check_small_file
from budgetnas.spec import Spec, spec_from_dict, spec_to_dict
from budgetnas.recipe import Recipe

_KEYS = ("name", "description", "dataset", "spec", "recipe", "paper", "result")
# The [paper] figures read as numbers (the table is otherwise free-form: source, mult_adds as the paper wrote it).
_PAPER_NUMBERS = ("weights", "test_accuracy", "cpu_seconds", "gpu_seconds", "lowest_loss", "lowest_loss_epoch")


@dataclass(frozen=True)
class RunConfig:
    """What to train and how. ``paper`` and ``result`` are free-form tables of reported figures."""

    name: str
    spec: Spec
    recipe: Recipe = Recipe()
    dataset: str = "fashion-mnist"
    description: str = ""
    paper: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["dataset"] = self.dataset
        data["spec"] = _toml_safe(spec_to_dict(self.spec))
        data["recipe"] = self.recipe.to_dict()
        if self.paper:
            data["paper"] = dict(self.paper)
        if self.result:
            data["result"] = _toml_safe(dict(self.result))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_name: str = "config") -> "RunConfig":
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise UsageError(f"unknown key(s) {', '.join(unknown)} in config; allowed: {', '.join(_KEYS)}")
        if "spec" not in data:
            raise UsageError("config has no [spec] table; see studies/paper/*.toml for examples")
        for key in ("recipe", "paper", "result"):
            if key in data and not isinstance(data[key], dict):
                raise UsageError(f"config key {key!r} must be a table, got {type(data[key]).__name__}")
        for key in ("name", "description", "dataset"):
            if key in data and not isinstance(data[key], str):
                raise UsageError(f"config key {key!r} must be a string, got {data[key]!r}")
        for key in _PAPER_NUMBERS:  # read as numbers by count, reproduce and bench
            value = data.get("paper", {}).get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UsageError(f"[paper] {key} must be a number, got {value!r}")
        return cls(
            name=data.get("name", default_name),
            description=data.get("description", ""),
            dataset=check_dataset_name(data.get("dataset", "fashion-mnist")),
            spec=spec_from_dict(data["spec"]),
            recipe=Recipe.from_dict(data.get("recipe", {})),
            paper=dict(data.get("paper", {})),
            result=dict(data.get("result", {})),
        )


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A TOML file's table; every problem (missing, not a regular file, too large, not UTF-8, not TOML,
    nested too deeply for the parser) is a one-line :class:`UsageError` naming ``what`` and the file.
    Every TOML the tool reads from a user comes through here, so each check lives once."""
    path = Path(path)
    try:
        if path.exists():
            check_small_file(path, what)  # never read /dev/zero, a FIFO or a huge file
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nesting level: "a=[[[[...]]]]" exhausts the stack
        raise UsageError(f"{path} is not a usable TOML file: its arrays or tables nest too deeply") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a run config; every problem is a one-line :class:`UsageError` naming the file."""
    path = Path(path)
    data = read_toml(path)
    try:
        return RunConfig.from_dict(data, default_name=path.stem)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def save_config(config: RunConfig, path: str | Path, header: str = "") -> Path:
    """Write ``config`` as TOML (with an optional ``#`` comment header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = tomli_w.dumps(config.to_dict())
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) if header else ""
    path.write_text(comment + ("\n" if comment else "") + body, encoding="utf-8")
    return path


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop None values (pool=None becomes pool=0, its TOML spelling)."""
    if isinstance(value, dict):
        return {k: (0 if k == "pool" and v is None else _toml_safe(v)) for k, v in value.items()
                if v is not None or k == "pool"}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value]
    return value
