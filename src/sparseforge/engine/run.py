"""A run directory: config, metrics log, summary, figures, tables and checkpoints.

Layout of ``Run(path)``::

    config.json        the resolved config (+ recipe name, preset, library version)
    metrics.jsonl      one JSON object per logged step: {"step": ..., "series": ..., ...}
    summary.json       final figures, flat keys
    tables.json        named tables (lists of row dicts) shown in the report
    figures/*.png      plots; figures.json keeps their captions and order
    checkpoints/       atomic checkpoints (resume); checkpoints/progress/<stage>/fit-<k>.pt are the
                       mid-stage checkpoints of a running stage (deleted once the stage is done)
    stages/<name>.pt   the result of each finished :meth:`Run.cached` stage
    report.html        built by :func:`sparseforge.report.build_report`

Only rank 0 of a distributed run writes; other ranks get a silent Run.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CheckpointError, PathError, UserError, one_line
from .checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
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


@dataclass
class _Stage:
    """Book-keeping of one running :meth:`Run.cached` stage (mid-stage checkpoints, replayed rows)."""

    name: str
    key: str  # nested stages: "outer/inner"
    fits: int = 0  # fit() calls started in this stage so far
    rows: int = 0  # rows logged by this stage so far (replayed ones included)
    on_disk: int = 0  # rows of this stage already in metrics.jsonl (a replay does not write them again)
    replay: bool = False  # resuming: fits that had finished are restored, not retrained


_ACTIVE: list[Run] = []  # runs inside a cached stage, innermost last (fit() finds its stage here)


def active_run() -> Run | None:
    """The innermost :class:`Run` currently executing a :meth:`Run.cached` stage, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


def _safe_name(name: str) -> str:
    return "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name) or "_"


