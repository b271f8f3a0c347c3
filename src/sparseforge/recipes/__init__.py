"""Recipes: one module per experiment, each a config dataclass + ``run(config, run)``.

A recipe module registers itself with the :func:`recipe` decorator::

    @dataclass
    class MagnitudeConfig(RecipeConfig):
        file_datasets: ClassVar[tuple[str, ...]] = ("mnist", "fashion_mnist", "cifar10")  # read data_dir
        limits: ClassVar[dict[str, Any]] = {"latency_repeats": (1, 10_000)}  # beyond the name defaults
        epochs: int = 30
        ...

    @recipe("magnitude", config=MagnitudeConfig,
            presets={"smoke": {"epochs": 1}, "quick": {}, "paper": {"epochs": 200}},
            help="LeNet-5 on digits: magnitude pruning, fine-tune, compact",
            claim="Pruning half the filters keeps accuracy and makes the compacted model faster.",
            headline=("dense_acc", "structured_acc", "latency_speedup"),
            goal="structured_acc >= dense_acc - 0.02 and latency_speedup > 1",
            key_figure="dense_vs_compact", paper={"structured_acc": "≈ dense"})
    def run(cfg: MagnitudeConfig, run: Run) -> dict:
        ...            # train, log with run.log, plot with run.save_figure, tables with run.save_table
        return {...}   # flat summary figures -> summary.json

:func:`run_recipe` resolves the config (types, ranges and data folders checked: one-line
:class:`~sparseforge.errors.ConfigError`), creates the run directory, seeds, runs, writes
``summary.json``, ``recipe.json`` (claim, headline, reference numbers, the goal checked on the
summary) and builds ``report.html``, which opens with them. Modules in this package are imported
by :func:`sparseforge.registry.load_all`, so adding a file is enough to add a recipe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RecipeConfig, build_config, config_hash, parse_overrides
from ..engine import distributed as D
from ..engine.checkpoint import atomic_write_json
from ..engine.fit import seed_everything
from ..engine.run import Run, flatten
from ..errors import ConfigError, PathError
from ..registry import RECIPES


@dataclass(frozen=True)
class Recipe:
    """A registered experiment and what its report leads with.

    Attributes:
        name / config / presets / fn / help: see :func:`recipe`.
        headline: summary keys shown first (report and demo card); default: the first few keys.
        claim: the paper's claim the recipe measures, one or two sentences (default: ``help``).
        goal: pass/fail against the stated goal: an expression over summary keys (see
            :mod:`sparseforge.report.goal`) or a callable ``goal(summary)``.
        goal_text: how the goal reads to a person (default: the expression itself).
        key_figure: name of the saved figure that shows the claim (report top, demo thumbnail);
            default: the first saved figure.
        paper: reference numbers next to the measured headline figures, ``{summary key: value}``
            (the paper's number, or the reference method's; a string is shown as it is).
        paper_note: where the reference numbers come from (setting, table), shown under them.
    """

    name: str
    config: type[RecipeConfig]
    presets: dict[str, dict[str, Any]]
    fn: Callable[[Any, Run], dict[str, Any]]
    help: str
    headline: tuple[str, ...] = ()
    claim: str = ""
    goal: str | Callable[[dict[str, Any]], Any] | None = None
    goal_text: str = ""
    key_figure: str | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    paper_note: str = ""

    def build_config(self, preset: str = "quick", overrides: dict[str, str] | None = None, **explicit: Any) -> Any:
        return build_config(self.config, self.presets, preset, overrides, **explicit)

    def card(self, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-able description for reports (``recipe.json``), with the goal checked on ``summary``."""
        from ..report.goal import evaluate_goal

        flat = flatten(summary or {})
        goal_text = self.goal_text or (self.goal if isinstance(self.goal, str) else "")
        res = evaluate_goal(self.goal, flat) if summary is not None else {"passed": None, "detail": ""}
        return {
            "name": self.name,
            "help": self.help,
            "claim": self.claim or self.help,
            "headline": list(self.headline),
            "key_figure": self.key_figure,
            "paper": dict(self.paper),
            "paper_note": self.paper_note,
            "goal": {"text": goal_text, "declared": self.goal is not None, **res},
        }


