"""Architecture specs: frozen, serialisable descriptions of a network.

A spec is the single source of truth for an architecture. It is built from trial
parameters by the search space, stored in the study as JSON, written to and read from
TOML configs, turned into an ``nn.Module`` by :func:`budgetnas.model.build_model` and
counted by :func:`budgetnas.counting.count_params`. Specs do not know the dataset:
input shape and class count are passed alongside, so one spec can be counted against
Fashion-MNIST (1x28x28) or CIFAR-10 (3x32x32).

Two families exist:

* :class:`CNNSpec` generalises the paper's Algorithm 1: conv blocks (conv -> optional
  batch-norm -> activation -> optional max-pool), a flatten or global-average-pool head,
  0..3 hidden fully connected layers (linear -> optional batch-norm -> activation ->
  optional dropout), then the output layer.
* :class:`FCNSpec`: flatten, 1..4 hidden layers, output layer.

Other families (``mbconv``, plug-ins) define their spec types in :mod:`budgetnas.families`;
:func:`spec_from_dict` and :func:`spec_to_dict` read and write specs of every family.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, Union

from budgetnas.errors import UsageError
from budgetnas.limits import MAX_SPEC_INT

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "elu", "tanh")
INITS = ("default", "xavier_normal", "kaiming")
HEADS = ("flatten", "gap")
MAX_WIDTH = MAX_SPEC_INT  # sanity bound on any width (budgetnas.limits): a typo such as 10**9 is refused, never allocated
MAX_KERNEL = 64  # and on kernel sizes and padding


@dataclass(frozen=True)
class ConvBlock:
    """One conv block: Conv2d(k, padding) -> [BatchNorm2d] -> activation -> [MaxPool2d(pool)].

    ``padding=None`` means "same" padding for odd kernels (``kernel_size // 2``); it is
    resolved at construction so the stored spec is always explicit. ``pool=None`` (or 0,
    as TOML writes it) means no pooling; otherwise a max-pool with kernel and stride ``pool``.
    """

    out_channels: int
    kernel_size: int = 3
    padding: int | None = None
    pool: int | None = 2
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.pool == 0:  # TOML has no null: configs write pool = 0 for "no pooling"
            object.__setattr__(self, "pool", None)
        _check_int("conv out_channels", self.out_channels, 1, MAX_WIDTH)
        _check_int("conv kernel_size", self.kernel_size, 1, MAX_KERNEL)
        if self.padding is None:
            object.__setattr__(self, "padding", self.kernel_size // 2)
        _check_int("conv padding", self.padding, 0, MAX_KERNEL)
        if self.pool is not None:
            _check_int("conv pool", self.pool, 1)
        _check_bool("conv batch_norm", self.batch_norm)


@dataclass(frozen=True)
class CNNSpec:
    """A convolutional network: conv blocks, a head, hidden FC layers, output layer."""

    family: ClassVar[str] = "cnn"

    conv: tuple[ConvBlock, ...]
    fc: tuple[int, ...] = ()
    head: Literal["flatten", "gap"] = "flatten"
    fc_batch_norm: bool = False
    dropout: float = 0.0
    activation: str = "relu"
    init: str = "default"

    def __post_init__(self) -> None:
        conv = tuple(b if isinstance(b, ConvBlock) else ConvBlock(**_keys(b, ConvBlock, "conv block"))
                     for b in _sequence("conv", self.conv))
        object.__setattr__(self, "conv", conv)
        object.__setattr__(self, "fc", _sequence("fc", self.fc))
        if not conv:
            raise UsageError("a CNN spec needs at least one conv block")
        if len(self.fc) > 3:
            raise UsageError(f"a CNN spec has at most 3 hidden FC layers, got {len(self.fc)}")
        for width in self.fc:
            _check_int("fc width", width, 1, MAX_WIDTH)
        if self.head not in HEADS:
            raise UsageError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        _check_bool("fc_batch_norm", self.fc_batch_norm)
        _check_common(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conv"] = [asdict(b) for b in self.conv]
        data["fc"] = list(self.fc)
        return {"family": self.family, **data}

    def describe(self) -> str:
        """One-line summary such as ``conv 40k3p2,60k3p2 | fc 25,50 | relu``."""
        blocks = ",".join(
            f"{b.out_channels}k{b.kernel_size}" + (f"p{b.pool}" if b.pool else "") + ("bn" if b.batch_norm else "")
            for b in self.conv
        )
        parts = [f"conv {blocks}", "gap" if self.head == "gap" else "", f"fc {','.join(map(str, self.fc)) or '-'}"]
        extras = [self.activation]
        if self.fc_batch_norm:
            extras.append("fc-bn")
        if self.dropout:
            extras.append(f"dropout {self.dropout:g}")
        if self.init != "default":
            extras.append(self.init)
        return " | ".join(p for p in parts if p) + " | " + " ".join(extras)


@dataclass(frozen=True)
class FCNSpec:
    """A fully connected network: flatten, hidden layers, output layer."""

    family: ClassVar[str] = "fcn"

    hidden: tuple[int, ...] = field(default_factory=tuple)
    batch_norm: bool = False
    dropout: float = 0.0
    activation: str = "relu"
    init: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", _sequence("hidden", self.hidden))
        if not 1 <= len(self.hidden) <= 4:
            raise UsageError(f"an FCN spec has 1..4 hidden layers, got {len(self.hidden)}")
        for width in self.hidden:
            _check_int("hidden width", width, 1, MAX_WIDTH)
        _check_bool("batch_norm", self.batch_norm)
        _check_common(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return {"family": self.family, **data}

    def describe(self) -> str:
        extras = [self.activation]
        if self.batch_norm:
            extras.append("bn")
        if self.dropout:
            extras.append(f"dropout {self.dropout:g}")
        if self.init != "default":
            extras.append(self.init)
        return f"fc {','.join(map(str, self.hidden))} | " + " ".join(extras)


Spec = Union[CNNSpec, FCNSpec]
FAMILIES: dict[str, type] = {"cnn": CNNSpec, "fcn": FCNSpec}


def spec_from_dict(data: dict[str, Any]) -> Spec:
    """Rebuild a spec from :meth:`to_dict` output (or a TOML ``[spec]`` table).

    Unknown keys and wrong types raise :class:`UsageError` naming the key.
    """
    if not isinstance(data, dict) or not isinstance(data.get("family"), str) or data["family"] not in FAMILIES:
        # another family, or none: the registry (which also says what is wrong with it)
        from budgetnas.families import spec_from_dict as from_registry

        return from_registry(data)
    data = dict(data)
    family = data.pop("family")
    cls = FAMILIES[family]
    return cls(**_keys(data, cls, f"{family} spec"))


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """``spec`` of any registered family as plain data, ``family`` key included (see budgetnas.families)."""
    from budgetnas.families import spec_to_dict as to_dict

    return to_dict(spec)


def spec_to_json(spec: Spec) -> str:
    return json.dumps(spec_to_dict(spec), sort_keys=True)


def spec_from_json(text: str) -> Spec:
    return spec_from_dict(json.loads(text))


def with_changes(spec: Spec, **changes: Any) -> Spec:
    """A copy of ``spec`` with fields replaced (specs are frozen)."""
    return replace(spec, **changes)


def feature_shapes(spec: CNNSpec, input_shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """(C, H, W) after each conv block. Raises UsageError when a map shrinks below 1x1."""
    _, h, w = input_shape
    shapes = []
    for i, block in enumerate(spec.conv, start=1):
        h = h + 2 * block.padding - block.kernel_size + 1
        w = w + 2 * block.padding - block.kernel_size + 1
        if h < 1 or w < 1:
            raise UsageError(f"conv block {i} (kernel {block.kernel_size}, padding {block.padding}) "
                             f"shrinks the {input_shape[1]}x{input_shape[2]} input below 1x1")
        if block.pool:
            if h < block.pool or w < block.pool:
                raise UsageError(f"conv block {i} pools a {h}x{w} map with kernel {block.pool}: "
                                 "that would go below 1x1")
            h, w = h // block.pool, w // block.pool
        shapes.append((block.out_channels, h, w))
    return shapes


def _keys(data: Any, cls: type, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a table/dict, got {type(data).__name__}")
    allowed = {f for f in cls.__dataclass_fields__}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in {what}; allowed: {', '.join(sorted(allowed))}")
    missing = [f.name for f in fields(cls)
               if f.name not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise UsageError(f"{what} lacks key(s) {', '.join(missing)}")
    return data


def _sequence(name: str, value: Any) -> tuple[Any, ...]:
    """``value`` (a list or tuple, as TOML and JSON give them) as a tuple; anything else names ``name``."""
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{name} must be a list, got {value!r}")
    return tuple(value)


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, got {value}")
    if value > (MAX_SPEC_INT if maximum is None else maximum):  # before any tensor is allocated (budgetnas.limits)
        raise UsageError(f"{name} must be <= {MAX_SPEC_INT if maximum is None else maximum:,}, got {value:,}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false, got {value!r}")


def _check_common(spec: Any) -> None:
    if isinstance(spec.dropout, bool) or not isinstance(spec.dropout, (int, float)) or not 0 <= spec.dropout < 1:
        raise UsageError(f"dropout must be a number in [0, 1), got {spec.dropout!r}")
    object.__setattr__(spec, "dropout", float(spec.dropout))
    if spec.activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {spec.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if spec.init not in INITS:
        raise UsageError(f"unknown init {spec.init!r}; choose one of {', '.join(INITS)}")
