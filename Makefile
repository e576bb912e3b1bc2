# The commands the README gives. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= serve_config.yaml

.PHONY: setup setup-dev migrate run test

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(BIN)/.runtime
setup-dev: $(BIN)/.dev

migrate: setup
	$(BIN)/alembic upgrade head

run: migrate
	$(BIN)/serve run $(CONFIG)

test: setup-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)
