"""Transfer between budgets: start a search from what other studies found, re-fitted to this budget.

A good architecture at 50K is rarely a bad *shape* at 20K or 100K: its depth, kernels, pools,
head, normalisation and the *ratios* of its widths carry over; only the common width scale
must change. The ``fit`` parameterisation (every built-in family has it) separates exactly
those two things: the family's ``params_of`` (:class:`~budgetnas.families.Family`) inverts a
spec into relative widths and the fill fraction of its own budget, and its ``sample`` with those
same parameters at *another* budget rescales every width so the exact count fits ``fill * budget``.
So a transferred start is the source winner's shape at the source's fill of the new budget,
within the budget by construction, and it is enqueued exactly like ``--enqueue`` starts
(``search.start_params``), so TPE then explores around it.

Sources (``SearchConfig.transfer_from`` / ``budgetnas search --transfer-from``):

``auto``
    the search's own storage: studies of the same family and dataset at the nearest budget
    below and the nearest above this one, among those with trained trials;
a storage URL (``sqlite:///other.db``, ``journal:PATH``, ``postgresql://...``)
    the same, in that storage;
a run config (a TOML path such as ``studies/found/cnn-50k.toml``, or a paper name)
    its spec (and recipe, with ``--recipe-space search``); its source budget is
    ``[result] budget`` when recorded, else its own parameter count (fill 1). Its widths are
    read on the config's own dataset, so a Fashion-MNIST winner's shape carries over to
    8x8 digits too (pools that would shrink a map below 1x1 are dropped, as the space does).

From each source study the ``TOP`` best trained trials by validation accuracy are taken. Where a
revision of the space fixed a choice the source answered otherwise, the source is first moved to
the nearest spec the space holds (``Family.nearest_in_space``: a CNN winner of space version 2
without conv batch norm gets it), as its recipe is moved to the nearest the recipe space holds.
A candidate the current space still cannot express is skipped, not an error: transfer is a head
start, never a reason for a search to fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from budgetnas.counting import count_params
from budgetnas.errors import StorageError, UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.families import family_key, family_of
from budgetnas.space import FILL
from budgetnas.spec import Spec
from budgetnas.trainer import Recipe

if TYPE_CHECKING:
    from budgetnas.search import SearchConfig

TOP = 3  # best trials taken from each source study
AUTO = "auto"


@dataclass(frozen=True)
class Source:
    """One architecture to transfer: where it came from, what it is, and the budget it was fitted to."""

    ref: str  # recorded as the enqueued trial's ``enqueued`` user attribute
    spec: Spec
    recipe: Recipe | None
    budget: int
    # the dataset the source was fitted on; None = the same as the search's (its widths are fitted there)
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None


def refit(source: Source, budget: int, input_shape: tuple[int, int, int], num_classes: int,
          recipe_space: str = "paper", max_mult_adds: int | None = None) -> dict[str, Any]:
    """The ``fit`` trial parameters that rebuild ``source`` re-fitted to ``budget`` (see the module docstring).

    A shape's mult-adds grow with its widths about as fast as its parameters, so a winner scaled
    up from a smaller budget can land over the search's compute bound (``max_mult_adds``, at
    batch 512), where the objective would reject it untrained. Its fill is then lowered, keeping
    the shape, to the largest that fits the bound. Raises :class:`UsageError` when the current
    space cannot express the source spec, or no fill brings it within the bound.
    """
    from optuna.trial import FixedTrial

    from budgetnas.counting import PAPER_BATCH, count_mult_adds, human_count

    family = family_of(source.spec)
    recipe = source.recipe if recipe_space == "search" else None
    source_shape, source_classes = source.input_shape or input_shape, source.num_classes or num_classes
    source_spec = family.nearest_in_space(source.spec)  # e.g. an older study's winner, before a space revision
    # What the nearest spec adds (a conv batch norm's 2 per channel) may take it a hair over its own
    # budget: its fill is then 1, which the line below makes of it anyway.
    source_budget = max(source.budget, family.count_params(source_spec, source_shape, source_classes))
    values = family.params_of(source_spec, recipe, source_budget, source_shape, source_classes, "fit")
    values["fill"] = min(values["fill"], FILL[1])  # (params + 0.5) / budget can exceed 1 by a hair
    if source.input_shape and source.input_shape != input_shape:
        values.update(family.shape_params(source_spec, input_shape))

    def fitted(fill: float) -> Spec:
        return family.sample(FixedTrial({**values, "fill": fill}), budget, input_shape, num_classes, "fit")

    def within(fill: float) -> bool:
        return max_mult_adds is None or count_mult_adds(fitted(fill), input_shape, num_classes,
                                                        PAPER_BATCH) <= max_mult_adds

    if not within(values["fill"]):
        if not within(FILL[0]):
            raise UsageError(f"{source.ref}: re-fitted to {budget:,} it costs more than the compute bound "
                             f"{human_count(max_mult_adds)} mult-adds at any fill; widen --max-mult-adds")
        low, high = FILL[0], values["fill"]  # low fits the bound, high does not
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if within(middle) else (low, middle)
        values["fill"] = low
    spec = fitted(values["fill"])
    if count_params(spec, input_shape, num_classes) > budget:  # fit guarantees it; a start must never break it
        raise UsageError(f"{source.ref}: re-fitted spec {describe_spec(spec)} is over the budget {budget:,}")
    return values


def transfer_starts(config: "SearchConfig", input_shape: tuple[int, int, int], num_classes: int,
                    top: int = TOP) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(reference, trial parameters) of each transferred start, and notes on what was skipped and why."""
    if config.transfer_from and config.parameterisation != "fit":
        raise UsageError("--transfer-from re-fits widths with the fit parameterisation; "
                         "it needs --parameterisation fit")
    starts: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    bound = config.cost_bounds(input_shape).max_mult_adds if config.transfer_from else None
    for ref in config.transfer_from:
        for source in sources(ref, config, top):
            try:
                starts.append((source.ref, refit(source, config.budget, input_shape, num_classes,
                                                 config.recipe_space, bound)))
            except UsageError as exc:
                notes.append(f"transfer {source.ref} skipped: {exc}")
    return starts, notes


