"""Benchmark helpers and the prefill benchmark's CPU smoke run (numbers appear; GPU paths skip cleanly)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from droidspeak.bench import ThrottledTransfer, measure, model_config, random_model
from droidspeak.engine.pipeline import pipelined_prefill
from droidspeak.engine.prefill import receiver_prefill, sender_prefill

ROOT = Path(__file__).parents[1]
ENV = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def test_llama3_8b_shape():
    config = model_config("llama3-8b")
    h, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    params = 2 * vocab * h + layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + h
    assert params == pytest.approx(8.03e9, rel=0.01)
    assert (layers, config.num_key_value_heads) == (32, 8)


def test_random_model_is_deterministic_and_in_dtype():
    a, b = random_model("tiny", seed=3), random_model("tiny", seed=3)
    assert a.dtype == torch.bfloat16 and a.fingerprint == b.fingerprint
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert torch.get_default_dtype() == torch.float32  # the temporary default is restored


def test_measure_takes_the_median():
    calls = []
    timing = measure(lambda: calls.append(time.sleep(0.002)), warmup=2, repeats=5)
    assert len(calls) == 7 and len(timing.samples_ms) == 5
    assert 1.5 <= timing.median_ms <= 50


def test_throttled_link_is_exact_and_slow():
    src = torch.randn(64, 1024)  # 256 KiB
    dst = torch.empty_like(src)
    link = ThrottledTransfer(0.05, chunk_bytes=32 << 10)  # 50 MB/s -> about 5 ms
    t0 = time.perf_counter()
    link.copy(dst, src)
    assert time.perf_counter() - t0 >= 0.004
    assert torch.equal(dst, src) and link.bytes_copied == src.numel() * 4
    strided = torch.zeros(2, 64, 8)
    ThrottledTransfer(1.0, chunk_bytes=64).copy(strided[1, :, :5], torch.ones(64, 5))
    assert strided[1, :, :5].eq(1).all() and strided[0].eq(0).all() and strided[1, :, 5:].eq(0).all()


def test_throttled_pipeline_stays_exact():
    model = random_model("tiny", dtype="float32", seed=1)
    (cache,) = sender_prefill(model, [torch.arange(20)])
    got = pipelined_prefill(model, [cache], "recompute:2-3", transfer=ThrottledTransfer(0.5, chunk_bytes=256))
    want = receiver_prefill(model, [cache], "recompute:2-3")
    assert all(torch.equal(x.keys, y.keys) for x, y in zip(got.cache.layers, want.cache.layers))


def test_bench_prefill_tiny_smoke(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_prefill.py"), "--tiny", "--contexts", "32",
                          "--recompute", "2,4", "--repeats", "1", "--bandwidths", "0.5", "--markdown", str(tmp_path / "t.md")],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [(r["context"], r["k"]) for r in result["rows"]] == [(32, 2), (32, 4)]
    for row in result["rows"]:
        assert row["full_ms"] > 0 and row["partial_ms"] > 0 and row["ratio"] > 0 and row["compute_limit"] > 0
        assert set(row["strategies_ms"]) == {"pipelined", "load_reused", "load_all"}
    assert result["suffix_variants_ms"]["32"]["static_eager_relerr"] < 1e-5  # the static suffix matches HF eager
    assert set(result["bandwidth"][0]) >= {"gbps", "full_ms", "pipelined_ms", "load_reused_ms", "load_all_ms"}
    assert "| context | k |" in (tmp_path / "t.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
@pytest.mark.parametrize("script", ["bench_prefill.py", "bench_serving.py"])
def test_gpu_benchmarks_skip_cleanly_without_cuda(script):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / script)], capture_output=True, text=True,
                         timeout=60, env=ENV)
    assert out.returncode == 0
    assert "skipped" in json.loads(out.stdout.strip().splitlines()[-1])
