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
    assert html.count("data:image/png;base64") == 2  # the saved figure (as key plot) + the training curves
    assert "a line" in html and "results" in html and "nested/inner" in html and "Configuration" in html


def test_report_of_unfinished_run_says_so(tmp_path):
    Run(tmp_path).save_config({"recipe": "toy"})
    assert "did not finish" in build_report(tmp_path).read_text()


def test_index_links_every_run(tmp_path):
    p = write_index(tmp_path, [{"name": "a", "ok": True, "report": True, "seconds": 1.0, "headline": {"acc": 0.9}},
                               {"name": "b", "ok": False, "error": "boom", "seconds": 0.1}])
    html = p.read_text()
    assert "a/report.html" in html and ">acc<" in html and "0.9" in html and "failed: boom" in html


def test_report_survives_non_finite_metrics(tmp_path):
    run = Run(tmp_path)
    run.save_config({"recipe": "toy"})
    for s, v in enumerate([1.0, float("inf"), float("-inf"), float("nan"), 0.5]):
        run.log(s, series="a", ppl=v)
    run.save_summary({"ppl": float("inf")})
    html = build_report(tmp_path).read_text()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"ppl": "inf"}
    assert "data:image/png;base64" in html


# --- what a report leads with ---------------------------------------------------------------

import pytest  # noqa: E402

from sparseforge.report.goal import GoalSyntaxError, check_expression, evaluate_goal  # noqa: E402
from sparseforge.report.html import curve_scale, recipe_card  # noqa: E402


@pytest.mark.parametrize(
    "goal,passed",
    [
        ("a >= 1", True),
        ("a > 2", False),
        ("x/y < a", True),  # keys may hold "/"
        ("a >= x/y * 2 - 0.5", True),  # 2 >= 0.5 * 2 - 0.5: * before -
        ("a == 3 or b <= 0.5", True),
        ("a == 3 and b <= 0.5", False),
        ("t-gen.95 != 4", True),
        ("missing >= 1", None),
        ("none_key >= 1", None),
        ("a / zero > 1", True),  # division by zero: +inf, not a crash
    ],
)
def test_goal_expressions(goal, passed):
    summary = {"a": 2.0, "b": 0.1, "x/y": 0.5, "t-gen.95": 3, "none_key": None, "zero": 0}
    res = evaluate_goal(goal, summary)
    assert res["passed"] is passed
    if passed is None:
        assert "not determined" in res["detail"]


def test_goal_syntax_errors_and_callables():
    for bad in ("a >=", "a 1", "a >= 1 and", "a >= 1 >= 2", "a % 2 >= 1"):
        with pytest.raises(GoalSyntaxError):
            check_expression(bad)
    assert evaluate_goal(lambda s: s["a"] > 1, {"a": 2})["passed"] is True
    assert evaluate_goal(lambda s: (False, "too slow"), {}) == {"passed": False, "detail": "too slow"}
    assert evaluate_goal(lambda s: s["missing"], {})["passed"] is None
    assert evaluate_goal(None, {})["passed"] is None


def test_recipe_decorator_rejects_a_goal_that_does_not_parse():
    from dataclasses import dataclass

    from sparseforge.config import RecipeConfig
    from sparseforge.recipes import recipe

    @dataclass
    class C(RecipeConfig):
        pass

    with pytest.raises(GoalSyntaxError):
        recipe("zz-never-registered", config=C, presets={"smoke": {}, "quick": {}, "paper": {}}, help="x",
               goal="acc >=")


def test_curve_scale_log_for_perplexity_and_first_eval_off_scale():
    ppl = {"full": ([0, 50, 100], [256.0, 12.0, 9.0]), "sst": ([0, 50, 100], [256.0, 14.0, 10.0])}
    sc = curve_scale("val_ppl", ppl)
    assert sc["log"] is True and 8 < sc["ylim"][0] < 9 and 14 < sc["ylim"][1] < 16  # step 0 is off-scale
    assert "first evaluation off-scale: 256" in sc["note"]
    slow = {"full": ([0, 50, 100], [256.0, 150.0, 60.0])}  # the later values span most of the log range
    assert curve_scale("val_ppl", slow) == {"log": True, "ylim": None, "note": "log scale"}
    acc = {"a": ([0, 1, 2, 3], [100.0, 5.0, 5.5, 6.0])}  # not a perplexity: fit the range to later evals
    sc = curve_scale("score", acc)
    assert sc["log"] is False and sc["ylim"][0] > 4 and sc["ylim"][1] < 7 and "off-scale: 100" in sc["note"]
    flat = {"a": ([0, 1, 2], [0.1, 0.5, 0.9])}
    assert curve_scale("test_acc", flat) == {"log": False, "ylim": None, "note": ""}


