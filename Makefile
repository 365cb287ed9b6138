# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run install install-test system services lint test test-unit bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

install: $(VENV)/.installed

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

## The whole suite: lint, unit tests, integration tests on SQLite and on PostgreSQL + Redis.
test: install-test system services lint
	TRAINSERVE_TEST_REQUIRE_SERVICES=1 $(BIN)/pytest

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
	rm -rf $(VENV) var
