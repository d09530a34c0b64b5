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

bench: $(STAMP)
	$(BIN)/python -m bench

# Leaves .venv and .pgjobs (the embedded server's data) alone: both are slow to
# rebuild and .pgjobs may hold a running server.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
