# Each target bootstraps .venv on a fresh machine, then does its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --config gateway.yaml

lint: $(STAMP)
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/gateway check --config gateway.yaml
	$(BIN)/gateway policy check policies/
	$(BIN)/gateway policy test policies/

test: lint check
	$(BIN)/pytest -q

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache gateway.db gateway.db-wal gateway.db-shm
