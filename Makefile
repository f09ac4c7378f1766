# The two commands of the README: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test stop lint mutate os-packages

demo: os-packages $(STAMP)
	$(BIN)/callpanion demo

test: os-packages $(STAMP)
	$(BIN)/ruff check python_worker tests mutate
	$(BIN)/mypy
	$(BIN)/pytest

stop: $(STAMP)
	$(BIN)/callpanion stack down

lint: $(STAMP)
	$(BIN)/ruff check python_worker tests mutate
	$(BIN)/ruff format --check python_worker tests mutate
	$(BIN)/mypy
	$(BIN)/lint-imports

# Mutation testing (README, "Mutation testing"): too slow for `make test` (tens of minutes).
# Each critical module against its own tests, then the SQL mutants; prints the score of each.
mutate: os-packages $(STAMP)
	$(BIN)/python -m mutate

os-packages:
	@PYTHON=$(PYTHON) ./scripts/ensure-os-packages.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)
