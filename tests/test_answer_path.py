"""The answer-path timing: both paths run on the same context, the ratios and the compute-only limit add up."""

from __future__ import annotations

from droidspeak.bench.answer_path import markdown, time_plan
from helpers import random_ids


def test_a_plan_is_timed_against_full_prefill_on_one_context(llama_pair):
    sender, receiver = llama_pair
    context, query = random_ids([40, 5], seed=3)
    row = time_plan(
        receiver, sender, context, query, "recompute:1-2", pair="tuned<-base", task="t", repeats=2, warmup=1
    )
    assert row.context_tokens == 40 and row.recomputed_layers == 2 and row.num_layers == 6
    assert row.compute_limit == 3.0 and row.repeats == 2
    assert row.full_prefill_ms > 0 and row.plan_prefill_ms > 0 and row.plan_answer_ms > row.plan_prefill_ms / 10
    # the speedup is the ratio of the unrounded medians; the ms fields are rounded to 0.1 ms (a tiny model's are ~1 ms)
    full, plan = row.full_prefill_ms, row.plan_prefill_ms
    assert (full - 0.05) / (plan + 0.05) - 1e-3 <= row.prefill_speedup <= (full + 0.05) / max(plan - 0.05, 1e-9) + 1e-3
    reuse = time_plan(receiver, sender, context, query, "full_reuse", pair="tuned<-base", task="t", repeats=1, warmup=0)
    assert reuse.compute_limit is None
    everything = time_plan(
        receiver, sender, context, query, "full_prefill", pair="tuned<-base", task="t", repeats=1, warmup=0
    )
    assert everything.recomputed_layers == 6 and everything.compute_limit == 1.0
    table = markdown([row.to_dict(), reuse.to_dict()])
    assert "`recompute:1-2` | 2/6 | 40 |" in table and "| ∞ |" in table
