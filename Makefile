# meterflow — the same commands locally and in CI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test test-fast lint typecheck bench check-config status clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The venv is (re)built when missing or when pyproject.toml / constraints.txt are newer than it.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install meterflow with its pinned dependencies

run: $(STAMP) ## start the embedded stack (Tansu + chDB + services + simulated site)
	$(BIN)/meterflow dev

test: $(STAMP) ## run the whole suite (slow end-to-end tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the suite without tests marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy over libs and services
	$(BIN)/mypy

bench: $(STAMP) ## run the benchmarks under bench/ and print their figures
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

status: $(STAMP) ## broker, topics, consumer lag and ClickHouse health
	$(BIN)/meterflow status

clean: ## remove the venv and local state
	rm -rf $(VENV) .meterflow .pytest_cache .mypy_cache .ruff_cache
