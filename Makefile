# The two commands of the README: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test stop lint mutate os-packages npm-tools types schema

demo: os-packages $(STAMP)
	$(BIN)/callpanion demo

test: os-packages npm-tools $(STAMP)
	$(BIN)/ruff check python_worker tests mutate
	$(BIN)/mypy
	$(BIN)/pytest

stop: $(STAMP)
	$(BIN)/callpanion demo stop
	$(BIN)/callpanion stack down

lint: os-packages $(STAMP)
	$(BIN)/ruff check python_worker tests mutate
	$(BIN)/ruff format --check python_worker tests mutate
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/callpanion lint-sql

# Mutation testing (README, "Mutation testing"): too slow for `make test` (tens of minutes).
# Each critical module against its own tests, then the SQL mutants; prints the score of each.
mutate: os-packages $(STAMP)
	$(BIN)/python -m mutate

os-packages:
	@PYTHON=$(PYTHON) ./scripts/ensure-os-packages.sh

# The Supabase CLI and postgres-meta, pinned in tools/npm/package-lock.json, project-local.
npm-tools:
	@./scripts/ensure-npm-tools.sh

# Regenerate supabase/types/database.ts (the dashboard's `Database` types) from the migrations.
types: os-packages npm-tools $(STAMP)
	$(BIN)/callpanion gen-types

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Regenerate supabase/schema.sql (the current schema, read it first) from the migrations.
schema: os-packages $(STAMP)
	$(BIN)/callpanion schema
