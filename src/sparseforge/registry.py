"""Decorator registries: models, datasets, methods (by family) and recipes, and plugins.

Every registry is iterated by the tests, so a new entry is tested the moment it is
registered (the timm ``@register_model`` pattern). Methods belong to a *family* (``prox``,
``scorer``, ``spectral``, ``compressor``, ``sdr``, ...), a small protocol the public API
dispatches through::

    @register_method("group_lasso", family="prox")
    class GroupLasso(ProxOperator): ...

    METHODS.names(family="prox")            # -> ["group_lasso", "l1", "wgsef"]
    METHODS.resolve("snip", "scorer")       # the family's protocol object (a Scorer)

Registries are filled when the module defining an entry is imported; :func:`load_all`
imports every sub-package, then the modules named by the installed entry points of group
``sparseforge.methods`` (plugins), so that a registry is complete before it is listed.
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

    @property
    def description(self) -> str:
        """One line: the ``description`` metadata, the object's ``description``, or its docstring's first line."""
        text = self.meta.get("description") or getattr(self.obj, "description", None)
        if not isinstance(text, str) or not text:
            fn = getattr(self.obj, "fn", None)  # a Scorer record: its function's docstring
            doc = getattr(fn, "__doc__", None) if fn is not None else getattr(self.obj, "__doc__", None)
            text = doc or ""
        lines = text.strip().splitlines()
        return lines[0].strip() if lines else ""


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


@dataclass(frozen=True)
class Family:
    """A method family: the protocol its entries follow and how a plain registered object becomes one.

    Attributes:
        name: ``"prox"``, ``"scorer"``, ``"spectral"``, ``"compressor"``, ``"sdr"``, ...
        description: one line for ``sparseforge list methods``.
        coerce: turns what was registered (a plain function from a plugin, a class) into the family's protocol
            object; the identity by default.
    """

    name: str
    description: str
    coerce: Callable[[Any], Any] = field(default=lambda obj: obj)


class MethodRegistry(Registry[Any]):
    """Methods keyed by (family, name): the same name may exist in two families (``magnitude`` is a scorer
    and a compressor). Lookups name the family; :meth:`resolve` returns the family's protocol object."""

    def __init__(self) -> None:
        super().__init__("method")
        self._by_family: dict[tuple[str, str], Entry[Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Any], Any]:
        family = meta.get("family")
        if not family:
            raise ValueError("register_method needs family=... (e.g. 'scorer', 'prox', 'spectral', 'compressor')")

        def deco(obj: Any) -> Any:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError("a method needs a name to be registered")
            old = self._by_family.get((family, key))
            if old is not None and old.obj is not obj:
                same = getattr(old.obj, "__qualname__", None) == getattr(obj, "__qualname__", 0) and getattr(
                    old.obj, "__module__", None) == getattr(obj, "__module__", 0)
                if not same:
                    raise ValueError(f"{family} method {key!r} is registered twice")
            entry = Entry(key, obj, dict(meta))
            self._by_family[(family, key)] = entry
            self._entries[key] = entry  # name-only view (last registration of that name)
            return obj

        return deco

    def entry(self, name: str, family: str | None = None) -> Entry[Any]:  # type: ignore[override]
        load_all()
        if family is not None:
            e = self._by_family.get((family, name))
            if e is None:
                choices = ", ".join(self.names(family=family)) or "none"
                other = [f for f, n in self._by_family if n == name]
                hint = f" ({name!r} is a {' / '.join(other)} method)" if other else ""
                raise UnknownNameError(f"unknown {family} method {name!r}{hint}; choose one of: {choices}")
            return e
        hits = [e for (f, n), e in self._by_family.items() if n == name]
        if not hits:
            choices = ", ".join(sorted({n for _, n in self._by_family})) or "none"
            raise UnknownNameError(f"unknown method {name!r}; choose one of: {choices}")
        if len(hits) > 1:
            fams = ", ".join(sorted(e.meta["family"] for e in hits))
            raise UnknownNameError(f"method {name!r} exists in several families ({fams}): name the family")
        return hits[0]

    def get(self, name: str, family: str | None = None) -> Any:  # type: ignore[override]
        """The registered object (as registered)."""
        return self.entry(name, family).obj

    def resolve(self, name: Any, family: str) -> Any:
        """The family's protocol object for ``name`` (a registered name, or an object to coerce)."""
        fam = FAMILIES.get(family)
        obj = self.get(name, family) if isinstance(name, str) else name
        return fam.coerce(obj)

    def names(self, **meta: Any) -> list[str]:
        load_all()
        return sorted({n for (_, n), e in self._by_family.items()
                       if all(e.meta.get(k) == v for k, v in meta.items())})

    def entries(self, **meta: Any) -> list[Entry[Any]]:
        """Entries sorted by (family, name), optionally filtered by metadata (``family="scorer"``)."""
        load_all()
        keys = sorted(k for k, e in self._by_family.items() if all(e.meta.get(a) == v for a, v in meta.items()))
        return [self._by_family[k] for k in keys]

    def families(self) -> list[str]:
        load_all()
        return sorted({f for f, _ in self._by_family} | set(FAMILIES.names()))

    def __contains__(self, name: object) -> bool:
        load_all()
        return any(n == name for _, n in self._by_family)

    def __len__(self) -> int:
        load_all()
        return len(self._by_family)


MODELS: Registry[Callable[..., Any]] = Registry("model")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
METHODS: MethodRegistry = MethodRegistry()
RECIPES: Registry[Any] = Registry("recipe")
FAMILIES: Registry[Family] = Registry("method family")

register_model = MODELS.register
register_dataset = DATASETS.register
register_method = METHODS.register
register_recipe = RECIPES.register


def register_family(name: str, description: str, *, coerce: Callable[[Any], Any] | None = None) -> Family:
    """Declare a method family (done once by the package that defines the family's protocol)."""
    fam = Family(name, description, coerce) if coerce is not None else Family(name, description)
    FAMILIES._entries[name] = Entry(name, fam, {})
    return fam


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
    "compress",
    "recipes",
)
PLUGIN_GROUP = "sparseforge.methods"
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
    _loaded = True  # set first: modules being imported may call load_all() again
    try:
        for sub in _PACKAGES:
            name = f"{__package__}.{sub}"
            try:
                spec = importlib.util.find_spec(name)
            except ModuleNotFoundError:
                spec = None
            if spec is None:
                continue
            import_submodules(name)
        load_plugins()
    except BaseException:
        _loaded = False  # a failed import: the next call tries again instead of leaving registries half full
        raise


class PluginWarning(UserWarning):
    """A plugin (entry point of group ``sparseforge.methods``) that could not be imported."""


def load_plugins(group: str = PLUGIN_GROUP) -> list[str]:
    """Import the modules named by the installed entry points of ``group``; returns the loaded names.

    A plugin's entry point names a module (``my_pkg.scorers``) that registers its methods when imported
    (``register_method(name, family="scorer")`` on a plain function is enough). A plugin that fails to import
    is a one-line :class:`PluginWarning` naming it, never an exception.
    """
    import warnings
    from importlib.metadata import entry_points

    loaded = []
    try:
        eps = entry_points(group=group)
    except Exception:  # noqa: BLE001 - broken metadata of an unrelated distribution must not stop us
        return loaded
    for ep in eps:
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as e:  # noqa: BLE001 - any failure of a third-party module is a warning
            msg = f"sparseforge plugin {ep.name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}".splitlines()[0]
            # a fake file name keeps the warning on one line (no source line to show)
            warnings.warn_explicit(msg, PluginWarning, filename=f"plugin {ep.name}", lineno=0)
    return loaded