class Run:
    """Handle on a run directory. Cheap to create; writes nothing until used.

    Args:
        path: the directory (created on first write).
        resume: when True, :meth:`cached` stages and :func:`~sparseforge.engine.fit`
            checkpoints found in the directory are reused instead of recomputed.
        write: force writing on/off (default: only the main process writes).
        checkpoint_steps: mid-stage checkpoints of resumable :func:`~sparseforge.engine.fit` calls
            every this many optimizer steps (None: by time only).
        checkpoint_seconds: ... and at least every this many seconds of training (None: by steps
            only; default 60 s, about a minute of work lost at most).

    Raises:
        PathError: ``path`` is a file, lies below a file, or cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        resume: bool = False,
        write: bool | None = None,
        checkpoint_steps: int | None = None,
        checkpoint_seconds: float | None = 60.0,
    ) -> None:
        if isinstance(path, str) and path.strip() == "":
            raise PathError("--out is an empty path; give the run directory a folder name")
        self.path = Path(path)
        self.resume = resume
        self.write = is_main_process() if write is None else write
        if checkpoint_steps is not None and checkpoint_steps < 1:
            raise UserError(f"checkpoint_steps must be >= 1, got {checkpoint_steps}")
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            raise UserError(f"checkpoint_seconds must be > 0, got {checkpoint_seconds}")
        self.checkpoint_steps = checkpoint_steps
        self.checkpoint_seconds = checkpoint_seconds
        self._figures: list[dict[str, str]] = []
        self._tables: dict[str, Any] = {}
        self._stages: list[_Stage] = []
        if self.path.exists() and not self.path.is_dir():
            raise PathError(f"run directory {self.path} is a file; give --out a folder")
        if self.write:
            ensure_dir(self.path, what="the run directory", option="--out")
            if resume:
                self._figures = self._read_json("figures.json", [])
                self._tables = self._read_json("tables.json", {})
            else:  # a fresh run starts from a clean slate (stale results must not survive a failed rerun)
                for name in ("metrics.jsonl", "summary.json", "tables.json", "figures.json", "report.html",
                             "recipe.json"):
                    if (self.path / name).exists():
                        (self.path / name).unlink()
                if self.progress_root.exists():
                    shutil.rmtree(self.progress_root, ignore_errors=True)

    @property
    def _stage(self) -> str | None:
        return self._stages[-1].name if self._stages else None

    def _read_json(self, name: str, default: Any) -> Any:
        p = self.path / name
        if p.exists():
            try:
                return json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
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
        """Append one JSON object to ``metrics.jsonl`` (flushed at once).

        Inside a stage that is being resumed, rows the interrupted attempt had already written
        (up to its last mid-stage checkpoint) are not written twice.
        """
        if not self.write:
            return
        if self._stages:
            st = self._stages[-1]
            st.rows += 1
            if st.rows <= st.on_disk:
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
        for line in p.read_text(errors="replace").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                if isinstance(row, dict):
                    rows.append(row)
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
            columns: list[str] = []
            for r in rows:
                columns += [str(k) for k in r if str(k) not in columns]
            # the column order is kept apart: the JSON file's rows have sorted keys
            self._tables[name] = {"caption": caption, "columns": columns, "rows": _clean(rows)}
            atomic_write_json(self.path / "tables.json", self._tables)

    # --- checkpoints and cached stages ----------------------------------------------------
    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, obj: Any, name: str) -> None:
        if self.write:
            save_checkpoint(obj, self.checkpoint_path(name))

    def load_checkpoint(self, name: str) -> Any | None:
        """The checkpoint ``name``, or None when there is none.

        Raises:
            CheckpointError: the file exists but cannot be read (truncated, corrupt, not a checkpoint).
        """
        p = self.checkpoint_path(name)
        return _load(p, f"checkpoint {name!r}") if p.exists() else None

    @property
    def progress_root(self) -> Path:
        """Folder of the mid-stage checkpoints (``checkpoints/progress/<stage>/fit-<k>.pt``)."""
        return self.path / "checkpoints" / "progress"

    def progress_dir(self, stage: str) -> Path:
        return self.progress_root / _safe_name(stage)

    def cached(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` once per run directory: with ``resume`` a saved result is reused.

        Use it for the stages of a multi-stage recipe (e.g. "dense", "ticket") so an
        interrupted run restarts at the first unfinished stage. The result must be
        picklable by ``torch.save``.

        Inside a stage, every :func:`~sparseforge.engine.fit` call that declares its loop state
        (``stateful=...``) writes mid-stage checkpoints; resuming an interrupted stage replays
        its code, restores the fits that had finished from their final checkpoints instead of
        retraining them, and continues the interrupted fit from its last checkpoint.

        Raises:
            CheckpointError: the saved result of the stage cannot be read back.
        """
        p = self.path / "stages" / f"{name}.pt"
        if self.resume and p.exists():
            return _load(p, f"stage {name!r}")
        key = "/".join([s.key for s in self._stages[-1:]] + [name])
        st = _Stage(name=name, key=key)
        prog = self.progress_dir(key)
        if self.resume and self.write:
            if prog.exists():  # mid-stage checkpoints: keep the stage's rows, a replay skips them
                st.replay = True
                st.on_disk = self._rewrite_stage_rows(name, keep=None)
            else:
                self._drop_stage_rows(name)  # rows logged by an interrupted attempt of this stage
        elif self.resume:
            st.replay = prog.exists()
        elif self.write and prog.exists():
            shutil.rmtree(prog, ignore_errors=True)
        self._stages.append(st)
        _ACTIVE.append(self)
        try:
            out = fn()
        finally:
            self._stages.pop()
            _ACTIVE.pop()
        if self.write:
            save_checkpoint(out, p)
            if prog.exists():
                shutil.rmtree(prog, ignore_errors=True)
            for d in (prog, *prog.parents):  # empty parent folders go too, up to checkpoints/progress
                if d == self.progress_root.parent:
                    break
                if not d.exists():
                    continue
                try:
                    d.rmdir()
                except OSError:
                    break
        return out

    # --- used by fit(): mid-stage checkpoints ---------------------------------------------
    def _next_fit_slot(self) -> tuple[_Stage, Path] | None:
        """The current stage and the checkpoint path of the fit() call starting now (None outside a stage)."""
        if not self._stages:
            return None
        st = self._stages[-1]
        k = st.fits
        st.fits += 1
        return st, self.progress_dir(st.key) / f"fit-{k}.pt"

    def _go_live(self, st: _Stage, rows: int) -> None:
        """Training resumes for real at a point where ``rows`` rows of the stage had been logged."""
        st.rows = rows
        if st.replay:
            if self.write:
                self._rewrite_stage_rows(st.name, keep=rows)
            st.on_disk = rows
            st.replay = False

    def _rewrite_stage_rows(self, stage: str, *, keep: int | None) -> int:
        """Rewrite metrics.jsonl keeping the first ``keep`` rows of ``stage`` (all when None); returns their count."""
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return 0
        out, n = [], 0
        for r in self.read_metrics():
            if r.get("stage") == stage:
                if keep is not None and n >= keep:
                    continue
                n += 1
            out.append(r)
        atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in out))
        return n

    def _drop_stage_rows(self, stage: str) -> None:
        if self.write and (self.path / "metrics.jsonl").exists():
            self._rewrite_stage_rows(stage, keep=0)


def ensure_dir(path: str | os.PathLike, *, what: str = "the folder", option: str = "--out") -> Path:
    """Create ``path`` (and parents) or raise a one-line :class:`PathError` naming ``option``.

    Also checks that files can be created in it (a read-only folder fails here, not mid-run).
    """
    if isinstance(path, str) and path.strip() == "":
        raise PathError(f"{option} is an empty path; give it a folder name")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file; give {option} a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if isinstance(e, NotADirectoryError) or e.errno == errno.ENOTDIR:
            why = "a part of that path is a file"
        elif isinstance(e, FileExistsError) or e.errno == errno.EEXIST:
            why = "a file is in the way"
        else:
            why = e.strerror or type(e).__name__
        raise PathError(f"cannot create {what} {path}: {why}; give {option} a writable folder") from None
    return path


def _load(p: Path, what: str) -> Any:
    """load_checkpoint with a one-line CheckpointError for a file that is not a readable checkpoint."""
    try:
        if p.stat().st_size == 0:
            raise EOFError("empty file")
        return load_checkpoint(p)
    except Exception as e:  # noqa: BLE001 - unpickling garbage fails in many ways (MemoryError included)
        reason = one_line(e).replace("\n", " ")[:160]
        raise CheckpointError(
            f"--resume: {what} in {p} cannot be read ({type(e).__name__}: {reason}); "
            "delete that file to recompute it, or rerun without --resume"
        ) from None


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
