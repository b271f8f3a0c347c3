# Every target sets up .venv itself: torch is pinned to the local CPU wheel first,
# so that no CUDA build is pulled from the registry.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
TORCH   := torch==2.13.0
export PYTHONHASHSEED := 0

.PHONY: setup demo test test-slow bench lint clean

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

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks

clean:
	rm -rf .venv runs demo build *.egg-info src/*.egg-info
