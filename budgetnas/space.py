"""The search space: Optuna trial parameters -> an architecture spec.

:func:`sample_spec` is the only place where architecture parameters are suggested. It is
typed against :class:`optuna.trial.BaseTrial`, so ``sample_spec(FixedTrial(params), ...)``
rebuilds the spec of any stored trial (replay cross-check) and tests can pin exact picks.

Rules every sampler relies on:

* Each parameter name always has the same distribution, in every trial of every study of
  a family's version in :data:`SPACE_VERSIONS` (ranges never depend on the budget or on earlier answers).
  Depth-dependent parameters are conditional in the optuna-examples way: ``conv3_kernel``
  is only asked when there are at least 3 blocks, but always with the same choices.
* A conv block whose input map is larger than :data:`POOLED_SIZE` always pools (since
  version 2): unpooled early blocks were the candidates whose compute and memory were out of
  all proportion to the budget (issue 13). ``conv{i}_pool`` is asked only for the later blocks.
* Every conv block is batch-normalised (cnn version 3): a choice that the search's short
  proxy could not judge (see ``_CNNShape``).
* The space adapts to the input size without failing: a pool that would shrink a feature
  map below 1x1 is dropped (the spec records ``pool=None``), so 1x8x8 and 3x32x32 inputs
  work as well as 1x28x28.

Two parameterisations of the widths (everything else is shared):

``direct``
    channels and unit counts are sampled as such (log-uniform integers). Every paper
    architecture is reachable exactly (the CNNs as their batch-norm variants, ``NAME+bn``); a
    candidate over the budget is rejected by the objective before training.
``fit`` (default)
    relative widths and a target fill fraction of the budget are sampled; all widths are
    then scaled by the largest factor whose exact :func:`count_params` stays within
    ``fill * budget`` (bisection over the factor; counting is analytic and cheap). So every
    candidate fits by construction, unless even width 1 everywhere is over the budget.
    The exact count remains the final check in the objective.

The training recipe is searched too when a study asks for it (``recipe_space="search"``,
:func:`sample_recipe`): learning rate, schedule, weight decay, label smoothing, light
augmentation and batch size, always trained with AdamW on standardised inputs. The default
``"paper"`` trains every candidate with the paper's recipe, so a search compares
architectures only; ``budgetnas reproduce`` always uses the paper's recipe.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from budgetnas.choices import PARAMETERISATIONS, RECIPE_SPACES
from budgetnas.counting import count_params
from budgetnas.errors import UsageError
from budgetnas.spec import ACTIVATIONS, INITS, CNNSpec, ConvBlock, FCNSpec, Spec
from budgetnas.spec import FAMILIES as SPEC_FAMILIES
from budgetnas.recipe import AUGMENTS, SCHEDULES, Recipe

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

# Bump a family's version whenever a name, range or rule of its space below changes: its old studies then
# refuse to resume. cnn 3: every conv block is batch-normalised (see _CNNShape); fcn is unchanged since 2.
SPACE_VERSIONS = {"cnn": 3, "fcn": 2}
FAMILIES = tuple(SPEC_FAMILIES)  # the one list of families is spec.FAMILIES (issue 14 makes it a registry)

MAX_CONV_BLOCKS = 4
MAX_FC_LAYERS = 3  # hidden FC layers of a CNN head
MAX_FCN_LAYERS = 4
KERNELS = (3, 5, 7)
POOL = 2  # max-pool kernel and stride when a block pools (the paper's choice)
POOLED_SIZE = 8  # a block whose input map is larger always pools (28 -> 14 -> 7, 32 -> 16 -> 8, then a choice)

# direct: ranges wide enough for 10k..1M budgets and containing every paper pick
CHANNELS = (2, 256)  # paper: 10, 18, 20, 25, 30, 40, 60
FC_UNITS = (2, 512)  # paper: 8, 9, 20, 25, 30, 50
FCN_UNITS = (2, 1024)  # paper: 50, 100, 120, 180, 200
# fit: widths relative to each other; the common scale is solved from the budget
RELATIVE_WIDTH = (0.25, 4.0)
FILL = (0.5, 1.0)  # fraction of the budget to aim for (lower = cheaper, faster candidates)
DROPOUT = (0.0, 0.5)
_MAX_WIDTH = 1 << 16  # bisection ceiling for any single layer width

# recipe space (recipe_space="search"); each range contains the paper's choice where it has one
LR = (3e-4, 1e-2)  # paper: 1e-3
WEIGHT_DECAY = (1e-5, 1e-1)  # AdamW's decoupled decay; 1e-5 is as good as none at 20 epochs
LABEL_SMOOTHING = (0.0, 0.15)
BATCH_SIZES = (128, 256, 512)  # paper: 512; smaller batches give more steps per epoch at similar CPU cost


def sample_spec(trial: "BaseTrial", family: str, budget: int, input_shape: tuple[int, int, int],
                num_classes: int, parameterisation: str = "fit") -> Spec:
    """Sample one architecture of ``family`` from ``trial``.

    With ``parameterisation="fit"`` the widths are scaled to use ``fill * budget`` parameters
    at most; with ``"direct"`` the spec may exceed the budget (the caller rejects it).
    """
    check_choices(family, parameterisation)
    if family == "cnn":
        shape = _CNNShape(trial, input_shape)
        if parameterisation == "direct":
            conv = [trial.suggest_int(f"conv{i}_channels", *CHANNELS, log=True) for i in range(1, shape.n_conv + 1)]
            fc = [trial.suggest_int(f"fc{i}_units", *FC_UNITS, log=True) for i in range(1, shape.n_fc + 1)]
            return shape.build(conv, fc)
        conv_rel = [trial.suggest_float(f"conv{i}_width", *RELATIVE_WIDTH, log=True)
                    for i in range(1, shape.n_conv + 1)]
        fc_rel = [trial.suggest_float(f"fc{i}_width", *RELATIVE_WIDTH, log=True) for i in range(1, shape.n_fc + 1)]
        fill = trial.suggest_float("fill", *FILL)
        return fit_widths(lambda widths: shape.build(widths[:len(conv_rel)], widths[len(conv_rel):]),
                          conv_rel + fc_rel, int(fill * budget), input_shape, num_classes)

    n_hidden = trial.suggest_int("n_hidden", 1, MAX_FCN_LAYERS)
    batch_norm = trial.suggest_categorical("batch_norm", [False, True])
    dropout, activation, init = _regularisation(trial)

    def build(widths: list[int]) -> FCNSpec:
        return FCNSpec(hidden=tuple(widths), batch_norm=batch_norm, dropout=dropout, activation=activation, init=init)

    if parameterisation == "direct":
        return build([trial.suggest_int(f"hidden{i}_units", *FCN_UNITS, log=True) for i in range(1, n_hidden + 1)])
    rel = [trial.suggest_float(f"hidden{i}_width", *RELATIVE_WIDTH, log=True) for i in range(1, n_hidden + 1)]
    fill = trial.suggest_float("fill", *FILL)
    return fit_widths(build, rel, int(fill * budget), input_shape, num_classes)


def sample_recipe(trial: "BaseTrial", base: Recipe) -> Recipe:
    """Sample a training recipe from ``trial``; ``base`` gives the epochs and the seed.

    The optimiser is AdamW and inputs are standardised (both fixed: they are better than the
    paper's Adam without decay on 0..1 pixels at every budget we tried, and fewer knobs leave
    the sampler more trials for the ones that matter). Schedules scale with the epoch count,
    so a recipe found with short search runs carries over to a 20-epoch replay.
    """
    return Recipe(
        epochs=base.epochs, seed=base.seed, optimizer="adamw", normalize=True,
        lr=trial.suggest_float("lr", *LR, log=True),
        schedule=trial.suggest_categorical("schedule", list(SCHEDULES)),
        weight_decay=trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True),
        label_smoothing=trial.suggest_float("label_smoothing", *LABEL_SMOOTHING),
        augment=trial.suggest_categorical("augment", list(AUGMENTS)),
        batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
    )


def fit_widths(build: Callable[[list[int]], Spec], relative: list[float], target: int,
               input_shape: tuple[int, int, int], num_classes: int) -> Spec:
    """The spec ``build(widths)`` with ``widths = max(1, round(s * relative))`` for the largest
    scale ``s`` whose exact parameter count is at most ``target``.

    The count never decreases as ``s`` grows (every width is non-decreasing in ``s`` and every
    parameter term is increasing in each width), so bisection finds that scale. When even
    ``s = 0`` (all widths 1) exceeds ``target``, the all-ones spec is returned; the objective's
    exact check then decides whether it is within the budget.
    """
    def spec_at(scale: float) -> Spec:
        return build([max(1, round(scale * r)) for r in relative])

    def fits(scale: float) -> bool:
        return count_params(spec_at(scale), input_shape, num_classes) <= target

    low, high = 0.0, 1.0
    while fits(high):
        low, high = high, high * 2
        if high * max(relative) > _MAX_WIDTH:
            return spec_at(low)
    for _ in range(60):  # widths are integers: 60 halvings of the interval pin the last step exactly
        middle = (low + high) / 2
        if fits(middle):
            low = middle
        else:
            high = middle
        if high - low < 1e-9 * high:
            break
    return spec_at(low)


def minimal_spec(family: str, parameterisation: str, input_shape: tuple[int, int, int]) -> Spec:
    """The smallest architecture the space can produce (for the "budget too small" check)."""
    check_choices(family, parameterisation)
    if family == "cnn":
        width = CHANNELS[0] if parameterisation == "direct" else 1
        pool = POOL if min(input_shape[1:]) >= POOL else None
        return CNNSpec(conv=(ConvBlock(width, kernel_size=KERNELS[0], pool=pool, batch_norm=True),), fc=(), head="gap")
    width = FCN_UNITS[0] if parameterisation == "direct" else 1
    return FCNSpec(hidden=(width,))


def smallest_count(family: str, parameterisation: str, input_shape: tuple[int, int, int], num_classes: int) -> int:
    return count_params(minimal_spec(family, parameterisation, input_shape), input_shape, num_classes)


def check_choices(family: str, parameterisation: str, recipe_space: str = "paper") -> None:
    if recipe_space not in RECIPE_SPACES:
        raise UsageError(f"unknown recipe space {recipe_space!r}; choose one of {', '.join(RECIPE_SPACES)}")
    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if parameterisation not in PARAMETERISATIONS:
        raise UsageError(f"unknown parameterisation {parameterisation!r}; choose one of {', '.join(PARAMETERISATIONS)}")


class _CNNShape:
    """Everything of a CNN except its widths (shared by both parameterisations)."""

    def __init__(self, trial: "BaseTrial", input_shape: tuple[int, int, int]) -> None:
        self.n_conv = trial.suggest_int("n_conv", 1, MAX_CONV_BLOCKS)
        self.kernels = [trial.suggest_categorical(f"conv{i}_kernel", list(KERNELS)) for i in range(1, self.n_conv + 1)]
        # A block whose input map is larger than POOLED_SIZE always pools (cnn/fcn version 2): an unpooled
        # block there costs its parameters times every pixel, and the budget alone then allows 10-20x the
        # paper's compute (cost.py). Only the later, small maps choose; that choice is asked only then.
        size = min(input_shape[1:])
        self.pools: list[int | None] = []
        for i in range(1, self.n_conv + 1):
            wanted = size > POOLED_SIZE or trial.suggest_categorical(f"conv{i}_pool", [True, False])
            # "same" padding keeps the map size through each conv; only pools shrink it. Drop a pool
            # that would take the map below 1x1 rather than fail (small inputs such as 8x8).
            pool = POOL if wanted and size >= POOL else None
            size = size // pool if pool else size
            self.pools.append(pool)
        self.head = trial.suggest_categorical("head", ["flatten", "gap"])
        self.n_fc = trial.suggest_int("n_fc", 0, MAX_FC_LAYERS)
        self.fc_batch_norm = trial.suggest_categorical("fc_batch_norm", [False, True])
        self.dropout, self.activation, self.init = _regularisation(trial)

    def build(self, channels: list[int], fc: list[int]) -> CNNSpec:
        # Every conv block is batch-normalised (cnn version 3; before, a choice the search could not judge).
        # On the proxy a search trains (10 epochs of 18,000 images) batch norm leads in the first epochs and
        # ties or trails at the end, so TPE seldom sampled it and no searched winner had it, while every
        # hand-designed winner did; trained for 20 epochs on the whole split, the searched winners gain or
        # tie with it (studies/found/RESULTS.md, "Conv batch norm"). Fixing it frees the sampler for the rest.
        conv = tuple(ConvBlock(c, kernel_size=k, pool=p, batch_norm=True)
                     for c, k, p in zip(channels, self.kernels, self.pools))
        return CNNSpec(conv=conv, fc=tuple(fc), head=self.head, fc_batch_norm=self.fc_batch_norm,
                       dropout=self.dropout, activation=self.activation, init=self.init)


def _regularisation(trial: "BaseTrial") -> tuple[float, str, str]:
    dropout = trial.suggest_float("dropout", *DROPOUT)
    activation = trial.suggest_categorical("activation", list(ACTIVATIONS))
    init = trial.suggest_categorical("init", list(INITS))
    return dropout, activation, init


def fit_params(widths: dict[str, int], params: int, budget: int, what: str) -> dict[str, float]:
    """The ``fit`` parameters that rebuild ``widths`` exactly: relative widths around their
    geometric middle and the fill that makes the exact count (``params``) the target. Every
    family's inverse (``params_of``) uses it; out of the fit space is a UsageError naming ``what``."""
    middle = math.sqrt(max(widths.values()) * min(widths.values()))
    values: dict[str, float] = {f"{name}_width": width / middle for name, width in widths.items()}
    # Half a parameter over, so that int(fill * budget) == params despite float rounding. A spec of exactly the
    # budget gets fill 1 (the top of the space, not 1.000006); an over-budget start keeps its own fill, so that it
    # is rebuilt as it is and the exact check rejects it.
    values["fill"] = (params + 0.5) / budget
    if params <= budget:
        values["fill"] = min(values["fill"], FILL[1])
    if values["fill"] < FILL[0] or max(widths.values()) / min(widths.values()) > RELATIVE_WIDTH[1] ** 2:
        raise UsageError(f"{what} ({params:,} parameters) is outside the fit space for budget {budget:,} "
                         "(under half the budget, or widths too far apart); use --parameterisation direct")
    return values


