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
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

PRESETS = ("smoke", "quick", "paper")


@dataclass
class RecipeConfig:
    """Fields every recipe config has.

    Attributes:
        seed: global random seed (``--seed``).
        device: ``cpu`` or ``cuda`` (``--device``).
        threads: intra-op CPU threads for the run (``--set threads=N``; None keeps PyTorch's
            default). Small models run fastest on one thread, and a busy machine thrashes with more.
    """

    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


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
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and text.lower() in ("none", "null", ""):
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
        return config_cls(**values)
    except TypeError as e:  # a preset naming a wrong key is a bug in the recipe, but say it in one line
        raise ConfigError(str(e)) from None


def replace(cfg: RecipeConfig, **changes: Any) -> RecipeConfig:
    """``dataclasses.replace`` that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "PRESETS",
    "RecipeConfig",
    "build_config",
    "config_hash",
    "parse_overrides",
    "parse_value",
    "replace",
]

_ = typing  # keep the module importable under `from __future__ import annotations`
