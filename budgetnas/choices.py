"""The named choices of the search and the trainer, in one light module.

The library checks values against these tuples and the CLI offers them as ``choices``, so a new
sampler or precision is added here once. No imports: ``budgetnas --help`` reads this module
without paying for torch or Optuna. (Families are the keys of :data:`budgetnas.spec.FAMILIES`.)
"""

SAMPLERS = ("tpe", "nsga2", "random")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
PARAMETERISATIONS = ("fit", "direct")
RECIPE_SPACES = ("paper", "search")
VALIDATIONS = ("slice", "full")  # where a search validates: 10% of --subset, or the whole validation split
