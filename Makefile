# droidspeak — every target does its own setup in .venv (CPU torch 2.13 pinned in pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup test test-fast demo clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## tests without the slow end-to-end ones
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)  ## run the main job on the embedded default and write reports/
	$(BIN)/python experiments/demo.py

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf outputs multirun wandb
