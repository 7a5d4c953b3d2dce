#!/usr/bin/env bash
# GPU check: CUDA exactness, then the prefill benchmark (one process per context length), on a Llama-3-8B shape.
# (Serving is measured executed, not simulated: experiments/serve.py; the old simulation over assumed costs is gone.) Needs only torch and transformers (>= 5.17) on a bare H100/H200 machine; no pytest.
#
# Budget: the step limits below add up to 325 s, plus at most 2 s of kill grace per step: under 8 minutes.
# Every measured record is appended to $OUT/*.jsonl the moment it exists, and perf.md is rendered at the end from
# whatever was recorded, so a crash or timeout at 16K keeps the 2K/8K rows. Leaves in $OUT (default
# outputs/gpu_check): perf.md, prefill.jsonl, exactness.json, prefill.json, gpu_check.log.
# SMOKE=1 runs every step on CPU with the tiny shape (the tests do this, so the script itself is checked before a GPU
# run spends its minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0

step() {  # step SECONDS NAME COMMAND...: run with a hard limit; a failure is reported and the next step still runs
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout -k 2 "$limit" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ': timed out'))"
    status=1
  fi
}

SMOKE="${SMOKE:-0}"
tiny=() contexts="2048:45 8192:105 16384:95" exactness_device=cuda
[ "$SMOKE" = 1 ] && tiny=(tiny=true) contexts="48:50 96:50" exactness_device=cpu

# 0. CUDA must be usable, or nothing else is worth running (20 s)
if [ "$SMOKE" != 1 ] && ! timeout -k 2 20 "$PY" -c "
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f'torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no usable CUDA device')
torch.ones(1, device='cuda').add_(1).item()
"; then
  echo "gpu_check: CUDA is not usable on this machine; nothing was measured"
  exit 2
fi
card="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
versions="$("$PY" -c "
import torch, transformers
from droidspeak.hf_compat import CACHE_KW, SDPA_GQA_SWITCH
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}) · transformers {transformers.__version__} '
      f'(cache keyword {CACHE_KW!r}; sdpa GQA switch {\"present\" if SDPA_GQA_SWITCH else \"absent\"})')
")" || { echo "gpu_check: droidspeak does not import here (it needs only torch and transformers)"; exit 2; }
echo "card: ${card:-unknown} · $versions"

# 1. exactness on CUDA, without pytest: pipelined == unpipelined, graph suffix == eager, failed captures (40 s)
step 40 exactness sh -c "\"$PY\" -m droidspeak.bench.exactness device=$exactness_device > \"$OUT/exactness.json\""

# 2. prefill: each context length in its own process, all appending to one file (45 + 105 + 95 s)
for spec in $contexts; do
  step "${spec#*:}" "prefill ${spec%%:*}" "$PY" experiments/bench_prefill.py "${tiny[@]}" "contexts=${spec%%:*}" \
    "results=$OUT/prefill.jsonl"
done

# 3. the table, from whatever was recorded (20 s)
step 20 "render prefill" "$PY" experiments/bench_prefill.py "render=$OUT/prefill.jsonl" \
  "markdown=$OUT/prefill.md" "json=$OUT/prefill.json"
{
  echo "# Performance, measured by experiments/gpu_check.sh"
  echo
  echo "Card: ${card:-unknown} · $versions · $(date -u +%Y-%m-%d)"
  echo
  echo "## CUDA exactness"
  echo
  "$PY" -c "
import json, sys
try:
    result = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(print('(the exactness program recorded nothing: see gpu_check.log)'))
for check in result.get('checks', []):
    print(f\"- {'PASS' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}\")
" "$OUT/exactness.json"
  echo
  echo "## Prefill (Figs. 13, 20)"
  echo
  cat "$OUT/prefill.md" 2>/dev/null || echo "(no prefill table: see gpu_check.log)"
} > "$OUT/perf.md"
rm -f "$OUT/prefill.md" "$OUT"/*.lock
cat "$OUT/perf.md"
exit $status
