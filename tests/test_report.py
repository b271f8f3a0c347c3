import json

import matplotlib.pyplot as plt

from sparseforge.engine import Run
from sparseforge.report import build_report, write_index


def test_report_embeds_summary_tables_figures_and_curves(tmp_path):
    run = Run(tmp_path)
    run.save_config({"recipe": "toy", "preset": "smoke", "seed": 0})
    for s in range(5):
        run.log(s, series="a", loss=1.0 / (s + 1), acc=s / 5)
        run.log(s, series="b", loss=2.0 / (s + 1))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.save_figure(fig, "line", caption="a line")
    run.save_table("results", [{"method": "x", "acc": 0.5}], caption="one row")
    run.save_summary({"acc": 0.5, "nested": {"inner": 2}})
    html = build_report(tmp_path).read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"acc": 0.5, "nested/inner": 2}
    assert html.count("data:image/png;base64") == 2  # the saved figure + the training curves
    assert "a line" in html and "results" in html and "nested/inner" in html and "Configuration" in html


def test_report_of_unfinished_run_says_so(tmp_path):
    Run(tmp_path).save_config({"recipe": "toy"})
    assert "did not finish" in build_report(tmp_path).read_text()


def test_index_links_every_run(tmp_path):
    p = write_index(tmp_path, [{"name": "a", "ok": True, "report": True, "seconds": 1.0, "headline": {"acc": 0.9}},
                               {"name": "b", "ok": False, "error": "boom", "seconds": 0.1}])
    html = p.read_text()
    assert "a/report.html" in html and "acc = 0.9" in html and "failed: boom" in html


def test_report_survives_non_finite_metrics(tmp_path):
    run = Run(tmp_path)
    run.save_config({"recipe": "toy"})
    for s, v in enumerate([1.0, float("inf"), float("-inf"), float("nan"), 0.5]):
        run.log(s, series="a", ppl=v)
    run.save_summary({"ppl": float("inf")})
    html = build_report(tmp_path).read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"ppl": "inf"}
    assert "data:image/png;base64" in html
