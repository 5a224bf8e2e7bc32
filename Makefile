# The two README commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint typecheck pytest services browser clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "careflow needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## Create a demo workspace (SQLite + in-process broker) and run today's care on it.
demo: $(STAMP)
	$(BIN)/careflow demo --dir careflow-demo

## Everything CI runs: services up, lint, types, the whole test suite.
test: $(STAMP) services browser lint typecheck pytest

services:
	bash .ci/services

browser:
	bash .ci/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) careflow-demo .pytest_cache .mypy_cache .ruff_cache
