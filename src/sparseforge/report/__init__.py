"""HTML reports: one ``report.html`` per run, and the demo's ``index.html``.

A report is rebuilt from what the run directory holds (``config.json``, ``summary.json``,
``metrics.jsonl``, ``tables.json``, ``figures/*.png``), so ``sparseforge report DIR`` works
on any finished or interrupted run. PNGs are embedded (base64), so one file is the report.
"""

from .html import build_report, run_demo, write_index

__all__ = ["build_report", "run_demo", "write_index"]
