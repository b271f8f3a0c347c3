"""Recipes: one module per experiment, each a config dataclass + ``run(config, run)``.

A recipe module registers itself with the :func:`recipe` decorator::

    @dataclass
    class MagnitudeConfig(RecipeConfig):
        epochs: int = 30
        ...

    @recipe("magnitude", config=MagnitudeConfig,
            presets={"smoke": {"epochs": 1}, "quick": {}, "paper": {"epochs": 200}},
            help="LeNet-5 on digits: magnitude pruning, fine-tune, compact")
    def run(cfg: MagnitudeConfig, run: Run) -> dict:
        ...            # train, log with run.log, plot with run.save_figure, tables with run.save_table
        return {...}   # flat summary figures -> summary.json

:func:`run_recipe` resolves the config, creates the run directory, seeds, runs, writes
``summary.json`` and builds ``report.html``. Modules in this package are imported by
:func:`sparseforge.registry.load_all`, so adding a file is enough to add a recipe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RecipeConfig, build_config, config_hash, parse_overrides
from ..engine import distributed as D
from ..engine.fit import seed_everything
from ..engine.run import Run
from ..errors import ConfigError
from ..registry import RECIPES


@dataclass(frozen=True)
class Recipe:
    """A registered experiment."""

    name: str
    config: type[RecipeConfig]
    presets: dict[str, dict[str, Any]]
    fn: Callable[[Any, Run], dict[str, Any]]
    help: str
    headline: tuple[str, ...] = ()

    def build_config(self, preset: str = "quick", overrides: dict[str, str] | None = None, **explicit: Any) -> Any:
        return build_config(self.config, self.presets, preset, overrides, **explicit)


def recipe(
    name: str,
    *,
    config: type[RecipeConfig],
    presets: dict[str, dict[str, Any]],
    help: str,
    headline: tuple[str, ...] = (),
) -> Callable[[Callable[[Any, Run], dict[str, Any]]], Callable[[Any, Run], dict[str, Any]]]:
    """Register ``fn(config, run) -> summary`` as recipe ``name``.

    ``headline`` names the summary keys shown in the demo index (default: the first few).
    """
    missing = {"smoke", "quick", "paper"} - set(presets)
    if missing:
        raise ValueError(f"recipe {name!r} lacks presets {sorted(missing)}")

    def deco(fn: Callable[[Any, Run], dict[str, Any]]) -> Callable[[Any, Run], dict[str, Any]]:
        RECIPES.add(name, Recipe(name, config, presets, fn, help, tuple(headline)))
        return fn

    return deco


def default_run_dir(name: str, preset: str, cfg: RecipeConfig, root: str | os.PathLike = "runs") -> Path:
    """``runs/<recipe>-<preset>-<config hash>`` (open_lth style: same config, same folder)."""
    return Path(root) / f"{name}-{preset}-{config_hash(cfg, name, preset)}"


# Fields that may change between an interrupted run and its --resume without changing results.
_RESUME_FREE = {"device", "threads", "version"}


def _check_resumable(path: Path, record: dict[str, Any]) -> None:
    """Refuse ``--resume`` into a run directory made with another config (its stages would not fit)."""
    import json

    p = path / "config.json"
    if not p.exists():
        return
    try:
        old = json.loads(p.read_text())
    except json.JSONDecodeError:
        return
    new = json.loads(json.dumps(record))  # tuples -> lists, as stored
    diff = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_FREE and old.get(k) != new.get(k)]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"--resume: {path} was run with another config ({k}: {old.get(k)!r} -> {new.get(k)!r}); "
            "use a new --out or drop --resume"
        )


def run_recipe(
    name: str,
    *,
    preset: str = "quick",
    overrides: dict[str, str] | list[str] | None = None,
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    resume: bool = False,
    report: bool = True,
    threads: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run recipe ``name`` and return (run directory, summary).

    Raises:
        UnknownNameError: no such recipe.
        ConfigError: bad preset, key or value.
    """
    rec: Recipe = RECIPES.get(name)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    cfg = rec.build_config(preset, overrides, seed=seed, device=device, threads=threads)
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    path = Path(out) if out is not None else default_run_dir(name, preset, cfg)
    D.setup(str(cfg.device))  # before the recipe builds its loaders, so they shard under torchrun
    from .. import __version__

    record = {"recipe": name, "preset": preset, "version": __version__, **cfg.to_dict()}
    if resume:
        _check_resumable(path, record)
    run = Run(path, resume=resume)
    run.save_config(record)
    seed_everything(cfg.seed)
    import torch

    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        summary = dict(rec.fn(cfg, run) or {})
    finally:
        torch.set_num_threads(old_threads)
    summary.setdefault("wall_time_s", round(time.perf_counter() - t0, 3))
    run.save_summary(summary)
    if report and run.write:
        from ..report import build_report

        build_report(path)
    if D.launched_distributed():
        D.teardown()
    return path, summary


__all__ = ["Recipe", "default_run_dir", "recipe", "run_recipe"]