def test_report_without_recipe_metadata_falls_back(tmp_path):
    run = Run(tmp_path)
    run.save_config({"recipe": "not-registered", "preset": "smoke"})
    run.save_summary({f"k{i}": i for i in range(10)})
    card = recipe_card(tmp_path, {f"k{i}": i for i in range(10)})
    assert list(card["headline_values"]) == [f"k{i}" for i in range(6)]
    html = build_report(tmp_path).read_text()
    assert html.index("<section class='lead'>") < html.index("Full summary")


def test_table_keeps_its_column_order(tmp_path):
    run = Run(tmp_path)
    run.save_config({"recipe": "toy"})
    run.save_table("t", [{"variant": "a", "b_value": 1, "a_value": 2}])
    run.save_summary({"x": 1})
    html = build_report(tmp_path).read_text()
    assert html.index(">variant<") < html.index(">b_value<") < html.index(">a_value<")


def test_index_cards(tmp_path):
    rows = [{"name": "a", "ok": True, "report": True, "seconds": 1.0, "headline": {"acc": 0.9},
             "goal": {"text": "acc >= 0.8", "declared": True, "passed": True}, "paper": {"acc": 0.95},
             "claim": "x" * 400},
            {"name": "b", "ok": True, "report": True, "seconds": 1.0, "headline": {"acc": 0.5}, "goal": {}}]
    html = write_index(tmp_path, rows, preset="smoke").read_text()
    assert "✓ goal met" in html and "no goal declared" in html and "0.95" in html
    assert "x" * 400 not in html and "…" in html  # long claims are cut on the card
    assert "goals met: 1 of 2" in html and "<code>smoke</code>" in html


def test_index_leads_with_the_leaderboard_plot(tmp_path):
    png = tmp_path / "thumbs" / "compare_lead.png"
    png.parent.mkdir()
    rows = [{"name": "magnitude", "ok": True, "report": True, "seconds": 1.0, "headline": {"acc": 0.9}},
            {"name": "compare", "ok": True, "report": True, "seconds": 2.0, "claim": "one leaderboard",
             "headline": {"winner": "wgsef_filter"}, "goal": {"text": "beats TP", "declared": True, "passed": True},
             "thumb": "thumbs/compare.png", "lead_image": "thumbs/compare_lead.png"}]
    html = write_index(tmp_path, rows, preset="smoke").read_text()
    lead = html.index("<section class='lead'>")
    assert lead < html.index("<div class='grid'>")
    assert html.index("compare_lead.png") < html.index("<div class='grid'>") and "wgsef_filter" in html[lead:]
    no_lead = write_index(tmp_path, rows[:1], preset="smoke").read_text()
    assert "<section class='lead'>" not in no_lead  # without a compare run the index is the gallery alone
    failed = write_index(tmp_path, [rows[0], {**rows[1], "ok": False, "error": "boom"}], preset="smoke").read_text()
    assert "<section class='lead'>" not in failed and "boom" in failed
    no_report = write_index(tmp_path, [{**rows[1], "report": False}], preset="smoke").read_text()
    lead_html = no_report[no_report.index("<section class='lead'>"):no_report.index("<div class='grid'>")]
    assert "compare/report.html" not in lead_html  # no link to a report that was not written


def test_index_entry_makes_a_full_width_lead_image(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from sparseforge.report.html import index_entry

    run = Run(tmp_path / "compare")
    run.save_config({"recipe": "compare", "preset": "smoke"})
    run.save_summary({"acc/dense": 0.9})
    fig, ax = plt.subplots(figsize=(14, 5), dpi=100)
    ax.plot([0, 1], [0, 1])
    run.save_figure(fig, "pareto", "accuracy vs speed-up")
    row = index_entry(tmp_path, "compare", ok=True)
    assert row["lead_image"] == "thumbs/compare_lead.png" and (tmp_path / row["lead_image"]).exists()
    assert (tmp_path / row["thumb"]).stat().st_size < (tmp_path / row["lead_image"]).stat().st_size
