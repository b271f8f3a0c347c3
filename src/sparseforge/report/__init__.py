"""HTML reports: one ``report.html`` per run, and the demo's ``index.html``.

A report is rebuilt from what the run directory holds (``config.json``, ``summary.json``,
``recipe.json``, ``metrics.jsonl``, ``tables.json``, ``figures/*.png``), so
``sparseforge report DIR`` works on any finished or interrupted run. PNGs are embedded
(base64), so one file is the report. It leads with the recipe's claim, the pass/fail mark
against its goal (:mod:`sparseforge.report.goal`), the headline figures next to the paper's
numbers and the key plot; the demo index is a gallery of one card per recipe.
:mod:`sparseforge.report.check` checks pages as a browser would (markup, images, links).
"""

from .check import check_html, check_tree
from .goal import evaluate_goal
from .html import build_report, run_demo, write_index

__all__ = ["build_report", "check_html", "check_tree", "evaluate_goal", "run_demo", "write_index"]