def recipe(
    name: str,
    *,
    config: type[RecipeConfig],
    presets: dict[str, dict[str, Any]],
    help: str,
    headline: tuple[str, ...] = (),
    claim: str = "",
    goal: str | Callable[[dict[str, Any]], Any] | None = None,
    goal_text: str = "",
    key_figure: str | None = None,
    paper: dict[str, Any] | None = None,
    paper_note: str = "",
) -> Callable[[Callable[[Any, Run], dict[str, Any]]], Callable[[Any, Run], dict[str, Any]]]:
    """Register ``fn(config, run) -> summary`` as recipe ``name``.

    Args:
        config: the config dataclass (a :class:`~sparseforge.config.RecipeConfig`).
        presets: ``{"smoke": {...}, "quick": {...}, "paper": {...}}`` field overrides.
        help: one line shown by ``sparseforge list``.
        headline: the summary keys a reader needs first (report top, demo card).
        claim: the paper's claim this recipe measures (the report opens with it).
        goal: the stated goal as an expression over summary keys, e.g.
            ``"speedup_ticket_vs_dense >= 1.5"``, or a callable on the flat summary returning
            ``True`` / ``False`` / ``None`` (or ``(result, detail)``); the demo card shows pass/fail.
        goal_text: the goal in words (default: the expression).
        key_figure: the saved figure (``run.save_figure(fig, name)``) that shows the claim.
        paper: reference numbers ``{summary key: value}`` shown next to the measured ones.
        paper_note: where those numbers come from (one line).
    """
    missing = {"smoke", "quick", "paper"} - set(presets)
    if missing:
        raise ValueError(f"recipe {name!r} lacks presets {sorted(missing)}")
    if isinstance(goal, str):
        from ..report.goal import check_expression

        check_expression(goal)  # a typo in the declaration fails at import, not in the report

    def deco(fn: Callable[[Any, Run], dict[str, Any]]) -> Callable[[Any, Run], dict[str, Any]]:
        RECIPES.add(name, Recipe(name, config, presets, fn, help, tuple(headline), claim, goal, goal_text,
                                 key_figure, dict(paper or {}), paper_note))
        return fn

    return deco


def default_run_dir(name: str, preset: str, cfg: RecipeConfig, root: str | os.PathLike = "runs") -> Path:
    """``runs/<recipe>-<preset>-<config hash>`` (open_lth style: same config, same folder)."""
    return Path(root) / f"{name}-{preset}-{config_hash(cfg, name, preset)}"


# Fields that may change between an interrupted run and its --resume without changing results.
_RESUME_FREE = {"device", "threads", "version"}  # (checkpoint cadence is not in the config either)


def _check_resumable(path: Path, record: dict[str, Any]) -> None:
    """Refuse ``--resume`` into a run directory made with another config (its stages would not fit)."""
    import json

    p = path / "config.json"
    if not p.exists():
        return
    try:
        old = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return
    if not isinstance(old, dict):
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
    checkpoint_steps: int | None = None,
    checkpoint_seconds: float | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run recipe ``name`` and return (run directory, summary).

    Args:
        checkpoint_steps / checkpoint_seconds: cadence of the mid-stage checkpoints of resumable
            :func:`~sparseforge.engine.fit` calls (default: every 60 s of training).

    Raises:
        UnknownNameError: no such recipe.
        ConfigError: bad preset, key or value (types, ranges, data folders).
        PathError: ``out`` is empty, a file, below a file, or not writable.
        CheckpointError: ``resume`` found a checkpoint it cannot read.
    """
    rec: Recipe = RECIPES.get(name)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if out is not None and str(out).strip() == "":
        raise PathError("--out is an empty path; give the run directory a folder name")
    if checkpoint_steps is not None and checkpoint_steps < 1:
        raise ConfigError(f"--checkpoint-steps must be >= 1, got {checkpoint_steps}")
    if checkpoint_seconds is not None and not 0 < checkpoint_seconds < float("inf"):
        raise ConfigError(f"--checkpoint-seconds must be a positive number, got {checkpoint_seconds}")
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
    run = Run(path, resume=resume, checkpoint_steps=checkpoint_steps,
              checkpoint_seconds=60.0 if checkpoint_seconds is None else checkpoint_seconds)
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
    if run.write:
        atomic_write_json(path / "recipe.json", rec.card(summary))
    if report and run.write:
        from ..report import build_report

        build_report(path)
    if D.launched_distributed():
        D.teardown()
    return path, summary


__all__ = ["Recipe", "default_run_dir", "recipe", "run_recipe"]
