"""The :class:`Family` protocol: everything budgetnas needs to know about one kind of network.

A family owns its spec type (a frozen dataclass), the exact parameter count, the analytic
mult-adds, the builder, the search space (``sample`` and its inverse ``params_of``), the
smallest member the space can build, and the spec's dict/TOML form. The search, replay,
report, export and the CLI only ever talk to a family through this class, so a new family
(built in, or a plug-in loaded with ``--family package.module:Name``) needs no edit elsewhere.

Why an ABC with a few optional hooks rather than a bare ``typing.Protocol``: the registry
checks ``isinstance(obj, Family)`` so a wrong ``--family`` reference fails with one clear
line, and the hooks most families do not need (``params_of``, ``with_batch_norm``, the
training-layout hints) get safe defaults here instead of being re-written by every family.

Contract (checked by tests/test_families.py for every built-in family):

* ``count_params`` is exact and never builds a model: it equals ``sum(p.numel())`` of
  ``build(...)`` and torchinfo's trainable count. It raises :class:`UsageError` for a spec
  that does not fit the input (e.g. a map below 1x1).
* ``count_mult_adds`` is analytic (no model, no allocation) and follows torchinfo's
  convention: a Conv2d costs ``(weights + bias) x H_out x W_out``, any other layer with
  parameters costs its parameter count, per sample, times ``batch``.
* ``sample`` draws one spec from an Optuna trial; every parameter keeps one distribution
  (whatever the budget or the input), so studies stay valid. With ``"fit"`` the widths are
  scaled to the budget; with ``"direct"`` a spec may exceed it (the objective rejects it).
* ``params_of`` returns trial parameters from which ``sample`` rebuilds the spec exactly
  (``--enqueue``); raise :class:`UsageError` naming why a spec is outside the space.
* ``to_dict`` gives plain JSON/TOML data (no ``None``); ``from_dict`` inverts it and raises
  :class:`UsageError` naming a bad key. The registry adds the ``family`` key itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any, ClassVar

from budgetnas.errors import UsageError

if TYPE_CHECKING:
    from optuna.trial import BaseTrial
    from torch import nn

    from budgetnas.trainer import Recipe

Shape = tuple[int, int, int]  # (C, H, W) of one input image


class Family(ABC):
    """One architecture family. Subclass it, set ``name`` and ``spec_type``, implement the abstract methods."""

    name: ClassVar[str]  # the key specs and studies are stored under (e.g. "cnn")
    spec_type: ClassVar[type]  # a frozen dataclass; instances must compare by value
    parameterisations: ClassVar[tuple[str, ...]] = ("fit", "direct")
    channels_last: ClassVar[bool] = False  # train in channels-last memory layout (convolutional nets)
    feature_maps: ClassVar[bool] = False  # replay draws the activations of ``model.blocks``
    summary: ClassVar[str] = ""  # one line for ``--help`` and the README
    paper_family: ClassVar[str] = ""  # the paper's models reports and sweeps draw beside it ("cnn", "fcn", "": none)
    # The default compute bound (``--max-mult-adds auto``) is this many mult-adds per parameter of
    # the budget at every position of the always-pooled map (budgetnas.cost); None: no default bound.
    compute_factor: ClassVar[float | None] = None

    @property
    def space_version(self) -> int:
        """Stored with every study; bump it when ``sample`` changes, so old studies refuse to resume."""
        return 1

    # ------------------------------------------------------------------ counting and building

    @abstractmethod
    def count_params(self, spec: Any, input_shape: Shape, num_classes: int) -> int:
        """Exact trainable parameters of ``spec`` for ``input_shape`` inputs (never builds the model)."""

    @abstractmethod
    def count_mult_adds(self, spec: Any, input_shape: Shape, num_classes: int, batch: int = 1) -> int:
        """Analytic mult-adds of one forward pass over ``batch`` inputs, in torchinfo's convention."""

    @abstractmethod
    def build(self, spec: Any, input_shape: Shape, num_classes: int) -> "nn.Module":
        """The ``nn.Module`` that ``spec`` describes (its forward returns ``num_classes`` logits)."""

    # ------------------------------------------------------------------ search space

    @abstractmethod
    def sample(self, trial: "BaseTrial", budget: int, input_shape: Shape, num_classes: int,
               parameterisation: str = "fit") -> Any:
        """One spec drawn from ``trial`` (``fit``: at most the budget by construction)."""

    @abstractmethod
    def minimal_spec(self, parameterisation: str, input_shape: Shape) -> Any:
        """The smallest spec ``sample`` can produce (for the "budget too small" check)."""

    def smallest_count(self, parameterisation: str, input_shape: Shape, num_classes: int) -> int:
        return self.count_params(self.minimal_spec(parameterisation, input_shape), input_shape, num_classes)

    def params_of(self, spec: Any, recipe: "Recipe | None", budget: int, input_shape: Shape, num_classes: int,
                  parameterisation: str = "fit") -> dict[str, Any]:
        """Trial parameters that make ``sample`` rebuild ``spec`` exactly (used by ``--enqueue``)."""
        raise UsageError(f"the {self.name} family cannot start a search from a given model (--enqueue, "
                         "--transfer-from): it has no inverse of its search space (params_of)")

    def nearest_in_space(self, spec: Any) -> Any:
        """The spec nearest ``spec`` that ``sample`` can produce, where a revision of the space fixed a
        choice that ``spec`` (an older study's winner) answered otherwise: ``--transfer-from`` re-fits
        from it. Default: ``spec`` itself (what the space cannot express is then skipped)."""
        return spec

    def shape_params(self, spec: Any, input_shape: Shape) -> dict[str, Any]:
        """The trial parameters of ``spec`` whose question depends on the input size, answered for
        ``input_shape`` (``--transfer-from`` moves a winner to another input size, e.g. 28x28 to
        8x8). Nothing by default: a space that asks the same questions at any size."""
        return {}

    # ------------------------------------------------------------------ description and storage

    def describe(self, spec: Any) -> str:
        """A one-line summary of ``spec`` (tables, progress lines, reports)."""
        describe = getattr(spec, "describe", None)
        return describe() if callable(describe) else repr(spec)

    def to_dict(self, spec: Any) -> dict[str, Any]:
        """Plain data (lists, numbers, strings, bools; no None) for JSON and TOML."""
        return {k: v for k, v in asdict(spec).items() if k != "family"}

    def from_dict(self, data: dict[str, Any]) -> Any:
        """The spec :meth:`to_dict` wrote (without the ``family`` key)."""
        allowed = {f.name for f in fields(self.spec_type)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UsageError(f"unknown key(s) {', '.join(unknown)} in {self.name} spec; "
                             f"allowed: {', '.join(sorted(allowed))}")
        try:
            return self.spec_type(**data)
        except TypeError as exc:  # a missing required field
            raise UsageError(f"bad {self.name} spec: {exc}") from None

    def layers(self, spec: Any) -> list[tuple[str, str]]:
        """``spec`` part by part as (name, what it is): the rows of the trial note optuna-dashboard
        shows (:mod:`budgetnas.trialnotes`). Default: one row with :meth:`describe`."""
        return [("architecture", self.describe(spec))]

    def readable_attrs(self, spec: Any) -> dict[str, Any]:
        """User attributes (plain lists and numbers) that show a trained trial's widths in the
        dashboard's attribute panel, beside ``architecture``. Default: none."""
        return {}

    # ------------------------------------------------------------------ optional hooks

    def with_batch_norm(self, spec: Any) -> Any:
        """``spec`` with batch norm everywhere it is optional (``budgetnas train NAME+bn``)."""
        raise UsageError(f"the {self.name} family has no batch-norm variant (+bn)")

    def activations(self, spec: Any, input_shape: Shape) -> tuple[int, int] | None:
        """Per image, counted from the spec: (values the forward pass writes and autograd keeps for
        the backward pass, elements of the largest single map), the input excluded.

        :mod:`budgetnas.cost` turns this into the one memory estimate that the search's memory bound
        and the refusal of models that cannot fit at all both use. None: not known, so no memory
        bound applies to the family's candidates (their weights are still checked).
        """
        return None

    def largest_activation(self, spec: Any, input_shape: Shape) -> int | None:
        """Elements per image of the largest activation map, when the trainer may split a CPU batch
        into micro-batches to keep it in cache (see ``trainer._micro_batch``); None: never split."""
        return None
