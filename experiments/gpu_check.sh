#!/usr/bin/env bash
# GPU check for issue 6: CUDA exactness test, then the prefill and serving benchmarks on a Llama-3-8B shape.
# Runs in under 8 minutes on a bare H100/H200 machine with torch and transformers (nothing else is imported).
# Leaves four files in $OUT (default outputs/gpu_check): perf.md (the table for reports/perf.md),
# prefill.json, serving.json and gpu_check.log (everything printed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0

card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
echo "card: $card"
versions="$("$PY" -c "import torch, transformers; print('torch', torch.__version__, '(CUDA', str(torch.version.cuda) + ') · transformers', transformers.__version__)")"
echo "$versions"
"$PY" -c "import droidspeak.engine.pipeline, droidspeak.bench.prefill, droidspeak.bench.serving" \
  || { echo "import check failed: the benchmark path must import only torch, transformers and droidspeak"; exit 1; }

# 1. pipelined == unpipelined on CUDA (streams, events, graph-captured suffix), ~20 s
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_pipeline.py -k cuda || status=1
fi

# 2. prefill: 2K/8K/16K contexts, 4/8/16 of 32 layers recomputed, Fig. 13 strategies, Fig. 20 sweep (~3 min)
timeout 300 "$PY" experiments/bench_prefill.py --markdown "$WORK/prefill.md" --json "$OUT/prefill.json" > "$WORK/prefill.out" \
  || status=1
tail -n 1 "$WORK/prefill.out"

# 3. serving: calibrate on the device, then simulate Poisson arrivals over the measured costs (~1.5 min)
timeout 200 "$PY" experiments/bench_serving.py --markdown "$WORK/serving.md" --json "$OUT/serving.json" > "$WORK/serving.out" \
  || status=1
tail -n 1 "$WORK/serving.out"

{
  echo "# Performance (issue 6), measured by experiments/gpu_check.sh"
  echo
  echo "Card: $card · $versions"
  echo
  echo "## Prefill (Figs. 13, 20)"
  echo
  cat "$WORK/prefill.md" 2>/dev/null || echo "(prefill benchmark failed: see gpu_check.log)"
  echo
  echo "## Serving (Figs. 15, 21)"
  echo
  cat "$WORK/serving.md" 2>/dev/null || echo "(serving benchmark failed: see gpu_check.log)"
} > "$OUT/perf.md"
cat "$OUT/perf.md"
exit $status
