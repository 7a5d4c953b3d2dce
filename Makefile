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

DEMO := outputs/demo
DEMO_PAIRS := mdqa_from_base,mdqa_from_twohop,fieldqa_from_mdqa,mdqa_from_fieldqa,code_from_summary
DEMO_PROFILE := granularity=1 output_root=$(DEMO) progress=false

demo: $(STAMP)  ## the main job on the embedded default: family, sweeps via lm-eval, profile, reports/
	$(BIN)/python experiments/build_zoo.py
	$(BIN)/python experiments/evaluate.py -m experiment=demo_baselines
	$(BIN)/python experiments/evaluate.py -m experiment=demo_groups
	$(BIN)/python experiments/profile_pair.py -m pair=$(DEMO_PAIRS) $(DEMO_PROFILE)
	$(BIN)/python experiments/profile_pair.py pair=mdqa_from_fieldqa task=twohop beyond=false $(DEMO_PROFILE)
	$(BIN)/python experiments/figures.py results=$(DEMO)/results.jsonl out_dir=reports \
	  'profiles=["$(DEMO)/profiles/*/*.json"]'

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf outputs multirun wandb
