"""Run recipe configurations in parallel processes (one thread each) and collect their summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def collect(dirs: list[str | Path]) -> dict[str, dict]:
    """``{run folder name: summary}`` of finished runs kept by ``run_recipes(keep=...)`` (folders without one skipped)."""
    out = {}
    for d in map(Path, dirs):
        for sub in sorted(p for p in d.iterdir() if (p / "summary.json").exists()):
            out[sub.name] = json.loads((sub / "summary.json").read_text())
    return out


def run_recipes(jobs: list[tuple[str, str, list[str]]], *, processes: int = 2, preset: str = "paper",
                timeout: float = 4 * 3600, keep: str | Path | None = None) -> dict[str, dict]:
    """``jobs``: (tag, recipe, ["key=value", ...]); returns ``{tag: summary}`` (``{"error": ...}`` on failure).

    ``keep``: a folder that holds the run directories (``keep/<tag>``) instead of a temporary one, so a
    finished run is reused (``--resume``) and interrupted ones continue when the benchmark is restarted.
    """
    out: dict[str, dict] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SPARSEFORGE_NO_PROGRESS="1", CI="1")
    with (tempfile.TemporaryDirectory() if keep is None else _Kept(keep)) as tmp:
        pending = list(jobs)
        running: list[tuple[str, subprocess.Popen, Path, float]] = []
        while pending or running:
            while pending and len(running) < processes:
                tag, name, sets = pending.pop(0)
                d = Path(tmp) / tag
                cmd = [sys.executable, "-m", "sparseforge.cli", "run", name, "--preset", preset, "--out", str(d)]
                if keep is not None and (d / "config.json").exists():
                    cmd.append("--resume")
                for kv in [*sets, "threads=1"]:
                    cmd += ["--set", kv]
                log = open(Path(tmp) / f"{tag}.stderr.log", "w")  # a file, not a pipe: a chatty child never blocks
                running.append((tag, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True),
                                d, time.perf_counter()))
                log.close()
            time.sleep(1.0)
            for item in list(running):
                tag, proc, d, t0 = item
                if proc.poll() is None and time.perf_counter() - t0 < timeout:
                    continue
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err = (Path(tmp) / f"{tag}.stderr.log").read_text(errors="replace")
                running.remove(item)
                if proc.returncode != 0:  # a failed resume leaves the old summary: never report it as this run's
                    last = (err.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                    out[tag] = {"error": last}
                    continue
                try:
                    out[tag] = json.loads((d / "summary.json").read_text())
                    out[tag]["wall_s"] = round(time.perf_counter() - t0, 1)
                except (OSError, json.JSONDecodeError):
                    out[tag] = {"error": (err.strip().splitlines() or ["no summary"])[-1]}
    return out


class _Kept:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        return None
