# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
# The production install, made as the Dockerfile makes it (no extras, not editable), for the
# suite's smoke test of it (tests/integration/test_production_install.py).
PROD_VENV ?= .venv-prod
PROD_PIP := $(PROD_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	-c constraints.txt
PROD_SOURCES := $(shell find app core workers models migrations -type f \
	-not -path '*/__pycache__/*' 2>/dev/null) README.md

.PHONY: run install install-test install-prod system services lint test test-unit bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Rebuilt whole when the dependencies change; only the project is reinstalled when its
# source does. build/ goes first: setuptools would otherwise ship a deleted module again.
$(PROD_VENV)/.deps: pyproject.toml constraints.txt
	rm -rf $(PROD_VENV) build
	$(PYTHON) -m venv $(PROD_VENV)
	$(PROD_PIP) .
	rm -rf build
	touch $@

$(PROD_VENV)/.installed: $(PROD_VENV)/.deps $(PROD_SOURCES)
	rm -rf build
	$(PROD_PIP) --no-deps --force-reinstall .
	rm -rf build
	touch $@

install-prod: $(PROD_VENV)/.installed

## Debian packages (Fashion-MNIST, wrk); installs only what is missing.
system:
	scripts/system-packages.sh

install-test: $(VENV)/.installed-test

## Start API and one worker on the embedded defaults (SQLite, filesystem broker, ./var).
run: install system
	$(BIN)/trainserve up

## Start PostgreSQL and Redis if they are down.
services:
	scripts/services.sh

lint: install-test
	$(BIN)/ruff check .

## The whole suite: lint, unit tests, integration tests on SQLite and on PostgreSQL + Redis,
## and a smoke test of the production install (.venv-prod) on PostgreSQL + Redis.
test: install-test install-prod system services lint
	TRAINSERVE_TEST_REQUIRE_SERVICES=1 TRAINSERVE_TEST_PROD_VENV=$(abspath $(PROD_VENV)) \
		$(BIN)/pytest

test-unit: install-test
	$(BIN)/pytest tests/unit

bench: install-test system
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/predict_load.py
	$(BIN)/python bench/generate_scaling.py

## On a machine with an NVIDIA GPU: the gpu-marked tests and the GPU training benchmark.
gpu-check:
	bench/gpu_check.sh

clean:
	rm -rf $(VENV) $(PROD_VENV) build var
