"""Report builders (see package docstring)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..engine.checkpoint import atomic_write_text
from ..engine.run import flatten

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;font-size:.9rem} table{border-collapse:collapse;margin:.5rem 0;font-size:.88rem}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right} th{background:#f5f5f7} td.k,th.k{text-align:left}
figure{margin:1rem 0} figcaption{color:#555;font-size:.85rem} img{max-width:100%}
.ok{color:#137333}.fail{color:#c5221f} details{margin:.5rem 0} code{background:#f5f5f7;padding:0 .2rem}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v[:12]) + (" …" if len(v) > 12 else "")
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    head = "".join(f'<th class="{"k" if i == 0 else ""}">{html.escape(str(c))}</th>' for i, c in enumerate(cols))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{_fmt(r.get(c))}</td>' for i, c in enumerate(cols)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td class="k">{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>' for k, v in d.items())
    return f"<table><tr><th class='k'>key</th><th>value</th></tr>{rows}</table>"


def _img(data: bytes, caption: str) -> str:
    b64 = base64.b64encode(data).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(caption)}">{cap}</figure>'


def _read_json(p: Path, default: Any) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def _read_metrics(p: Path) -> list[dict[str, Any]]:
    rows = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def curves_png(rows: list[dict[str, Any]], *, max_panels: int = 9) -> bytes | None:
    """One panel per numeric metric vs step, one line per ``series``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k in ("step", "series", "epoch") or k in keys:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    keys = keys[:max_panels]
    if not keys:
        return None
    n = len(keys)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        by: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for r in rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs, ys = by[str(r.get("series", ""))]
                xs.append(r["step"])
                ys.append(v)
        for s, (xs, ys) in sorted(by.items()):
            ax.plot(xs, ys, label=s or None, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if any(by) and len(by) <= 12 and any(by.keys()):
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def build_report(run_dir: str | Path) -> Path:
    """(Re)build ``run_dir/report.html`` from the run's files; returns its path."""
    d = Path(run_dir)
    config = _read_json(d / "config.json", {})
    summary = _read_json(d / "summary.json", {})
    tables = _read_json(d / "tables.json", {})
    figures = _read_json(d / "figures.json", [])
    metrics = _read_metrics(d / "metrics.jsonl")
    name = config.get("recipe", d.name)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(str(name))} — sparseforge</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(str(name))}</h1>",
        f"<p class='meta'>preset <code>{html.escape(str(config.get('preset', '?')))}</code> · seed "
        f"{_fmt(config.get('seed'))} · sparseforge {html.escape(str(config.get('version', '?')))} · "
        f"{html.escape(str(d))} · built {time.strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    if not summary:
        parts.append("<p class='fail'>No summary.json: the run did not finish (rerun with --resume).</p>")
    else:
        parts.append("<h2>Summary</h2>" + _kv_table(summary))
    for tname, t in tables.items():
        cap = t.get("caption", "") if isinstance(t, dict) else ""
        rows = t.get("rows", []) if isinstance(t, dict) else t
        parts.append(f"<h2>{html.escape(tname)}</h2>" + (f"<p>{html.escape(cap)}</p>" if cap else "") + _table(rows))
    if figures:
        parts.append("<h2>Figures</h2>")
        for f in figures:
            p = d / f["file"]
            if p.exists():
                parts.append(_img(p.read_bytes(), f.get("caption") or f["name"]))
    png = curves_png(metrics) if metrics else None
    if png:
        parts.append("<h2>Training curves</h2>" + _img(png, "every logged metric against the step, one line per series"))
    if config:
        parts.append("<h2>Configuration</h2>" + _kv_table(config))
    parts.append("</body></html>")
    out = d / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out


DEMO_ORDER = (
    "magnitude",
    "wgsef",
    "turbo-vbi",
    "grokking-tickets",
    "pruning-at-init",
    "sst-lm",
    "sst-hyperbolic",
    "sparsey",
    "giorom",
    "compare",
)


def write_index(out: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``out/index.html``: one row per run with its headline figures."""
    items = []
    for r in rows:
        status = "<span class='ok'>ok</span>" if r["ok"] else f"<span class='fail'>failed: {html.escape(r.get('error', ''))}</span>"
        link = f"<a href='{html.escape(r['name'])}/report.html'>{html.escape(r['name'])}</a>" if r.get("report") else html.escape(r["name"])
        figs = ", ".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in r.get("headline", {}).items())
        items.append(f"<tr><td class='k'>{link}</td><td>{status}</td><td>{r.get('seconds', 0):.1f}</td><td class='k'>{figs}</td></tr>")
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sparseforge demo</title><style>{CSS}</style></head><body>"
        "<h1>sparseforge demo</h1><p class='meta'>every recipe at its quick preset on built-in data; "
        f"built {time.strftime('%Y-%m-%d %H:%M')}</p>"
        "<table><tr><th class='k'>recipe</th><th>status</th><th>seconds</th><th class='k'>headline figures</th></tr>"
        + "".join(items)
        + "</table></body></html>"
    )
    path = out / "index.html"
    atomic_write_text(path, doc)
    return path


def run_demo(
    out: str | Path = "demo", *, preset: str = "quick", only: list[str] | None = None, threads: int | None = 1
) -> Path:
    """Run every registered recipe at ``preset`` into ``out/<recipe>`` and write ``out/index.html``.

    The quick presets train small models, which run fastest on one CPU thread (and keep their
    timings stable on a busy machine), hence ``threads=1`` by default. A failing recipe is
    recorded in the index (and the demo exits non-zero) but does not stop the others.
    """
    from ..recipes import run_recipe
    from ..registry import RECIPES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = RECIPES.names()
    if only:
        for n in only:
            RECIPES.get(n)  # one-line error for an unknown name
        names = [n for n in names if n in only]
    names.sort(key=lambda n: (DEMO_ORDER.index(n) if n in DEMO_ORDER else len(DEMO_ORDER), n))
    rows = []
    failed = []
    for n in names:
        print(f"[demo] {n} ({preset}) ...", flush=True)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"name": n}
        try:
            path, summary = run_recipe(n, preset=preset, out=out / n, threads=threads)
            rec = RECIPES.get(n)
            flat = flatten(summary)
            keys = list(rec.headline) or [k for k in flat if k != "wall_time_s"][:6]
            row.update(ok=True, report=True, headline={k: flat.get(k) for k in keys})
        except Exception as e:  # noqa: BLE001 - the demo reports every recipe
            traceback.print_exc()
            row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            failed.append(n)
        row["seconds"] = time.perf_counter() - t0
        print(f"[demo] {n}: {'ok' if row['ok'] else 'FAILED'} in {row['seconds']:.1f} s", flush=True)
        rows.append(row)
        write_index(out, rows)
    index = write_index(out, rows)
    if failed:
        raise DemoFailed(f"demo: {len(failed)} recipe(s) failed: {', '.join(failed)}; see {index}")
    return index


class DemoFailed(RuntimeError):
    """One or more recipes of the demo failed (the index still lists every run)."""
