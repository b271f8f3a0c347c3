"""Report builders (see package docstring).

A report leads with the answer: the recipe's claim, the pass/fail mark against its stated goal,
the headline figures next to the paper's (or the reference method's) numbers, and the one plot
that shows it. Then the details (tables that scroll inside their box, the other figures, the
training curves), then the configuration and the full summary, both collapsed.
"""

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
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d1d1f;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.meta{color:#666;font-size:.9rem} code{background:#f5f5f7;padding:0 .2rem}
table{border-collapse:collapse;font-size:.88rem}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right;white-space:nowrap} th{background:#f5f5f7;position:sticky;top:0}
td.k,th.k{text-align:left} td.wrap{white-space:normal;text-align:left}
.scroll{overflow:auto;width:fit-content;max-width:100%;max-height:34rem;margin:.5rem 0}
.scroll table{margin:0}
figure{margin:1rem 0} figcaption{color:#555;font-size:.85rem} img{max-width:100%;height:auto}
.lead{background:#fafafa;border:1px solid #e5e5e5;border-radius:8px;padding:.8rem 1.2rem;margin:1rem 0}
.claim{font-size:1.02rem;margin:.3rem 0 .6rem}
.mark{display:inline-block;border-radius:4px;padding:.05rem .5rem;font-weight:600;font-size:.9rem}
.pass{background:#e6f4ea;color:#137333}.fail{background:#fce8e6;color:#c5221f}.na{background:#eee;color:#555}
.ok{color:#137333}.bad{color:#c5221f}
details{margin:.8rem 0} summary{cursor:pointer;font-weight:600}
.leadimg{width:100%;max-width:1100px;border:1px solid #eee;border-radius:4px;background:#fff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem;margin-top:1rem}
.card{border:1px solid #ddd;border-radius:8px;padding:.7rem .9rem;background:#fff;display:flex;flex-direction:column;gap:.4rem;min-width:0}
.card h3{margin:0;font-size:1.05rem;display:flex;justify-content:space-between;gap:.5rem;align-items:center}
.card .thumb{width:100%;height:170px;object-fit:contain;background:#fafafa;border:1px solid #eee;border-radius:4px}
.card .noimg{height:170px;display:flex;align-items:center;justify-content:center;color:#999;background:#fafafa;border:1px solid #eee;border-radius:4px}
.card p{margin:0;font-size:.85rem;color:#333}
.card .scroll{max-height:none;width:100%}
.card table{width:100%} .card td,.card th{white-space:normal;overflow-wrap:break-word} .card td.k{overflow-wrap:anywhere} .card th{white-space:nowrap}
"""

_MARK = {True: ("pass", "✓ goal met"), False: ("fail", "✗ goal not met"), None: ("na", "– not determined")}


def _mark(goal: dict[str, Any] | None) -> tuple[str, str]:
    goal = goal or {}
    if not goal.get("declared") and not goal.get("text"):
        return "na", "no goal declared"
    return _MARK[goal.get("passed")]


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


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A table in a box that scrolls (wide and long tables never overflow the page)."""
    if not rows:
        return "<p>(empty)</p>"
    cols: list[str] = [c for c in (columns or []) if isinstance(c, str)]
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    head = "".join(f'<th class="{"k" if i == 0 else ""}">{_esc(c)}</th>' for i, c in enumerate(cols))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{_fmt(r.get(c))}</td>' for i, c in enumerate(cols)) + "</tr>"
        for r in rows
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td class="k">{_esc(k)}</td><td>{_fmt(v)}</td></tr>' for k, v in d.items())
    return f"<div class='scroll'><table><thead><tr><th class='k'>key</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></div>"


def _img(data: bytes, caption: str, *, alt: str | None = None) -> str:
    b64 = base64.b64encode(data).decode()
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{_esc(alt or caption)}">{cap}</figure>'


def _read_json(p: Path, default: Any) -> Any:
    try:
        out = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return default
    return out if isinstance(out, type(default)) else default


def _read_metrics(p: Path) -> list[dict[str, Any]]:
    rows = []
    if p.exists():
        for line in p.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
                rows.append(r)
    return rows


# --- training curves -------------------------------------------------------------------------

_LOGGY = ("ppl", "perplex", "loss", "nll", "bpc")
_SKIP_KEYS = ("step", "series", "epoch", "stage")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def curve_scale(key: str, series: dict[str, tuple[list[float], list[float]]]) -> dict[str, Any]:
    """How to scale one metric's panel: ``{"log": bool, "ylim": (lo, hi) | None, "note": str}``.

    Perplexity- and loss-like metrics that span more than 3x are drawn on a log scale. When the
    first evaluation of each series (an untrained model's value) is still far from the rest on
    that scale (the later values span less than half the range), the y-range is fitted to the
    later evaluations, so the curves that matter are not a flat line.
    """
    ys = [y for _, vs in series.values() for y in vs]
    if not ys:
        return {"log": False, "ylim": None, "note": ""}
    lo, hi = min(ys), max(ys)
    low = key.lower()
    log = any(t in low for t in _LOGGY) and lo > 0 and hi / lo > 3
    tf = math.log if log else (lambda v: v)
    notes = ["log scale"] if log else []
    rest = [y for _, vs in series.values() for y in vs[1:]]
    ylim = None
    if len(rest) >= 2 and hi > lo:
        rlo, rhi = min(rest), max(rest)
        if tf(rhi) - tf(rlo) < 0.5 * (tf(hi) - tf(lo)) and (rlo > lo or rhi < hi):
            if log:
                pad = math.exp(0.08 * max(math.log(rhi / rlo), 1e-3))
                ylim = (rlo / pad, rhi * pad)
            else:
                pad = 0.08 * max(rhi - rlo, 1e-12 + 1e-6 * abs(rhi))
                ylim = (rlo - pad, rhi + pad)
            first = [vs[0] for _, vs in series.values() if vs]
            notes.append(f"first evaluation off-scale: {_fmt(max(first, key=lambda v: abs(tf(v) - tf(rhi))))}")
    return {"log": log, "ylim": ylim, "note": "; ".join(notes)}


def curves_png(rows: list[dict[str, Any]], *, max_panels: int = 9) -> bytes | None:
    """One panel per numeric metric vs step (shared step axis), one line per ``series``.

    Accuracy-like panels share their y-range; perplexity/loss panels spanning more than 3x are
    on a log scale; one legend for all panels sits outside the plots.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k in _SKIP_KEYS or k in keys:
                continue
            if _is_num(v):
                keys.append(k)
    keys = keys[:max_panels]
    if not keys:
        return None
    all_series = sorted({str(r.get("series", "")) for r in rows})
    cmap = plt.get_cmap("tab10" if len(all_series) <= 10 else "tab20")
    color = {s: cmap(i % cmap.N) for i, s in enumerate(all_series)}
    n = len(keys)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 2.9 * nrow), squeeze=False, sharex=True)
    acc_axes, acc_vals = [], []
    for ax, key in zip(axes.flat, keys):
        by: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for r in rows:
            v = r.get(key)
            if _is_num(v):
                xs, ys = by[str(r.get("series", ""))]
                xs.append(r["step"])
                ys.append(v)
        for s, (xs, ys) in sorted(by.items()):
            ax.plot(xs, ys, color=color[s], lw=1.2, marker="o" if len(xs) == 1 else None, ms=3, label=s or key)
        sc = curve_scale(key, by)
        if sc["ylim"] is not None:
            ax.set_ylim(*sc["ylim"])
        if sc["log"]:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(  # label the 2s and 5s of each decade only
                lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
            ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.set_title(key + (f"  ({sc['note']})" if sc["note"] else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        if key.lower().endswith("acc") or key.lower().endswith("accuracy"):
            acc_axes.append(ax)
            acc_vals += [y for _, vs in by.values() for y in vs]
    if len(acc_axes) > 1 and acc_vals and min(acc_vals) >= 0 and max(acc_vals) <= 1:  # compared: same y-range
        lo = max(0.0, min(acc_vals) - 0.03)
        for ax in acc_axes:
            ax.set_ylim(lo, 1.01)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    named = [s for s in all_series if s]
    if named:  # one legend, outside the data (right of the panels)
        handles = [plt.Line2D([], [], color=color[s], lw=1.5) for s in named]
        fig.legend(handles, named, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
                   ncol=1 if len(named) <= 20 else 2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# --- what a report leads with -----------------------------------------------------------------


def recipe_card(run_dir: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe's claim, headline keys, reference numbers and goal result for a run directory.

    From the registered recipe's declaration when it is registered, else from ``recipe.json``
    (written by :func:`~sparseforge.recipes.run_recipe`), else generic fallbacks (the first
    summary keys, no goal).
    """
    saved = _read_json(run_dir / "recipe.json", {})
    config = _read_json(run_dir / "config.json", {})
    name = config.get("recipe") or saved.get("name") or run_dir.name
    card: dict[str, Any] = {}
    try:  # the registered recipe's current declaration (the goal re-checked on this summary)
        from ..registry import RECIPES

        if str(name) in RECIPES:
            card = RECIPES.get(str(name)).card(summary if summary else None)
    except Exception:  # noqa: BLE001 - a recipe module that fails to import still gets a report
        card = {}
    card = card or saved
    card.setdefault("name", name)
    card.setdefault("claim", card.get("help", ""))
    card.setdefault("headline", [])
    card.setdefault("paper", {})
    card.setdefault("paper_note", "")
    card.setdefault("key_figure", None)
    card.setdefault("goal", {"text": "", "declared": False, "passed": None, "detail": ""})
    flat = flatten(summary or {})
    keys = [k for k in card["headline"] if k in flat] or [k for k in flat if k != "wall_time_s"][:6]
    card["headline_values"] = {k: flat.get(k) for k in keys}
    return card


def _headline_table(card: dict[str, Any]) -> str:
    paper = card.get("paper") or {}
    has_ref = any(k in paper for k in card["headline_values"])
    head = "<tr><th class='k'>figure</th><th>measured</th>" + ("<th>paper / reference</th>" if has_ref else "") + "</tr>"
    body = ""
    for k, v in card["headline_values"].items():
        ref = f"<td>{_fmt(paper.get(k))}</td>" if has_ref else ""
        body += f"<tr><td class='k'>{_esc(k)}</td><td>{_fmt(v)}</td>{ref}</tr>"
    extra = [(k, v) for k, v in paper.items() if k not in card["headline_values"]]
    for k, v in extra:  # reference numbers for figures not in the headline
        body += f"<tr><td class='k'>{_esc(k)}</td><td>—</td><td>{_fmt(v)}</td></tr>"
    note = f"<p class='meta'>{_esc(card['paper_note'])}</p>" if card.get("paper_note") else ""
    return f"<div class='scroll'><table><thead>{head}</thead><tbody>{body}</tbody></table></div>{note}"


def _goal_line(goal: dict[str, Any]) -> str:
    if not goal.get("declared") and not goal.get("text"):
        return ""
    cls, label = _mark(goal)
    text = f" <b>Goal:</b> {_esc(goal['text'])}" if goal.get("text") else ""
    detail = f" <span class='meta'>({_esc(goal['detail'])})</span>" if goal.get("detail") else ""
    return f"<p><span class='mark {cls}'>{label}</span>{text}{detail}</p>"


def _figure_order(figures: list[dict[str, Any]], key: str | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    figs = [f for f in figures if isinstance(f, dict) and "file" in f and "name" in f]
    if not figs:
        return None, []
    first = next((f for f in figs if f["name"] == key), None) or figs[0]
    return first, [f for f in figs if f is not first]


def build_report(run_dir: str | Path) -> Path:
    """(Re)build ``run_dir/report.html`` from the run's files; returns its path."""
    d = Path(run_dir)
    config = _read_json(d / "config.json", {})
    summary = _read_json(d / "summary.json", {})
    tables = _read_json(d / "tables.json", {})
    figures = _read_json(d / "figures.json", [])
    metrics = _read_metrics(d / "metrics.jsonl")
    card = recipe_card(d, summary)
    name = str(config.get("recipe", card["name"]))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(name)} — sparseforge</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(name)}</h1>",
        f"<p class='meta'>preset <code>{_esc(config.get('preset', '?'))}</code> · seed "
        f"{_fmt(config.get('seed'))} · sparseforge {_esc(config.get('version', '?'))} · "
        f"{_esc(d)} · built {time.strftime('%Y-%m-%d %H:%M')}</p>",
    ]
    lead = []
    if card.get("claim"):
        lead.append(f"<p class='claim'><b>Claim.</b> {_esc(card['claim'])}</p>")
    if not summary:
        lead.append("<p><span class='mark fail'>unfinished</span> No summary.json: the run did not finish "
                    "(rerun with --resume).</p>")
    else:
        lead.append(_goal_line(card["goal"]))
        lead.append(_headline_table(card))
    key_fig, other_figs = _figure_order(figures, card.get("key_figure"))
    curves = curves_png(metrics) if metrics else None
    if key_fig is not None and (d / key_fig["file"]).exists():
        lead.append(_img((d / key_fig["file"]).read_bytes(), key_fig.get("caption") or key_fig["name"],
                         alt=f"key figure: {key_fig['name']}"))
    elif curves is not None:
        lead.append(_img(curves, "every logged metric against the step, one line per series", alt="training curves"))
        curves = None
    parts.append("<section class='lead'>" + "".join(lead) + "</section>")
    details = []
    for tname, t in tables.items():
        cap = t.get("caption", "") if isinstance(t, dict) else ""
        rows = t.get("rows", []) if isinstance(t, dict) else t
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        cols = t.get("columns") if isinstance(t, dict) and isinstance(t.get("columns"), list) else None
        details.append(f"<h3>{_esc(tname)}</h3>" + (f"<p>{_esc(cap)}</p>" if cap else "") + _table(rows, cols))
    for f in other_figs:
        p = d / f["file"]
        if p.exists():
            details.append(_img(p.read_bytes(), f.get("caption") or f["name"], alt=f["name"]))
    if curves is not None:
        details.append("<h3>Training curves</h3>" + _img(curves, "every logged metric against the step, one line per "
                                                         "series (log scale for perplexity/loss spanning > 3x)",
                                                         alt="training curves"))
    if details:
        parts.append("<h2>Details</h2>" + "".join(details))
    if config:
        parts.append(f"<details><summary>Configuration ({len(config)} keys)</summary>{_kv_table(config)}</details>")
    if summary:
        parts.append(f"<details><summary>Full summary ({len(summary)} keys)</summary>{_kv_table(summary)}</details>")
    parts.append("</body></html>")
    out = d / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out


# --- the demo index (a gallery) ------------------------------------------------------------------

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
LEAD_RECIPE = "compare"  # the demo index opens with this recipe's key plot (the leaderboard's Pareto plot)


def _thumbnail(src: Path | bytes, dst: Path, *, width: int = 420) -> bool:
    """A small PNG of ``src`` (a file or PNG bytes; matplotlib only, no PIL needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import image as mpimg

    def source() -> Any:
        return io.BytesIO(src) if isinstance(src, bytes) else str(src)

    try:
        w = mpimg.imread(source()).shape[1]
        dst.parent.mkdir(parents=True, exist_ok=True)
        mpimg.thumbnail(source(), str(dst), scale=min(1.0, width / max(w, 1)))
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def index_entry(out: Path, name: str, *, ok: bool, seconds: float = 0.0, error: str = "") -> dict[str, Any]:
    """One card of the demo index, from the run directory ``out/name`` (claim, headline, goal, thumbnail)."""
    d = out / name
    row: dict[str, Any] = {"name": name, "ok": ok, "seconds": seconds, "error": error,
                           "report": (d / "report.html").exists()}
    summary = _read_json(d / "summary.json", {})
    card = recipe_card(d, summary) if d.exists() else {}
    if card:
        row.update(claim=card.get("claim", ""), goal=card.get("goal", {}), paper=card.get("paper", {}),
                   headline=card.get("headline_values", {}))
        key_fig, _ = _figure_order(_read_json(d / "figures.json", []), card.get("key_figure"))
        thumb = out / "thumbs" / f"{name}.png"
        src: Path | bytes | None = None
        if key_fig is not None and (d / key_fig["file"]).exists():
            src, alt = d / key_fig["file"], f"{name}: {key_fig['name']}"
        else:  # no saved figure: the training curves
            metrics = _read_metrics(d / "metrics.jsonl")
            src, alt = (curves_png(metrics) if metrics else None), f"{name}: training curves"
        if src is not None and _thumbnail(src, thumb):
            row["thumb"] = f"thumbs/{name}.png"
            row["thumb_alt"] = alt
            if name == LEAD_RECIPE and _thumbnail(src, out / "thumbs" / f"{name}_lead.png", width=1100):
                row["lead_image"] = f"thumbs/{name}_lead.png"
    return row


def write_index(out: Path, rows: list[dict[str, Any]], *, preset: str = "quick") -> Path:
    """Write ``out/index.html``: a gallery, one card per run (goal mark, key plot, headline figures)."""
    cards = []
    n_pass = sum(1 for r in rows if (r.get("goal") or {}).get("passed") is True)
    for r in rows:
        name = _esc(r["name"])
        link = f"{name}/report.html"
        title = f"<a href='{link}'>{name}</a>" if r.get("report") else name
        if not r["ok"]:
            mark = "<span class='mark fail'>run failed</span>"
        else:
            cls, label = _mark(r.get("goal"))
            mark = f"<span class='mark {cls}'>{label}</span>"
        if r.get("thumb"):
            img = f"<img class='thumb' src='{_esc(r['thumb'])}' alt='{_esc(r.get('thumb_alt', r['name']))}'>"
            img = f"<a href='{link}'>{img}</a>" if r.get("report") else img
        else:
            img = "<div class='noimg'>no figure</div>"
        claim = str(r.get("claim", ""))
        claim = claim if len(claim) <= 240 else claim[:237].rsplit(" ", 1)[0] + " …"
        paper = r.get("paper") or {}
        head = dict(list((r.get("headline", {}) or {}).items())[:4])  # a card shows the first four
        has_ref = any(k in paper for k in head)
        trs = "".join(
            f"<tr><td class='k'>{_esc(k)}</td><td>{_fmt(v)}</td>" + (f"<td>{_fmt(paper.get(k))}</td>" if has_ref else "")
            + "</tr>"
            for k, v in head.items()
        )
        th = "<tr><th class='k'>figure</th><th>measured</th>" + ("<th>paper</th>" if has_ref else "") + "</tr>"
        table = f"<div class='scroll'><table><thead>{th}</thead><tbody>{trs}</tbody></table></div>" if trs else ""
        goal = r.get("goal") or {}
        goal_p = f"<p class='meta'>goal: {_esc(goal['text'])}</p>" if goal.get("text") else ""
        err = f"<p class='bad'>failed: {_esc(r.get('error', ''))}</p>" if not r["ok"] else ""
        cards.append(
            f"<article class='card'><h3>{title}{mark}</h3>{img}"
            + (f"<p>{_esc(claim)}</p>" if claim else "")
            + goal_p + table + err
            + f"<p class='meta'>{float(r.get('seconds', 0) or 0):.1f} s</p></article>"
        )
    lead = _index_lead(next((r for r in rows if r["name"] == LEAD_RECIPE and r.get("ok")), None))
    doc = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>sparseforge demo</title><style>{CSS}</style></head><body>"
        f"<h1>sparseforge demo</h1><p class='meta'>every recipe at its <code>{_esc(preset)}</code> preset on "
        f"built-in data · {len(rows)} recipes · goals met: {n_pass} of {len(rows)} · "
        f"{sum(1 for r in rows if not r['ok'])} failed · "
        f"built {time.strftime('%Y-%m-%d %H:%M')}</p>"
        + lead + "<div class='grid'>" + "".join(cards) + "</div></body></html>"
    )
    path = out / "index.html"
    atomic_write_text(path, doc)
    return path


def _index_lead(r: dict[str, Any] | None) -> str:
    """The index's opening section: the lead recipe's key plot at full width, its claim, goal and figures."""
    if not r:
        return ""
    name = _esc(r["name"])
    link = f"{name}/report.html"
    cls, label = _mark(r.get("goal"))
    img = r.get("lead_image") or r.get("thumb")
    pic = f"<img class='leadimg' src='{_esc(img)}' alt='{_esc(r.get('thumb_alt', r['name']))}'>" if img else ""
    if pic and r.get("report"):
        pic = f"<a href='{link}'>{pic}</a>"
    title = f"<a href='{link}'>{name}</a>" if r.get("report") else name
    goal = r.get("goal") or {}
    items = "".join(f"<li><code>{_esc(k)}</code>: {_fmt(v)}</li>" for k, v in (r.get("headline") or {}).items())
    return (
        f"<section class='lead'><h2>{title} — the leaderboard"
        f"<span class='mark {cls}'>{label}</span></h2>"
        + (f"<p>{_esc(r.get('claim', ''))}</p>" if r.get("claim") else "")
        + (f"<p class='meta'>goal: {_esc(goal['text'])}</p>" if goal.get("text") else "")
        + pic + (f"<ul class='meta'>{items}</ul>" if items else "") + "</section>"
    )


def run_demo(
    out: str | Path = "demo",
    *,
    preset: str = "quick",
    only: list[str] | None = None,
    threads: int | None = 1,
    debug: bool = False,
) -> Path:
    """Run every registered recipe at ``preset`` into ``out/<recipe>`` and write ``out/index.html``.

    The quick presets train small models, which run fastest on one CPU thread (and keep their
    timings stable on a busy machine), hence ``threads=1`` by default. A failing recipe is
    recorded in the index (and the demo exits non-zero) but does not stop the others; its error
    is one line (``debug=True``: the traceback too).
    """
    from ..engine.run import ensure_dir
    from ..errors import one_line
    from ..recipes import run_recipe
    from ..registry import RECIPES

    out = ensure_dir(out, what="the demo folder", option="demo --out")
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
        ok, err = True, ""
        try:
            run_recipe(n, preset=preset, out=out / n, threads=threads)
        except Exception as e:  # noqa: BLE001 - the demo reports every recipe
            if debug:
                traceback.print_exc()
            ok, err = False, f"{type(e).__name__}: {one_line(e)}"
            print(f"[demo] {n}: error: {err}", flush=True)
            failed.append(n)
        secs = time.perf_counter() - t0
        print(f"[demo] {n}: {'ok' if ok else 'FAILED'} in {secs:.1f} s", flush=True)
        rows.append(index_entry(out, n, ok=ok, seconds=secs, error=err))
        write_index(out, rows, preset=preset)
    index = write_index(out, rows, preset=preset)
    if failed:
        raise DemoFailed(f"demo: {len(failed)} recipe(s) failed: {', '.join(failed)}; see {index}")
    return index


class DemoFailed(RuntimeError):
    """One or more recipes of the demo failed (the index still lists every run)."""
