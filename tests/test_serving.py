"""Serving: scheduler invariants, metrics, plan choice, and the serving benchmark's CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from droidspeak.serve import (
    AdaptivePlanner,
    FixedPlanner,
    LatencyModel,
    ModelledExecutor,
    PlanOption,
    Scheduler,
    fit_line,
    poisson_requests,
    summarize,
    throughput_at_slo,
)

ROOT = Path(__file__).parents[1]
OPTIONS = [PlanOption("full_prefill", 1.0, 32), PlanOption("recompute:8-23", 1.0, 16, 8192, 16 * 131072),
           PlanOption("recompute:8-15", 0.99, 8, 8192, 24 * 131072), PlanOption("full_reuse", 0.6, 0, 0, 32 * 131072)]
LATENCY = LatencyModel(
    prefill={
        "full_prefill": (0.0, 0.26),
        "recompute:8-23": (0.005, 0.13),
        "recompute:8-15": (0.005, 0.065),
        "full_reuse": (0.005, 0.004),
    },
    suffix=(0.004, 0.001),
    decode=(0.006, 0.0005, 0.0),
    options={o.plan: o for o in OPTIONS},
)


def run(planner, qps=3.0, count=200, bandwidth=None, max_batch=4, seed=0):
    requests = poisson_requests(
        qps, count=count, receivers=["a", "b", "c"], contexts=[8192] * 4, output_tokens=5, seed=seed
    )
    scheduler = Scheduler(ModelledExecutor(LATENCY, bandwidth), planner, max_batch=max_batch, bandwidth_gbps=bandwidth)
    return requests, scheduler, scheduler.run(requests)


def test_poisson_arrivals_have_the_asked_rate():
    requests = poisson_requests(5.0, count=4000, receivers=["a"], contexts=[10], seed=1)
    assert all(a.arrival < b.arrival for a, b in zip(requests, requests[1:]))
    assert requests[-1].arrival / len(requests) == pytest.approx(1 / 5.0, rel=0.06)
    assert poisson_requests(5.0, count=10, receivers=["a"], contexts=[10], seed=1) == requests[:10]


@pytest.mark.parametrize("planner", [FixedPlanner("full_prefill"), FixedPlanner("recompute:8-15")])
def test_scheduler_invariants(planner):
    requests, scheduler, records = run(planner)
    assert [r.request for r in records] == requests  # every request served exactly once
    for record in records:
        assert len(record.token_times) == record.request.output_tokens
        assert record.token_times == sorted(record.token_times) and record.ttft > 0
    busy = [(b.start, b.end) for b in scheduler.log]
    assert all(s1 <= e1 <= s2 for (s1, e1), (s2, _) in zip(busy, busy[1:]))  # one device: steps never overlap
    by_rid = {r.rid: r for r in requests}
    prefilled = set()
    for batch in scheduler.log:
        receivers = {by_rid[rid].receiver for rid in batch.rids}
        assert receivers == {batch.receiver}  # a batch never mixes receivers (different weights)
        assert len(batch.rids) <= (scheduler.max_batch if batch.kind == "prefill" else scheduler.max_running)
        if batch.kind == "prefill":
            assert all(by_rid[rid].arrival <= batch.start for rid in batch.rids)  # nothing served before it arrives
            assert not prefilled & set(batch.rids)
            prefilled |= set(batch.rids)
            assert batch.end - batch.start == pytest.approx(
                LATENCY.prefill_seconds(batch.plan, len(batch.rids), 8192))
        else:
            assert set(batch.rids) <= prefilled  # decode only after prefill
    for receiver in "abc":  # first come, first served within a receiver
        mine = [r for r in records if r.request.receiver == receiver]
        firsts = [r.token_times[0] for r in sorted(mine, key=lambda r: r.request.arrival)]
        assert firsts == sorted(firsts)


def test_idle_ttft_is_one_prefill():
    _, _, records = run(FixedPlanner("full_prefill"), qps=0.01, count=20)
    for record in records:
        assert record.ttft == pytest.approx(LATENCY.prefill_seconds("full_prefill", 1, 8192))


def test_droidspeak_serves_more_within_the_slo():
    slo = 1.0
    curves = {}
    for plan in ("full_prefill", "recompute:8-15"):
        curves[plan] = [
            (qps, summarize(run(FixedPlanner(plan), qps=qps)[2], slo_ttft=slo)) for qps in (1, 2, 4, 8, 12, 16)
        ]
    full = throughput_at_slo(curves["full_prefill"], slo_ttft=slo)
    ours = throughput_at_slo(curves["recompute:8-15"], slo_ttft=slo)
    assert ours >= 3 * full > 0
    summary = curves["recompute:8-15"][0][1]
    assert {"ttft_p90", "tbt_mean", "e2e_mean", "slo_violation_rate", "throughput_rps"} <= set(summary)


def test_adaptive_planner_follows_load_and_bandwidth():
    planner = AdaptivePlanner(LATENCY, OPTIONS, min_quality=0.99, slo_ttft=1.0)
    assert all(o.quality >= 0.99 for o in planner.options)  # full_reuse is never an option
    choose = lambda **kw: planner.choose(batch=1, tokens=8192, **kw)  # noqa: E731
    assert choose(queued=5, waited=0.0, bandwidth_gbps=None) == "recompute:8-15"  # busy: cheapest
    assert choose(queued=0, waited=0.0, bandwidth_gbps=None) in (
        "full_prefill",
        "recompute:8-23",
    )  # idle: most recompute
    assert choose(queued=0, waited=0.9, bandwidth_gbps=None) == "recompute:8-15"  # idle but late: still meet the SLO
    # a slow link makes loading 24 layers of K/V dearer than recomputing: the busy choice moves to more recompute
    assert choose(queued=5, waited=0.0, bandwidth_gbps=0.5) in ("full_prefill", "recompute:8-23")
    assert LATENCY.prefill_seconds("recompute:8-15", 1, 8192, 0.5) > LATENCY.prefill_seconds("recompute:8-15", 1, 8192)


def test_adaptation_cuts_slo_violations_on_a_slow_link():
    slo = 1.0
    fixed = summarize(run(FixedPlanner("recompute:8-15"), qps=2.0, bandwidth=1.0)[2], slo_ttft=slo)
    adaptive = summarize(
        run(AdaptivePlanner(LATENCY, OPTIONS, min_quality=0.99, slo_ttft=slo), qps=2.0, bandwidth=1.0)[2], slo_ttft=slo
    )
    assert adaptive["slo_violation_rate"] < fixed["slo_violation_rate"]


def test_fit_line():
    assert fit_line([(1, 2.0), (2, 3.0), (4, 5.0)]) == pytest.approx((1.0, 1.0))
    assert fit_line([(2, 4.0)]) == (0.0, 2.0)
    assert fit_line([(1, 3.0), (2, 1.0)]) == (2.0, 0.0)  # noise never makes bigger batches cheaper


@pytest.mark.slow
def test_bench_serving_tiny_smoke(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_serving.py"), "tiny=true", "requests=30",
                          f"json={tmp_path / 'r.json'}"], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bench"] == "serving" and set(result["throughput_at_slo_rps"]) == {
        "full_prefill",
        "droidspeak",
        "adaptive",
    }
    for points in result["curves"].values():
        assert all(p["requests"] == 30 and p["ttft_p90"] > 0 for p in points)
    assert len(result["bandwidth"]) == 2 and "| mode |" in out.stdout
