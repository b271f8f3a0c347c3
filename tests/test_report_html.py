"""Reports and the demo index, checked as a reader's browser would.

A demo of tiny recipes registered here (one meets its goal, one misses it, one crashes) plus
one real recipe at its smoke preset: every generated page must parse (html5lib), every image
must decode, every local link must resolve; the report must lead with the claim, the goal mark,
the headline figures next to the paper's and the key plot, and end with the collapsed summary.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import html5lib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sparseforge.config import RecipeConfig  # noqa: E402
from sparseforge.recipes import recipe  # noqa: E402
from sparseforge.registry import RECIPES  # noqa: E402
from sparseforge.report.check import check_html, check_tree, decode_png  # noqa: E402
from sparseforge.report.html import DemoFailed, run_demo  # noqa: E402


@dataclass
class FakeConfig(RecipeConfig):
    acc: float = 0.9
    n: int = 12


def _fake(cfg: FakeConfig, run) -> dict:
    for s in range(cfg.n):
        run.log(s * 10, series="dense", val_ppl=230.0 if s == 0 else 12.0 - 0.2 * s, acc=min(1.0, 0.1 * s))
        run.log(s * 10, series="sparse", val_ppl=240.0 if s == 0 else 13.0 - 0.2 * s, acc=min(1.0, 0.08 * s))
    fig, ax = plt.subplots()
    ax.plot(range(10), [x * x for x in range(10)])
    run.save_figure(fig, "other", caption="another figure")
    fig, ax = plt.subplots()
    ax.bar([0, 1], [cfg.acc, 0.5])
    run.save_figure(fig, "key", caption="the key plot")
    run.save_table("wide", [{f"column_{i}_with_a_long_name": i * 1.5 for i in range(30)} for _ in range(3)],
                   caption="a table wider than the page")
    return {"acc": cfg.acc, "speedup": 2.0 * cfg.acc, "nested": {"x": 1}, **{f"extra_{i}": i for i in range(40)}}


PRESETS = {"smoke": {}, "quick": {}, "paper": {}}
FAKES = ("zz-fake-pass", "zz-fake-fail", "zz-fake-broken")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    def broken(cfg, run):
        raise RuntimeError("this recipe crashes")

    def failing(cfg, run):
        out = _fake(cfg, run)
        out["acc"] = 0.2
        return out

    recipe("zz-fake-pass", config=FakeConfig, presets=PRESETS, help="a fake that meets its goal",
           claim="A fake method reaches 0.8 accuracy with twice the speed.", headline=("acc", "speedup"),
           goal="acc >= 0.8 and speedup >= 1.5", key_figure="key", paper={"acc": 0.85, "speedup": 2.1},
           paper_note="Table 1 of the fake paper")(_fake)
    recipe("zz-fake-fail", config=FakeConfig, presets=PRESETS, help="a fake that misses its goal",
           claim="The fake claim that does not hold here.", headline=("acc",), goal="acc >= 0.8")(failing)
    recipe("zz-fake-broken", config=FakeConfig, presets=PRESETS, help="a fake that crashes")(broken)
    out = tmp_path_factory.mktemp("demo")
    try:
        with pytest.raises(DemoFailed, match="zz-fake-broken"):
            run_demo(out, preset="smoke", only=[*FAKES, "magnitude"])
    finally:
        for n in FAKES:
            RECIPES._entries.pop(n, None)  # leave the registry as the other tests expect it
    return out


def test_every_page_parses_images_decode_links_resolve(demo):
    res = check_tree(demo)
    assert res["problems"] == []
    assert res["pages"] == 4  # the index + three reports (the crashed recipe has none)
    assert res["images"] >= 10 and res["links"] >= 6
    for page in demo.rglob("*.html"):  # html5lib, strict: no parse error at all
        parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
        parser.parse(page.read_text(encoding="utf-8"))


def _sections(html: str) -> list[str]:
    """Top-level landmarks in document order."""
    marks = [("lead", "<section class='lead'>"), ("details", "<h2>Details</h2>"),
             ("config", "<summary>Configuration"), ("summary", "<summary>Full summary")]
    pos = {k: html.find(m) for k, m in marks}
    return [k for k, p in sorted(pos.items(), key=lambda kv: kv[1]) if p >= 0]


def test_report_leads_with_claim_goal_headline_and_key_plot(demo):
    html = (demo / "zz-fake-pass" / "report.html").read_text()
    assert _sections(html) == ["lead", "details", "config", "summary"]
    lead = html[html.index("<section class='lead'>"): html.index("</section>")]
    assert "A fake method reaches 0.8 accuracy" in lead
    assert "✓ goal met" in lead and "acc &gt;= 0.8 and speedup &gt;= 1.5" in lead
    assert "paper / reference" in lead and "0.85" in lead and "Table 1 of the fake paper" in lead
    assert 'alt="key figure: key"' in lead  # the declared key figure, first
    assert "extra_39" not in lead  # the long summary is not at the top
    body = html[html.index("</section>"):]
    assert "another figure" in body and "Training curves" in body
    assert re.search(r"<details><summary>Full summary \(\d+ keys\)</summary>", html)
    assert "<div class='scroll'><table>" in body  # wide tables scroll inside their box


def test_report_of_a_missed_goal_and_fallbacks(demo):
    html = (demo / "zz-fake-fail" / "report.html").read_text()
    assert "✗ goal not met" in html and "acc = 0.2" in html
    real = (demo / "magnitude" / "report.html").read_text()
    assert _sections(real)[0] == "lead" and "Claim." in real


def test_index_is_a_gallery_with_marks_and_thumbnails(demo):
    html = (demo / "index.html").read_text()
    cards = html.split("<article class='card'>")[1:]
    assert len(cards) == 4
    by = {re.search(r"<h3>(?:<a href='[^']+'>)?([\w-]+)", c).group(1): c for c in cards}
    assert "✓ goal met" in by["zz-fake-pass"] and "0.85" in by["zz-fake-pass"]
    assert "✗ goal not met" in by["zz-fake-fail"]
    assert "run failed" in by["zz-fake-broken"] and "RuntimeError: this recipe crashes" in by["zz-fake-broken"]
    for name in ("zz-fake-pass", "zz-fake-fail", "magnitude"):
        assert f"src='thumbs/{name}.png'" in by[name]
        w, h = decode_png((demo / "thumbs" / f"{name}.png").read_bytes())
        assert w <= 420 and h > 0
    assert "reaches 0.8 accuracy" in by["zz-fake-pass"]  # the claim is on the card


def test_checker_finds_broken_pages(tmp_path):
    good = tmp_path / "figure.png"
    fig, ax = plt.subplots(figsize=(1, 1))
    fig.savefig(good)
    plt.close(fig)
    png = good.read_bytes()
    bad = png[:60] + bytes([png[60] ^ 0xFF]) + png[61:]
    page = tmp_path / "p.html"
    page.write_text(
        "<!doctype html><html><head><title>t</title></head><body>"
        f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' alt='ok'>"
        f"<img src='data:image/png;base64,{base64.b64encode(bad).decode()}' alt='bad'>"
        "<img src='figure.png' alt='file'><a href='missing.html'>x</a><a href='#nowhere'>y</a>"
        "<a href='https://example.org'>external</a><div><span></div></body></html>"
    )
    problems = check_html(page)
    text = "\n".join(problems)
    assert "embedded image does not decode" in text
    assert "missing.html" in text and "#nowhere" in text
    assert "example.org" not in text and "figure.png" not in text
    assert "<span> is not closed" in text
    assert len([p for p in problems if "decode" in p]) == 1


def test_decode_png_checks_the_whole_file(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1))
    p = Path(tmp_path / "a.png")
    fig.savefig(p, dpi=50)
    plt.close(fig)
    data = p.read_bytes()
    assert decode_png(data) == (100, 50)
    for broken in (data[:-20], b"GIF89a" + data[6:], data.replace(b"IDAT", b"IDAX", 1)):
        with pytest.raises(ValueError):
            decode_png(broken)
