# Every target sets up .venv itself: torch is pinned to the local CPU wheel first,
# so that no CUDA build is pulled from the registry.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
TORCH   := torch==2.13.0
export PYTHONHASHSEED := 0
SLOW_BENCH := benchmarks/grokking_paper.py benchmarks/grokking_ablations.py

.PHONY: setup demo test test-slow bench bench-slow bench-setup lint report-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	.venv/bin/sparseforge demo --out demo
	@echo "open demo/index.html"

test: $(STAMP)
	$(PY) -m pytest -q -x --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the benchmarks compare against Torch-Pruning: install the [bench] extra first, so no row is silently skipped
bench-setup: $(STAMP)
	$(PIP) install -q -e '.[dev,bench]'

bench: bench-setup
	@for b in $(filter-out $(SLOW_BENCH),$(wildcard benchmarks/[!_]*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# reproductions at the papers' own regimes: about an hour each on 2 cores
bench-slow: bench-setup
	@for b in $(SLOW_BENCH); do echo "== $$b"; $(PY) $$b || exit 1; done

# renders the demo index and every report in headless Chromium (when installed) and writes screenshots
report-check: $(STAMP)
	$(PY) tools/report_check.py demo

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks

clean:
	rm -rf .venv runs demo build *.egg-info src/*.egg-info