def pool_choices(spec: CNNSpec, input_shape: tuple[int, int, int]) -> dict[str, bool]:
    """The ``conv{i}_pool`` answers that rebuild ``spec``'s pools on ``input_shape``.

    The space asks only of blocks whose input map is at most :data:`POOLED_SIZE` (a larger one
    always pools). On the spec's own input this is exact (:func:`params_of` checks that every
    larger map pooled). A spec read on another input size (a 28x28 winner moved to 8x8 digits by
    ``--transfer-from``) is asked where its own maps were larger and the space always pooled:
    those blocks keep their pools.
    """
    choices, size = {}, min(input_shape[1:])
    for i, block in enumerate(spec.conv, start=1):
        if size <= POOLED_SIZE:
            choices[f"conv{i}_pool"] = block.pool is not None
        pool = POOL if (size > POOLED_SIZE or block.pool) and size >= POOL else None
        size = size // pool if pool else size
    return choices


def params_of(spec: Spec, recipe: Recipe | None, budget: int, input_shape: tuple[int, int, int], num_classes: int,
              parameterisation: str = "fit") -> dict[str, Any]:
    """The trial parameters from which :func:`sample_spec` rebuilds ``spec`` exactly (and, given a
    ``recipe``, :func:`sample_recipe` the nearest recipe the space holds): the inverse of the space.

    ``budgetnas search --enqueue`` hands these to ``Study.enqueue_trial`` so a search starts from
    known models (the paper's picks, an earlier winner) before the sampler explores around them.
    A spec the space cannot express (a kernel or pool it never samples, batch norm in some conv
    blocks only, under half the budget in ``fit``) is a :class:`UsageError` naming the reason.
    """
    check_choices(spec.family, parameterisation)
    params = count_params(spec, input_shape, num_classes)
    if params > budget:
        raise UsageError(f"{spec.describe()} has {params:,} parameters, over the budget {budget:,}")
    values: dict[str, Any] = {"dropout": spec.dropout, "activation": spec.activation, "init": spec.init}
    if isinstance(spec, CNNSpec):
        blocks = spec.conv
        if not 1 <= len(blocks) <= MAX_CONV_BLOCKS or len(spec.fc) > MAX_FC_LAYERS:
            raise UsageError(f"{spec.describe()}: the space has 1..{MAX_CONV_BLOCKS} conv blocks and "
                             f"0..{MAX_FC_LAYERS} hidden FC layers")
        if not all(b.batch_norm for b in blocks):
            raise UsageError(f"{spec.describe()}: the space batch-normalises every conv block (since cnn space "
                             "version 3); start from its batch-norm variant (a paper name: NAME+bn)")
        for b in blocks:
            if b.kernel_size not in KERNELS or b.padding != b.kernel_size // 2 or b.pool not in (None, POOL):
                raise UsageError(f"{spec.describe()}: the space has kernels {KERNELS} with same padding "
                                 f"and pool {POOL} or none")
        values.update(n_conv=len(blocks), head=spec.head, n_fc=len(spec.fc), fc_batch_norm=spec.fc_batch_norm)
        size = min(input_shape[1:])
        for i, b in enumerate(blocks, start=1):
            values[f"conv{i}_kernel"] = b.kernel_size
            if size > POOLED_SIZE and b.pool is None:
                raise UsageError(f"{spec.describe()}: the space pools every block whose input map is larger than "
                                 f"{POOLED_SIZE}x{POOLED_SIZE} (block {i} sees {size}x{size})")
            size = size // b.pool if b.pool else size
        values.update(pool_choices(spec, input_shape))
        widths = {**{f"conv{i}": b.out_channels for i, b in enumerate(blocks, start=1)},
                  **{f"fc{i}": units for i, units in enumerate(spec.fc, start=1)}}
        unit_names = {**{f"conv{i}": "channels" for i in range(1, len(blocks) + 1)},
                      **{f"fc{i}": "units" for i in range(1, len(spec.fc) + 1)}}
    else:
        if len(spec.hidden) > MAX_FCN_LAYERS:
            raise UsageError(f"{spec.describe()}: the space has 1..{MAX_FCN_LAYERS} hidden layers")
        values.update(n_hidden=len(spec.hidden), batch_norm=spec.batch_norm)
        widths = {f"hidden{i}": units for i, units in enumerate(spec.hidden, start=1)}
        unit_names = {name: "units" for name in widths}
    if not DROPOUT[0] <= spec.dropout <= DROPOUT[1]:
        raise UsageError(f"{spec.describe()}: the space's dropout is {DROPOUT[0]}..{DROPOUT[1]}")
    if parameterisation == "direct":
        check_direct_widths(spec.describe(), widths, {name: CHANNELS if name.startswith("conv") else FC_UNITS
                                                      if name.startswith("fc") else FCN_UNITS for name in widths})
        values.update({f"{name}_{unit_names[name]}": width for name, width in widths.items()})
    else:
        values.update(fit_params(widths, params, budget, spec.describe()))
    if recipe is not None:
        values.update(recipe_params(recipe))
    from optuna.trial import FixedTrial

    rebuilt = sample_spec(FixedTrial(values), spec.family, budget, input_shape, num_classes, parameterisation)
    if rebuilt != spec:  # the inverse must be exact, or the enqueued trial would train something else
        raise UsageError(f"{spec.describe()} is not reachable exactly in the {parameterisation} space "
                         f"(it rebuilds as {rebuilt.describe()}); use --parameterisation direct")
    return values


def check_direct_widths(what: str, widths: dict[str, int], ranges: dict[str, tuple[int, int]]) -> None:
    """Refuse a width outside the range the ``direct`` space samples it from (Optuna would store the enqueued
    value anyway, outside its distribution, with a warning)."""
    for name, width in widths.items():
        low, high = ranges[name]
        if not low <= width <= high:
            raise UsageError(f"{what}: the direct space has {name} widths {low}..{high}, got {width}; "
                             "use --parameterisation fit")


def recipe_params(recipe: Recipe) -> dict[str, Any]:
    """The parameters from which :func:`sample_recipe` builds the recipe of the space nearest ``recipe``."""
    return dict(lr=min(max(recipe.lr, LR[0]), LR[1]), schedule=recipe.schedule,
                weight_decay=min(max(recipe.weight_decay, WEIGHT_DECAY[0]), WEIGHT_DECAY[1]),
                label_smoothing=min(recipe.label_smoothing, LABEL_SMOOTHING[1]), augment=recipe.augment,
                batch_size=min(BATCH_SIZES, key=lambda b: abs(b - recipe.batch_size)))
