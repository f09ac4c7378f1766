# The two commands of the README: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test stop lint os-packages

demo: os-packages $(STAMP)
	$(BIN)/callpanion demo

test: os-packages $(STAMP)
	$(BIN)/ruff check python_worker tests
	$(BIN)/mypy
	$(BIN)/pytest

stop: $(STAMP)
	$(BIN)/callpanion demo stop
	$(BIN)/callpanion stack down

lint: $(STAMP)
	$(BIN)/ruff check python_worker tests
	$(BIN)/ruff format --check python_worker tests
	$(BIN)/mypy
	$(BIN)/lint-imports

os-packages:
	@PYTHON=$(PYTHON) ./scripts/ensure-os-packages.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)
