"""Pipelined partial prefill: exactly receiver_prefill's result on CPU, from any source, with any strategy."""

from __future__ import annotations

import pytest
import torch

from droidspeak.bench.exactness import run_checks
from droidspeak.engine.infer import tail_logits
from droidspeak.engine.pipeline import PipelineTrace, Transfer, pipelined_prefill
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.engine.suffix import SuffixRunner, SuffixWorkspace
from droidspeak.errors import CacheMismatchError, DroidSpeakError
from droidspeak.store import DiskStore, host_store


@pytest.fixture(scope="module")
def pair(llama_pair):
    return llama_pair


@pytest.fixture(scope="module")
def caches(pair):
    sender, _ = pair
    g = torch.Generator().manual_seed(3)
    contexts = [torch.randint(0, 97, (n,), generator=g) for n in (11, 7, 11)]
    return sender_prefill(sender, contexts, e_layers="all")


def assert_identical(a, b) -> None:
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.attention_mask, b.attention_mask)
    assert a.cost == b.cost
    assert len(a.cache.layers) == len(b.cache.layers)
    for x, y in zip(a.cache.layers, b.cache.layers):
        assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)
    assert a.cache.get_seq_length() == b.cache.get_seq_length()


PLANS = ["recompute:2-3", "recompute:0-1+4-4", "full_reuse", "recompute:0-5", "recompute:1-1+3-5"]


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("strategy", ["pipelined", "load_reused", "load_all"])
def test_pipelined_equals_receiver_prefill(pair, caches, plan, strategy):
    _, receiver = pair
    for batch in ([caches[0]], caches):  # one context; a right-padded batch of different lengths
        expected = receiver_prefill(receiver, batch, plan)
        assert_identical(pipelined_prefill(receiver, batch, plan, strategy=strategy), expected)


def test_full_prefill_delegates(pair, caches):
    _, receiver = pair
    assert_identical(
        pipelined_prefill(receiver, caches, "full_prefill"), receiver_prefill(receiver, caches, "full_prefill")
    )


@pytest.mark.parametrize("tier", ["memory", "disk"])
def test_layer_by_layer_from_store(pair, caches, tier, tmp_path):
    _, receiver = pair
    store = host_store() if tier == "memory" else DiskStore(tmp_path)
    views = [store.view(store.put(c)) for c in caches]
    for plan in ("recompute:2-3", "recompute:0-1+4-4"):
        assert_identical(pipelined_prefill(receiver, views, plan), receiver_prefill(receiver, caches, plan))


class Recording(Transfer):
    def __init__(self):
        self.log: list[tuple[int, ...]] = []

    def copy(self, dst, src):
        self.log.append(tuple(src.shape))
        super().copy(dst, src)


def test_e_first_and_only_reused_layers(pair, caches):
    _, receiver = pair
    hidden = receiver.config.hidden_size
    for strategy, expected_kv in (("pipelined", 4), ("load_reused", 4), ("load_all", 6)):
        link = Recording()
        pipelined_prefill(receiver, [caches[0]], "recompute:2-3", strategy=strategy, transfer=link)
        assert link.log[0] == (11, hidden)  # E[2] travels first
        assert len(link.log) == 1 + 2 * expected_kv  # then K and V of each loaded layer


def test_rejects_unusable_caches(pair, caches):
    sender, receiver = pair
    partial = sender_prefill(sender, [caches[0].token_ids], e_layers=[4])
    with pytest.raises(CacheMismatchError, match="E only for layers"):
        pipelined_prefill(receiver, partial, "recompute:2-3")
    with pytest.raises(DroidSpeakError, match="unknown strategy"):
        pipelined_prefill(receiver, caches, "recompute:2-3", strategy="yolo")
    with pytest.raises(DroidSpeakError, match="cannot prefill from"):
        pipelined_prefill(receiver, [caches[0].token_ids], "recompute:2-3")


def test_trace_marks_phases(pair, caches):
    _, receiver = pair
    trace = PipelineTrace()
    pipelined_prefill(receiver, caches, "recompute:2-3", trace=trace)
    assert set(trace.events) == {"start", "e_loaded", "computed", "kv_loaded", "end"}
    assert trace.elapsed_ms("start", "end") >= 0


def test_workspace_prefill_and_static_suffix(pair, caches):
    _, receiver = pair
    plan = "recompute:1-2"
    ws = SuffixWorkspace(receiver, batch=len(caches), capacity=16, suffix=5)
    expected = receiver_prefill(receiver, caches, plan)
    prefilled = pipelined_prefill(receiver, caches, plan, workspace=ws)
    assert_identical(prefilled, expected)
    assert prefilled.cache.layers[1].keys.data_ptr() == ws.keys[1].data_ptr()  # the cache is the workspace
    g = torch.Generator().manual_seed(5)
    tails = [torch.randint(0, 97, (n,), generator=g) for n in (5, 3, 1)]
    runner = SuffixRunner(receiver, ws)
    assert runner.mode == "eager"  # no CUDA here: same code, no graph
    got = runner(prefilled, tails).clone()
    want = tail_logits(receiver, expected, tails)[:, -1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    again = runner(prefilled, tails)  # replays leave the context slots alone
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert_identical(prefilled, expected)
    with pytest.raises(DroidSpeakError, match="tails of 1..5"):
        runner(prefilled, [torch.arange(6)] * 3)


def test_workspace_fill_from_ordinary_prefill(pair, caches):
    _, receiver = pair
    expected = receiver_prefill(receiver, caches[:1], "recompute:0-2")
    ws = SuffixWorkspace(receiver, batch=1, capacity=11, suffix=4)
    ws.fill(expected)
    tails = [torch.tensor([5, 6, 7, 8])]
    got = SuffixRunner(receiver, ws)(expected, tails)
    torch.testing.assert_close(got, tail_logits(receiver, expected, tails)[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(DroidSpeakError, match="larger bucket"):
        SuffixWorkspace(receiver, batch=1, capacity=8, suffix=4).fill(expected)


def test_exactness_program_runs_on_cpu():
    """The GPU check's exactness program, on CPU: every check runs (no graphs here) and passes."""
    result = run_checks("cpu", log=lambda line: None)
    assert [c["name"] for c in result["checks"] if not c["passed"]] == []
    assert len(result["checks"]) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA streams, events and graphs need a GPU")
def test_cuda_pipelined_matches_unpipelined():
    """Pinned host store, all plans and strategies, graph replays (3 calls), and recovery from failed captures."""
    result = run_checks("cuda", log=lambda line: None)
    assert result["passed"], [c for c in result["checks"] if not c["passed"]]
