"""A run directory: config, metrics log, summary, figures, tables and checkpoints.

Layout of ``Run(path)``::

    config.json        the resolved config (+ recipe name, preset, library version)
    metrics.jsonl      one JSON object per logged step: {"step": ..., "series": ..., ...}
    summary.json       final figures, flat keys
    tables.json        named tables (lists of row dicts) shown in the report
    figures/*.png      plots; figures.json keeps their captions and order
    checkpoints/       atomic checkpoints (resume)
    report.html        built by :func:`sparseforge.report.build_report`

Only rank 0 of a distributed run writes; other ranks get a silent Run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import UserError
from .checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from .distributed import is_main_process

T = TypeVar("T")


def _clean(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):  # JSON has no nan/inf
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class Run:
    """Handle on a run directory. Cheap to create; writes nothing until used.

    Args:
        path: the directory (created on first write).
        resume: when True, :meth:`cached` stages and :func:`~sparseforge.engine.fit`
            checkpoints found in the directory are reused instead of recomputed.
        write: force writing on/off (default: only the main process writes).
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, write: bool | None = None) -> None:
        self.path = Path(path)
        self.resume = resume
        self.write = is_main_process() if write is None else write
        self._figures: list[dict[str, str]] = []
        self._tables: dict[str, Any] = {}
        self._stage: str | None = None
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run directory {self.path} is a file; give --out a folder")
        if self.write:
            self.path.mkdir(parents=True, exist_ok=True)
            if resume:
                self._figures = self._read_json("figures.json", [])
                self._tables = self._read_json("tables.json", {})
            else:  # a fresh run starts from a clean slate (stale results must not survive a failed rerun)
                for name in ("metrics.jsonl", "summary.json", "tables.json", "figures.json", "report.html"):
                    if (self.path / name).exists():
                        (self.path / name).unlink()

    def _read_json(self, name: str, default: Any) -> Any:
        p = self.path / name
        if p.exists():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return default
        return default

    # --- config / summary -------------------------------------------------------------
    def save_config(self, config: dict[str, Any]) -> None:
        if self.write:
            atomic_write_json(self.path / "config.json", _clean(config))

    def save_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` (flat keys; nested dicts are flattened with ``/``)."""
        if self.write:
            atomic_write_json(self.path / "summary.json", flatten(_clean(summary)))

    # --- metrics log ----------------------------------------------------------------------
    def log(self, step: int, series: str | None = None, **values: Any) -> None:
        """Append one JSON object to ``metrics.jsonl`` (flushed at once)."""
        if not self.write:
            return
        row: dict[str, Any] = {"step": int(step)}
        if series is not None:
            row["series"] = series
        if self._stage is not None:
            row["stage"] = self._stage
        row.update({k: _clean(v) for k, v in values.items()})
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        rows = []
        for line in p.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
        return rows

    # --- figures and tables -----------------------------------------------------------
    def save_figure(self, fig: Any, name: str, caption: str = "") -> Path | None:
        """Save a matplotlib figure as ``figures/<name>.png`` and close it."""
        import matplotlib.pyplot as plt

        path = self.path / "figures" / f"{name}.png"
        if self.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=110, bbox_inches="tight")
            self._figures = [f for f in self._figures if f["name"] != name]
            self._figures.append({"name": name, "file": f"figures/{name}.png", "caption": caption})
            atomic_write_json(self.path / "figures.json", self._figures)
        plt.close(fig)
        return path if self.write else None

    def save_table(self, name: str, rows: list[dict[str, Any]], caption: str = "") -> None:
        """Store a table (list of row dicts) for the report and in ``tables.json``."""
        if self.write:
            self._tables[name] = {"caption": caption, "rows": _clean(rows)}
            atomic_write_json(self.path / "tables.json", self._tables)

    # --- checkpoints and cached stages ----------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, obj: Any, name: str) -> None:
        if self.write:
            save_checkpoint(obj, self.checkpoint_path(name))

    def load_checkpoint(self, name: str) -> Any | None:
        p = self.checkpoint_path(name)
        return load_checkpoint(p) if p.exists() else None

    def cached(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` once per run directory: with ``resume`` a saved result is reused.

        Use it for the stages of a multi-stage recipe (e.g. "dense", "ticket") so an
        interrupted run restarts at the first unfinished stage. The result must be
        picklable by ``torch.save``.
        """
        p = self.path / "stages" / f"{name}.pt"
        if self.resume and p.exists():
            return load_checkpoint(p)
        if self.resume:
            self._drop_stage_rows(name)  # rows logged by an interrupted attempt of this stage
        outer, self._stage = self._stage, name
        try:
            out = fn()
        finally:
            self._stage = outer
        if self.write:
            save_checkpoint(out, p)
        return out

    def _drop_stage_rows(self, stage: str) -> None:
        p = self.path / "metrics.jsonl"
        if not self.write or not p.exists():
            return
        keep = [r for r in self.read_metrics() if r.get("stage") != stage]
        from .checkpoint import atomic_write_text

        atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in keep))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out
