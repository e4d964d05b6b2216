"""budgetnas: neural architecture search under an exact parameter budget.

The public API mirrors the command line::

    from budgetnas import CNNSpec, ConvBlock, count_params, load_dataset, train
    spec = CNNSpec(conv=(ConvBlock(40), ConvBlock(60)), fc=(25, 50))
    count_params(spec, (1, 28, 28), 10)   # 97395, the paper's CNN-100K

The names below are imported on first use (PEP 562), so that ``budgetnas --help`` and the
CLI's bad-input errors do not pay for importing torch (seconds on a small CPU).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "format_budget": "budget", "parse_budget": "budget",
    "count_mult_adds": "counting", "count_params": "counting",
    "Data": "data", "load_dataset": "data",
    "BudgetNASError": "errors", "DataError": "errors", "RunFailure": "errors", "StorageError": "errors",
    "UsageError": "errors",
    "build_model": "model",
    "Family": "families", "available_families": "families", "family_of": "families", "get_family": "families",
    "register_family": "families", "MBConvSpec": "families.mbconv", "Stage": "families.mbconv",
    "CNNSpec": "spec", "ConvBlock": "spec", "FCNSpec": "spec", "Spec": "spec", "spec_from_dict": "spec",
    "PAPER_RECIPE": "trainer", "Recipe": "trainer", "TrainResult": "trainer", "train": "trainer",
    "RunConfig": "config", "load_config": "config", "save_config": "config",
    "SearchConfig": "search", "SearchSummary": "search", "run_search": "search",
    "write_report": "report",  # replay() and reproduce() share their module's name: import them from there
    "SweepConfig": "sweep", "run_sweep": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'budgetnas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"budgetnas.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static checkers and IDEs see ordinary imports
    from budgetnas.budget import format_budget, parse_budget
    from budgetnas.counting import count_mult_adds, count_params
    from budgetnas.data import Data, load_dataset
    from budgetnas.errors import BudgetNASError, DataError, RunFailure, StorageError, UsageError
    from budgetnas.model import build_model
    from budgetnas.families import Family, available_families, family_of, get_family, register_family
    from budgetnas.families.mbconv import MBConvSpec, Stage
    from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec, Spec, spec_from_dict
    from budgetnas.trainer import PAPER_RECIPE, Recipe, TrainResult, train
    from budgetnas.config import RunConfig, load_config, save_config
    from budgetnas.search import SearchConfig, SearchSummary, run_search
    from budgetnas.report import write_report
    from budgetnas.sweep import SweepConfig, run_sweep
