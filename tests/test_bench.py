"""Benchmark helpers and the prefill benchmark's CPU smoke run (numbers appear; GPU paths skip cleanly)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from droidspeak.bench import ThrottledTransfer, measure, model_config, random_model
from droidspeak.bench.prefill_speed import assemble, markdown
from droidspeak.engine.pipeline import Transfer, contiguous_blocks, pipelined_prefill
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


@pytest.mark.slow
def test_bench_prefill_tiny_smoke(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_prefill.py"), "tiny=true", "contexts=32",
                          "recompute=2,4", "repeats=1", "bandwidths_gbps=0.5", "bandwidth_context=32",
                          f"markdown={tmp_path / 't.md'}", f"results={tmp_path / 'r.jsonl'}"],
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
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert kinds == ["environment", "full", "suffix_variants", "row", "row", "bandwidth"]  # each as measured
    rendered = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_prefill.py"),
                               f"render={tmp_path / 'r.jsonl'}"], capture_output=True, text=True, timeout=60, env=ENV)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert rendered.stdout.startswith((tmp_path / "t.md").read_text())  # the same table, from the file alone


def test_table_renders_from_a_crashed_run():
    """A process killed mid-write and a context that failed: the rows that exist are shown, the failure listed."""
    env = {"kind": "environment", "device": "cuda:0", "card": "H200", "torch": "2.11", "transformers": "5.17.0",
           "shape": "llama3-8b", "dtype": "bfloat16", "suffix": 64}
    row = {"kind": "row", "context": 2048, "k": 8, "full_ms": 60.0, "partial_ms": 20.0, "ratio": 3.0,
           "compute_only_ms": 15.0, "compute_limit": 4.0, "load_ms": 6.0, "partial_eager_suffix_ms": 40.0,
           "strategies_ms": {"pipelined": 20.0, "load_reused": 25.0, "load_all": "failed: OutOfMemoryError: ..."}}
    result = assemble([env, row, {"kind": "error", "context": 16384, "error": "OutOfMemoryError: CUDA out of memory"}])
    table = markdown(result)
    assert "| 2048 | 8 | 60.0 | 20.0 | **3.00×** |" in table and "failed: OutOfMemoryError" in table
    assert "context 16384: OutOfMemoryError" in table and "target" not in result
    assert markdown(assemble([])) == "no prefill measurement was recorded\n"


def test_transfers_copy_contiguous_blocks(monkeypatch):
    """K/V of one context in a padded or workspace buffer is contiguous per head only: every copy (and every
    throttled chunk) must be one flat block on both sides, and the result exact."""
    buffer = torch.zeros(3, 2, 40, 8)  # [batch, kv_heads, capacity, head_dim]
    src = torch.randn(2, 30, 8)
    blocks = list(contiguous_blocks(buffer[1, :, :30], src))
    assert len(blocks) == 2 and all(d.is_contiguous() and s.is_contiguous() for d, s in blocks)
    copies = []
    original = torch.Tensor.copy_

    def recording(dst, source, non_blocking=False):
        copies.append((dst.is_contiguous(), source.is_contiguous(), source.numel()))
        return original(dst, source, non_blocking=non_blocking)

    monkeypatch.setattr(torch.Tensor, "copy_", recording)
    Transfer().copy(buffer[1, :, :30], src)
    ThrottledTransfer(100.0, chunk_bytes=10 * 8 * 4).copy(buffer[2, :, :30], src)  # 10 tokens a chunk
    monkeypatch.undo()
    assert copies[:2] == [(True, True, 240)] * 2  # one per head
    assert copies[2:] == [(True, True, 80)] * 6  # three chunks of whole rows within each head
    assert torch.equal(buffer[1, :, :30], src) and torch.equal(buffer[2, :, :30], src) and buffer[0].eq(0).all()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_the_gpu_prefill_benchmark_skips_cleanly_without_cuda():
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_prefill.py")], capture_output=True,
                         text=True, timeout=60, env=ENV)
    assert out.returncode == 0
    assert "skipped" in json.loads(out.stdout.strip().splitlines()[-1])


GPU_CHECK = ROOT / "experiments" / "gpu_check.sh"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_refuses_at_once_without_cuda(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=60,
                         env={**ENV, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert out.returncode == 2 and "CUDA is not usable" in out.stdout
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "perf.md").exists()


def test_gpu_check_fits_its_budget():
    """Its step limits (and the CUDA probe's) add up to under 6 minutes, kill grace included."""
    text = GPU_CHECK.read_text()
    limits = [int(n) for n in re.findall(r"^step (\d+) ", text, re.M)]
    limits += [int(n) for n in re.findall(r"timeout -k 2 (\d+) \"\$PY\" -c", text)]
    limits += [int(spec.split(":")[1]) for spec in re.search(r'contexts="([^"]+)" exactness', text).group(1).split()]
    assert len(limits) == 6
    assert sum(limits) + 2 * len(limits) <= 360


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tmp_path):
    """SMOKE=1 runs every step of the GPU check on CPU: all sections render and its five files come back."""
    out = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=300,
                         env={**ENV, "OUT": str(tmp_path), "PYTHON": sys.executable, "SMOKE": "1"})
    assert out.returncode == 0, out.stdout[-3000:]
    perf = (tmp_path / "perf.md").read_text()
    assert perf.count("- PASS ") == 6 and "| 96 | 4 |" in perf and "| 96 | 4 | 0.5 |" in perf
    assert "transformers" in perf and "Serving" not in perf  # serving is measured executed, not simulated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exactness.json", "gpu_check.log", "perf.md", "prefill.json",
                                                         "prefill.jsonl"]


def test_benchmark_arguments_are_key_value_like_every_entry_point():
    from droidspeak.bench.prefill_speed import PrefillBenchConfig
    from droidspeak.bench.recording import parse

    cfg, options = parse(["contexts=32,64", "bandwidths_gbps=", "repeats=1", "results=r.jsonl"], PrefillBenchConfig,
                         {"shape": "tiny"})
    assert cfg.contexts == (32, 64) and cfg.bandwidths_gbps == () and cfg.repeats == 1 and cfg.shape == "llama3-8b"
    assert options == {"results": Path("r.jsonl"), "tiny": False}
    assert parse(["tiny=true"], PrefillBenchConfig, {"shape": "tiny"})[0].shape == "tiny"
    with pytest.raises(SystemExit, match="contexts, recompute"):
        parse(["--contexts", "32"], PrefillBenchConfig, {})  # the old flags name the keys instead
    with pytest.raises(SystemExit, match="repeats=many"):
        parse(["repeats=many"], PrefillBenchConfig, {})
