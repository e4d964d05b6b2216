"""The family registry: architecture families by name, in the spirit of timm's ``create_model``.

Every place that used to branch on ``isinstance(spec, CNNSpec)`` or ``family == "cnn"``
asks the registry instead::

    family = get_family("mbconv")              # by name (or "package.module:Name")
    spec = family.sample(trial, 50_000, (1, 28, 28), 10)
    family_of(spec).count_params(spec, (1, 28, 28), 10)

Where a family comes from, in lookup order:

1. built in: ``cnn`` and ``fcn`` (the paper's, see :mod:`budgetnas.families.classic`) and
   ``mbconv`` (:mod:`budgetnas.families.mbconv`);
2. :func:`register_family` from Python (tests, notebooks);
3. installed packages, through the entry-point group ``budgetnas.families``
   (``my_family = "my_package.families:MyFamily"`` in their ``pyproject.toml``);
4. a reference ``package.module:Name`` to a :class:`Family` subclass or instance, imported
   on first use (``budgetnas search --family my_family:WideFCN``).

A family loaded from a reference is registered *under that reference*, and specs of it are
stored with ``family = "package.module:Name"`` (see :func:`spec_to_dict`). So a study, a
replay's ``spec.toml`` and a found config name the module to import, and ``replay``,
``report`` or ``train`` in a fresh process rebuild them with no extra option.

Built-in families load lazily: ``available_families()`` (used by ``--help``) imports no torch.

Where the registry sits: low. :mod:`budgetnas.spec`, :mod:`~budgetnas.counting`,
:mod:`~budgetnas.model`, :mod:`~budgetnas.trainer` and :mod:`~budgetnas.paper` hand any
family other than their own cnn/fcn code to it, while the families themselves are built on
those modules. So this module imports only :mod:`budgetnas.choices`, :mod:`budgetnas.errors`
and :mod:`budgetnas.families.base`, and names even the built-in families by reference, as it
names plug-ins: the dependency points from the families to the registry, never back, and
``tools/import_graph.py`` finds no import circle.
"""

from __future__ import annotations

import importlib
from typing import Any

from budgetnas.choices import RECIPE_SPACES
from budgetnas.errors import UsageError
from budgetnas.families.base import Family, Shape

ENTRY_POINT_GROUP = "budgetnas.families"
_BUILTIN = {"cnn": "budgetnas.families.classic:CNNFamily", "fcn": "budgetnas.families.classic:FCNFamily",
            "mbconv": "budgetnas.families.mbconv:MBConvFamily"}
_REGISTRY: dict[str, Family] = {}
_BY_TYPE: dict[type, str] = {}  # spec type -> registry key

__all__ = ["ENTRY_POINT_GROUP", "Family", "Shape", "available_families", "check_choices", "family_of",
           "get_family", "register_family", "spec_from_dict", "spec_to_dict"]


def register_family(family: Family | type[Family], key: str | None = None) -> Family:
    """Register ``family`` (an instance, or a class with a no-argument constructor) under ``key``
    (default: its ``name``) and return the instance. Registering a key twice replaces it."""
    instance = _instance(family, key or getattr(family, "name", repr(family)))
    key = key or instance.name
    old = _REGISTRY.get(key)
    if old is not None:
        _BY_TYPE.pop(old.spec_type, None)
    _REGISTRY[key] = instance
    _BY_TYPE[instance.spec_type] = key
    return instance


