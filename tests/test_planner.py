"""The serving planner (droidspeak.serve.planner): its latency model and the plan it picks per batch, and the line
fit the modelled serving loop calibrates on."""

from __future__ import annotations

import pytest

from droidspeak.serve import AdaptivePlanner, LatencyModel, PlanOption, fit_line

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


def test_fit_line():
    assert fit_line([(1, 2.0), (2, 3.0), (4, 5.0)]) == pytest.approx((1.0, 1.0))
    assert fit_line([(2, 4.0)]) == (0.0, 2.0)
    assert fit_line([(1, 3.0), (2, 1.0)]) == (2.0, 0.0)  # noise never makes bigger batches cheaper
