# The README's commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint format demo bench bench-full clean docs docs-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[numpyro,examples,dev,docs]'
	touch $(STAMP)

# Two pytest workers: the suite is CPU-bound and single-threaded per test (2-core budget).
PYTEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=20 tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install
	$(PY) examples/estimator_shootout.py

# The public alternatives the benchmarks compare with (power-spherical, reinmax: the bench extra).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run_all.py

# The whole estimator protocol and data-parallel table (make bench runs their short versions).
bench-full: $(BENCH_STAMP)
	$(PY) benchmarks/protocol.py
	$(PY) benchmarks/data_parallel.py
	$(PY) benchmarks/run_all.py --collect-only

# The documentation site, offline (MathJax ships in a wheel), warnings are errors.
DOCS_BUILD ?= build/docs/html

docs: install
	$(PY) -m sphinx -b html -W --keep-going -q -d build/docs/doctrees docs $(DOCS_BUILD)

# Opens the built site in headless Chromium (Debian's, installed when missing).
docs-check: docs
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	$(PY) docs/check_browser.py $(DOCS_BUILD)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