def get_family(name: str) -> Family:
    """The family registered as ``name``, loading a built-in, an entry point or a ``module:Name``
    reference on first use. Unknown names raise :class:`UsageError` listing the known ones."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"a family must be a name such as cnn, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BUILTIN:
        return register_family(_load_reference(_BUILTIN[name], what=f"built-in family {name}"), name)
    entry = _entry_points().get(name)
    if entry is not None:
        return register_family(_load_entry_point(entry), name)
    if ":" in name:
        return register_family(_load_reference(name, what=f"--family {name}"), name)
    raise UsageError(f"unknown family {name!r}; choose one of {', '.join(available_families())}, "
                     "or give a plug-in family as package.module:Name")


def family_of(spec: Any) -> Family:
    """The registered family whose spec type ``spec`` is an instance of."""
    key = _BY_TYPE.get(type(spec))
    if key is None:
        for name in ("cnn", "fcn", "mbconv"):  # specs built directly (CNNSpec(...)) before any lookup
            get_family(name)
        key = _BY_TYPE.get(type(spec))
    if key is None:
        raise UsageError(f"{type(spec).__name__} is not the spec type of a registered family "
                         f"({', '.join(available_families())})")
    return _REGISTRY[key]


def describe(spec: Any) -> str:
    """One line for ``spec`` of any family, by its family (:meth:`Family.describe`): a plug-in's spec type
    need not have a ``describe`` method, and a family may describe its specs its own way."""
    return family_of(spec).describe(spec)


def family_key(spec: Any) -> str:
    """The key ``spec``'s family is registered under (``cnn``, or ``package.module:Name``)."""
    family_of(spec)
    return _BY_TYPE[type(spec)]


def available_families() -> list[str]:
    """Names of the built-in, registered and installed (entry-point) families, without loading them."""
    names = list(_BUILTIN) + [k for k in _REGISTRY if k not in _BUILTIN]
    return names + sorted(n for n in _entry_points() if n not in names)


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """``spec`` as plain data with its ``family`` key first: what studies, JSON and TOML store."""
    family = family_of(spec)
    return {"family": _BY_TYPE[type(spec)], **family.to_dict(spec)}


def spec_from_dict(data: Any) -> Any:
    """Rebuild a spec from :func:`spec_to_dict` output (or a TOML ``[spec]`` table)."""
    if not isinstance(data, dict):
        raise UsageError(f"a spec must be a table/dict, got {type(data).__name__}")
    data = dict(data)
    family = data.pop("family", None)
    if not isinstance(family, str):
        raise UsageError(f"a spec needs a family (one of {', '.join(available_families())}), got {family!r}")
    return get_family(family).from_dict(data)


def check_choices(family: str, parameterisation: str, recipe_space: str = "paper") -> Family:
    """The family ``family`` names, after checking that it offers ``parameterisation`` and that
    ``recipe_space`` exists (the registry's version of :func:`budgetnas.space.check_choices`)."""
    if recipe_space not in RECIPE_SPACES:
        raise UsageError(f"unknown recipe space {recipe_space!r}; choose one of {', '.join(RECIPE_SPACES)}")
    found = get_family(family)
    if parameterisation not in found.parameterisations:
        raise UsageError(f"unknown parameterisation {parameterisation!r}; choose one of "
                         f"{', '.join(found.parameterisations)}")
    return found


def _instance(obj: Any, where: str) -> Family:
    if isinstance(obj, type) and issubclass(obj, Family):
        try:
            obj = obj()
        except TypeError as exc:
            raise UsageError(f"{where}: cannot create the family without arguments ({exc})") from None
    if not isinstance(obj, Family):
        raise UsageError(f"{where} is not a budgetnas family (a subclass or instance of "
                         f"budgetnas.families.Family), got {type(obj).__name__}")
    for attr in ("name", "spec_type"):
        if not hasattr(obj, attr):
            raise UsageError(f"{where}: the family has no {attr!r}")
    return obj


def _load_reference(reference: str, what: str) -> Family:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr or ":" in attr:
        raise UsageError(f"{what}: a plug-in family is written package.module:Name, got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"{what}: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    except Exception as exc:  # the user's module raised while importing: say so in one line
        raise UsageError(f"{what}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return _instance(obj, what)


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(entry: Any) -> Family:
    what = f"family {entry.name} (entry point {entry.value} of group {ENTRY_POINT_GROUP})"
    try:
        obj = entry.load()
    except Exception as exc:
        raise UsageError(f"{what}: loading failed: {type(exc).__name__}: {exc}") from None
    return _instance(obj, what)