def sources(ref: str, config: "SearchConfig", top: int = TOP) -> list[Source]:
    """The architectures one ``--transfer-from`` value names (see the module docstring)."""
    if ref == AUTO:
        return _from_storage(config.storage_url, config, top, must_exist=False)
    if "://" in ref or ref.startswith("journal:"):
        return _from_storage(ref, config, top, must_exist=True)
    return [_from_config(ref, config)]


def neighbours(budgets: list[int], budget: int) -> list[int]:
    """The nearest budget below and the nearest above ``budget`` (those that exist)."""
    below = [b for b in budgets if b < budget]
    above = [b for b in budgets if b > budget]
    return ([max(below)] if below else []) + ([min(above)] if above else [])


def _from_config(ref: str, config: "SearchConfig") -> Source:
    from budgetnas.reproduce import resolve_config

    run = resolve_config(ref)
    if family_key(run.spec) != config.family:  # a plug-in's spec type need not carry its family's name
        raise UsageError(f"--transfer-from {ref} is a {family_key(run.spec)} config; this search is {config.family}")
    from budgetnas.data import dataset_info

    shape, classes = dataset_info(run.dataset or config.dataset, config.data_root)
    budget = run.result.get("budget")
    if not isinstance(budget, int) or budget <= 0:
        budget = count_params(run.spec, shape, classes)
    return Source(ref=f"transfer:{ref}", spec=run.spec, recipe=run.recipe, budget=budget, input_shape=shape,
                  num_classes=classes)


def _from_storage(url: str, config: "SearchConfig", top: int, must_exist: bool) -> list[Source]:
    from budgetnas.records import recipe_of, settings_of, spec_of
    from budgetnas.replay import trained_trials, val_accuracy_of
    from budgetnas.studyio import open_existing_storage

    import optuna

    try:
        storage, _ = open_existing_storage(url)
    except StorageError:
        if must_exist:
            raise
        return []  # a first search in a new storage: nothing to transfer yet
    studies: dict[int, list[Any]] = {}
    for summary in storage.get_all_studies():
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        try:
            settings = settings_of(study)
        except StorageError:
            continue  # not a budgetnas study
        if settings.family == config.family and settings.dataset == config.dataset and settings.budget != config.budget:
            # same dataset: the source widths were fitted on the search's own input shape
            trained = trained_trials(study)
            if trained:  # a neighbour that has trained nothing yet (e.g. started beside this one) has nothing to give
                studies.setdefault(settings.budget, []).append((trained, study.study_name, settings))
    found = []
    for budget in neighbours(sorted(studies), config.budget):
        for trained, name, settings in studies[budget]:
            best = sorted(trained, key=lambda t: -val_accuracy_of(t, settings))[:top]
            for trial in best:
                recipe = recipe_of(trial) if settings.recipe_space == "search" else None
                found.append(Source(ref=f"transfer:{name}#{trial.number}", spec=spec_of(trial),
                                    recipe=recipe, budget=budget))
    return found
