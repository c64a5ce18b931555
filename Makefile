# Everyday commands. `make demo` and `make test` each set up .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test unit integration lint typecheck check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	bash ops/demo.sh

test: setup
	$(BIN)/pytest -q -ra

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q -ra tests/integration

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: setup
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) .tfo .tfo-demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
