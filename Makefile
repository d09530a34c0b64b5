# Every target runs the venv's own tools, so nothing depends on what is on PATH.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# Written by `install`; rebuilt when the dependencies change, so `make test`
# on a fresh clone installs first and later runs skip pip entirely.
STAMP  := $(VENV)/.installed

PYTEST_ARGS ?=

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/pgjobs demo

lint: $(STAMP)
	$(BIN)/ruff check pgjobs tests bench
	$(BIN)/mypy pgjobs

# The peers (procrastinate, PgQueuer, oban, RQ) and matplotlib live in their own
# venv, never in pgjobs' dependencies. oban needs Python >= 3.12: the first of
# python3.13, python3.12 (or a pyenv 3.12/3.13) found makes it, else $(PYTHON),
# and a peer that cannot install is skipped (the report says so).
BENCH_VENV  ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $$( \
	  for py in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[23]*/bin/python3 2>/dev/null) $(PYTHON); do \
	    $$py -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null && { echo $$py; break; }; \
	  done) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --disable-pip-version-check -q -e . -r bench/requirements.txt \
	  || $(BENCH_VENV)/bin/pip install --disable-pip-version-check -q -e . \
	       $$(grep -v -e '^oban' -e '^#' bench/requirements.txt | cut -d' ' -f1)
	touch $@

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

# Leaves .venv and a project-local .pgjobs (PGJOBS_HOME=./.pgjobs) alone: both are slow to
# rebuild and .pgjobs may hold a running server.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
