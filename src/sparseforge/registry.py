"""Decorator registries: models, datasets, methods and recipes.

Every registry is iterated by the tests, so a new entry is tested the moment it is
registered (the timm ``@register_model`` pattern). Entries may carry metadata, e.g.
``family="prox"`` for methods::

    @register_method("group_lasso", family="prox")
    class GroupLasso(ProxOperator): ...

    METHODS.names(family="prox")  # -> ["group_lasso", ...]

Registries are filled when the module defining an entry is imported; :func:`load_all`
imports every sub-package so that a registry is complete before it is listed.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its name and free-form metadata."""

    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A name -> object table filled by a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"a {self.kind} needs a name to be registered")
            if key in self._entries and self._entries[key].obj is not obj:
                old = self._entries[key].obj
                same = getattr(old, "__qualname__", None) == getattr(obj, "__qualname__", 0) and getattr(
                    old, "__module__", None
                ) == getattr(obj, "__module__", 0)
                if not same:  # re-import of the same module (e.g. importlib.reload) is fine
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, obj, dict(meta))
            return obj

        return deco

    def add(self, name: str, obj: T, **meta: Any) -> T:
        """Register ``obj`` without the decorator syntax."""
        return self.register(name, **meta)(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; a one-line error listing the choices otherwise."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        load_all()
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def names(self, **meta: Any) -> list[str]:
        """Sorted names, optionally filtered by metadata equality (``family="prox"``)."""
        load_all()
        return sorted(
            n for n, e in self._entries.items() if all(e.meta.get(k) == v for k, v in meta.items())
        )

    def entries(self, **meta: Any) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names(**meta)]

    def __contains__(self, name: object) -> bool:
        load_all()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        load_all()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


MODELS: Registry[Callable[..., Any]] = Registry("model")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
METHODS: Registry[Any] = Registry("method")
RECIPES: Registry[Any] = Registry("recipe")

register_model = MODELS.register
register_dataset = DATASETS.register
register_method = METHODS.register
register_recipe = RECIPES.register

# Sub-packages whose modules register entries. Missing ones (added by later issues) are skipped.
_PACKAGES = (
    "models",
    "data",
    "prox",
    "optim",
    "pruning",
    "bayes",
    "spectral",
    "hyperbolic",
    "sdr",
    "graph",
    "physics",
    "operators",
    "recipes",
)
_loaded = False


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (used by packages whose modules self-register)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


def load_all() -> None:
    """Import every registering sub-package once, so registries are complete."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for sub in _PACKAGES:
        name = f"{__package__}.{sub}"
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        import_submodules(name)
