"""budgetnas: neural architecture search under an exact parameter budget.

The public API mirrors the command line::

    from budgetnas import CNNSpec, ConvBlock, count_params, load_dataset, train
    spec = CNNSpec(conv=(ConvBlock(40), ConvBlock(60)), fc=(25, 50))
    count_params(spec, (1, 28, 28), 10)   # 97395, the paper's CNN-100K
"""

from budgetnas.budget import format_budget, parse_budget
from budgetnas.counting import count_mult_adds, count_params
from budgetnas.data import Data, load_dataset
from budgetnas.errors import BudgetNASError, DataError, RunFailure, StorageError, UsageError
from budgetnas.model import build_model
from budgetnas.spec import CNNSpec, ConvBlock, FCNSpec, Spec, spec_from_dict
from budgetnas.trainer import PAPER_RECIPE, Recipe, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "BudgetNASError", "CNNSpec", "ConvBlock", "Data", "DataError", "FCNSpec", "PAPER_RECIPE", "Recipe",
    "RunFailure", "Spec", "StorageError", "TrainResult", "UsageError", "build_model", "count_mult_adds",
    "count_params", "format_budget", "load_dataset", "parse_budget", "spec_from_dict", "train",
]
