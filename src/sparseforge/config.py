"""Config dataclasses, presets and ``--set key=value`` parsing.

Every recipe has a config dataclass deriving from :class:`RecipeConfig` (which holds
``seed`` and ``device``), and three presets (``smoke``, ``quick``, ``paper``) given as
dicts of field overrides. :func:`resolve_config` builds the config for a preset and
applies user overrides, checking every key and value against the dataclass' type
hints, so a typo or a wrong type is a one-line :class:`~sparseforge.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError, one_line

PRESETS = ("smoke", "quick", "paper")


# Default ranges by field name (ints only; None = unbounded). A config's ``limits`` ClassVar
# overrides them per key. They stop inputs that would crash deep inside torch / numpy (a batch
# size of 0, a negative seed) or run until killed (``epochs=1e12``) with a one-line error instead.
SEED_MAX = 2**32 - 1  # numpy's seed range
DEFAULT_LIMITS: tuple[tuple[str, tuple[int | None, int | None]], ...] = (
    # (pattern, (min, max)): "name" exact, "*_suffix", "prefix_*"
    ("seed", (0, SEED_MAX)),
    ("seeds", (0, SEED_MAX)),
    ("*_seed", (0, SEED_MAX)),
    ("threads", (1, 1024)),
    ("epochs", (1, 100_000)),
    ("*_epochs", (0, 100_000)),
    ("steps", (1, 10_000_000)),
    ("*_steps", (0, 10_000_000)),
    ("batch_size", (1, 1_048_576)),
    ("*_batch", (1, 1_048_576)),
    ("*_size", (1, 1_048_576)),
    ("seq_len", (1, 1_048_576)),
    ("d_*", (1, 65_536)),
    ("*_dim", (1, 65_536)),
    ("hidden", (1, 65_536)),
    ("width", (1, 65_536)),
    ("n_layers", (1, 1024)),
    ("n_heads", (1, 1024)),
)


def _match(pattern: str, name: str) -> bool:
    if pattern.startswith("*"):
        return name.endswith(pattern[1:])
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def default_limit(name: str) -> tuple[int | None, int | None] | None:
    """The default (min, max) of an integer field called ``name``, or None when it has none."""
    for pattern, rng in DEFAULT_LIMITS:
        if _match(pattern, name):
            return rng
    return None


def config_limits(config_cls: type[RecipeConfig]) -> dict[str, tuple[float | None, float | None]]:
    """Every field's (min, max): the name-based defaults, overridden by the config's ``limits``."""
    own: dict[str, Any] = {}
    for klass in reversed(config_cls.__mro__):
        own.update(vars(klass).get("limits", None) or {})
    out: dict[str, tuple[float | None, float | None]] = {}
    try:
        hints = get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - a class whose annotations do not resolve: read them as text
        hints = {}
    for f in fields(config_cls):
        tp = hints.get(f.name)
        is_int = _has_int(tp) if tp is not None else re.search(r"\bint\b", str(f.type)) is not None
        rng: Any = default_limit(f.name) if is_int else None  # the defaults are for integer fields
        if f.name in own:
            spec = own[f.name]
            if spec is None:
                rng = None
            elif isinstance(spec, (tuple, list)):
                rng = (spec[0], spec[1])
            else:  # a number: the maximum (the default minimum stays)
                rng = ((rng[0] if rng else None), spec)
        if rng is not None:
            out[f.name] = rng
    for k, spec in own.items():  # limits may name keys that only a subclass has
        if k not in out and spec is not None and any(f.name == k for f in fields(config_cls)):
            out[k] = (spec[0], spec[1]) if isinstance(spec, (tuple, list)) else (None, spec)
    return out


def _has_int(tp: Any) -> bool:
    if tp is int:
        return True
    return any(_has_int(a) for a in get_args(tp) if a is not Ellipsis)


def _fmt_num(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:,}".replace(",", "_") if isinstance(v, int) and abs(v) >= 10_000 else str(v)


@dataclass
class RecipeConfig:
    """Fields every recipe config has, and the checks every config gets.

    Attributes:
        seed: global random seed (``--seed``), in [0, 2**32 - 1].
        device: ``cpu`` or ``cuda`` (``--device``).
        threads: intra-op CPU threads for the run (``--set threads=N``; None keeps PyTorch's
            default). Small models run fastest on one thread, and a busy machine thrashes with more.

    Class variables a recipe config may declare (all optional):

    * ``limits``: ``{key: max}`` or ``{key: (min, max)}`` (``None`` for no bound) overriding the
      name-based defaults of :data:`DEFAULT_LIMITS`, which apply to integer fields: ``seed`` /
      ``*_seed`` / ``seeds`` in [0, 2**32 - 1], ``threads`` <= 1024, ``epochs`` in [1, 100_000]
      (``*_epochs`` from 0), ``steps`` in [1, 10_000_000] (``*_steps`` from 0), ``batch_size`` /
      ``*_batch`` / ``*_size`` / ``seq_len`` in [1, 1_048_576], ``d_*`` / ``*_dim`` / ``hidden`` /
      ``width`` in [1, 65_536], ``n_layers`` / ``n_heads`` in [1, 1024]. Tuples are checked per element.
    * ``file_datasets``: the values of the ``dataset`` field that read files from ``data_dir``.
      When declared, a ``data_dir`` given with any other (built-in) dataset is an error, and a
      ``data_dir`` that is not an existing folder is an error.
    * ``data_dirs``: the same for other pairs, ``{dir_field: (choice_field, choices that read it)}``,
      e.g. ``{"video_dir": ("video_data", ("frames",))}``; a tuple-valued choice field (``datasets``)
      reads the folder when any of its values does.

    Float fields must be finite (``nan`` / ``inf`` are refused).
    """

    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    limits: ClassVar[dict[str, Any]] = {}
    file_datasets: ClassVar[tuple[str, ...] | None] = None
    data_dirs: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {}

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        self.check_common()

    def check_common(self) -> None:
        """The generic checks: finite floats, per-key ranges (``limits``) and data folders."""
        ranges = config_limits(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            _check_finite(f.name, v)
            if f.name in ranges:
                _check_range(f.name, v, *ranges[f.name])
        self._check_data_dirs()

    def _check_data_dirs(self) -> None:
        names = {f.name for f in fields(self)}
        dirs = dict(self.data_dirs or {})
        if self.file_datasets is not None and {"dataset", "data_dir"} <= names:
            dirs.setdefault("data_dir", ("dataset", tuple(self.file_datasets)))
        for dir_field, (choice_field, readers) in dirs.items():
            if dir_field not in names or choice_field not in names:
                continue
            path, choice = getattr(self, dir_field), getattr(self, choice_field)
            if path is None:
                continue
            if not str(path).strip():
                raise ConfigError(f"{dir_field} is empty; give the folder of the {choice_field} files, or leave it unset")
            chosen = tuple(choice) if isinstance(choice, (tuple, list)) else (choice,)  # e.g. datasets=(a, b)
            used = [c for c in chosen if c in readers]
            if not used:
                who = f"{choice_field}={'/'.join(map(str, readers))}" if readers else "no dataset of this recipe"
                shown = choice if not isinstance(choice, (tuple, list)) else ",".join(map(str, choice))
                raise ConfigError(
                    f"{dir_field} is read only by {who}, and {choice_field}={shown!r} is built in (it would "
                    f"ignore {dir_field}); drop {dir_field} or set {choice_field} to one that reads files"
                )
            p = Path(str(path)).expanduser()
            if not p.exists():
                raise ConfigError(f"{dir_field} {str(path)!r} does not exist; give the folder holding the {used[0]} files")
            if not p.is_dir():
                raise ConfigError(f"{dir_field} {str(path)!r} is a file; give the folder holding the {used[0]} files")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _check_finite(key: str, v: Any) -> None:
    vals = v if isinstance(v, (tuple, list)) else (v,)
    for x in vals:
        if isinstance(x, float) and not math.isfinite(x):
            raise ConfigError(f"{key}={x} is not a finite number; give a finite value")


def _check_range(key: str, v: Any, lo: float | None, hi: float | None) -> None:
    vals = v if isinstance(v, (tuple, list)) else (v,)
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            if lo is not None and hi is not None:
                rng = f"between {_fmt_num(lo)} and {_fmt_num(hi)}"
            elif lo is not None:
                rng = f">= {_fmt_num(lo)}"
            else:
                rng = f"<= {_fmt_num(hi)}"
            what = "above the documented maximum" if hi is not None and x > hi else "below the minimum"
            raise ConfigError(f"{key}={_fmt_num(x)} is {what}: {key} must be {rng}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def config_hash(cfg: RecipeConfig, *extra: str) -> str:
    """A short stable hash of a config (open_lth style run directory names)."""
    blob = json.dumps([cfg.to_dict(), *extra], sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse a command-line string into a value of type ``tp`` (or raise ConfigError)."""
    origin = get_origin(tp)
    if tp is Any:
        return text
    if not text.strip() and origin not in (tuple, list) and (tp is not str or _pathlike(key)):
        hint = " (or none to unset it)" if origin in (Union, types.UnionType) and type(None) in get_args(tp) else ""
        raise ConfigError(f"--set {key}= has no value; give one{hint}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_value(text, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"--set {key}={text}: expected {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if str(c) == text:
                return c
        raise ConfigError(f"--set {key}={text}: expected one of {', '.join(map(str, choices))}")
    if origin in (tuple, list):
        args = get_args(tp)
        parts = [p for p in text.strip("()[]").split(",") if p.strip() != ""]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise ConfigError(f"--set {key}={text}: expected {len(args)} comma-separated values")
            vals = [parse_value(p.strip(), a, key) for p, a in zip(parts, args)]
        else:
            elem = args[0] if args else str
            vals = [parse_value(p.strip(), elem, key) for p in parts]
        return tuple(vals) if origin is tuple else vals
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={text}: expected a boolean (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ConfigError(f"--set {key}={text}: expected an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected a number") from None
    if tp is str:
        return text
    raise ConfigError(f"--set {key}: values of type {_type_name(tp)} cannot be set from the command line")


def _pathlike(key: str) -> bool:
    return key.endswith(("_dir", "_path", "_file", "_root")) or key in ("path", "root", "file")


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Type-check a Python value given in a preset dict (same rules as parse_value)."""
    if isinstance(value, str) and tp is not str and get_origin(tp) is not Literal:
        return parse_value(value, tp, key)
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (one-line error on a missing ``=``)."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_config(
    config_cls: type[RecipeConfig],
    presets: dict[str, dict[str, Any]],
    preset: str = "quick",
    overrides: dict[str, str] | None = None,
    **explicit: Any,
) -> RecipeConfig:
    """Config for ``preset`` with string ``overrides`` and typed ``explicit`` values applied.

    Raises:
        ConfigError: unknown preset, unknown key, or a value of the wrong type.
    """
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
    hints = get_type_hints(config_cls)
    names = {f.name for f in fields(config_cls) if f.init}
    values: dict[str, Any] = {}
    for k, v in presets[preset].items():
        values[k] = _check_value(v, hints[k], k)
    for k, v in (overrides or {}).items():
        if k not in names:
            raise ConfigError(
                f"unknown config key {k!r} for this recipe; known keys: {', '.join(sorted(names))}"
            )
        values[k] = parse_value(v, hints[k], k)
    for k, v in explicit.items():
        if v is not None:
            values[k] = v
    try:
        cfg = config_cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError) as e:  # a validation that is not a ConfigError: still one line
        raise ConfigError(one_line(e)) from None
    cfg.check_common()  # also for a subclass whose __post_init__ forgot super().__post_init__()
    return cfg


def replace(cfg: RecipeConfig, **changes: Any) -> RecipeConfig:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "DEFAULT_LIMITS",
    "PRESETS",
    "RecipeConfig",
    "build_config",
    "config_hash",
    "config_limits",
    "default_limit",
    "parse_overrides",
    "parse_value",
    "replace",
]

_ = typing  # keep the module importable under `from __future__ import annotations`
