"""The proxy's decision rules: how scores become a plan, how the toy family chooses a rule, and the held-out page."""

from __future__ import annotations

from pathlib import Path

import pytest

from droidspeak.figures.proxy_page import proxy_markdown, proxy_summary
from droidspeak.profile.proxy import PROXY_RULES, ProxyCase, get_rule, select_rule

TEMPLATE = Path(__file__).resolve().parents[1] / "conf" / "pages" / "proxy.md.j2"

# 4 layers; 20 answer positions: full reuse disagrees on 2 (10%), recompute:0-0 on 1 (5%), recompute:0-1 on none
SCORES = {"full_reuse": (0.90, 0.3), "recompute:0-0": (0.95, 0.1), "recompute:0-1": (1.0, 0.01)}


def test_the_point_rule_is_stricter_than_a_lenient_binomial_test():
    assert get_rule("point").choose(SCORES, 20, 0.05, 4) == "recompute:0-0"  # 95% agreement passes 1 - 0.05
    assert get_rule("binomial@0.5").choose(SCORES, 20, 0.05, 4) == "recompute:0-0"
    assert get_rule("binomial@0.05").choose(SCORES, 20, 0.05, 4) == "full_reuse"  # 2 of 20 is not significant
    assert get_rule("point").choose({"full_reuse": (0.5, 1.0)}, 20, 0.05, 4) == "full_prefill"  # nothing passes
    with pytest.raises(ValueError, match="unknown proxy rule 'binomial'"):
        get_rule("binomial")


def test_the_toy_chooses_the_rule_that_keeps_most_pairs_within_tolerance():
    # the task metric says full reuse loses 20%: only rules that refuse it stay within the tolerance
    case = ProxyCase("a<-b", SCORES, 20, 4, {"full_reuse": 0.8, "recompute:0-0": 0.97, "recompute:0-1": 1.0}, 1.0)
    rule, outcomes = select_rule([case], 0.05)
    assert rule.name == "point"  # first of the rules that pick recompute:0-0 (fewest layers among those within)
    assert len(outcomes) == len(PROXY_RULES)
    assert {o["rule"]: o["within"] for o in outcomes}["binomial@0.05"] is False


def _heldout(pair, proxy_quality):
    base = {"pair": pair, "metric": "f1", "n_samples": 4, "recomputed_fraction": 0.5}
    return [{**base, "method": "full_prefill", "plan": "full_prefill", "quality": 1.0, "per_sample": [1.0] * 4},
            {**base, "method": "task_search", "plan": "recompute:0-1", "quality": 1.0, "per_sample": [1.0] * 4},
            {**base, "method": "proxy", "plan": "full_reuse", "quality": proxy_quality,
             "per_sample": [1.0] * 3 + [4 * proxy_quality - 3]}]


def test_the_page_says_whether_the_goal_is_met():
    comparisons = [
        {
            "pair": p,
            "task": "t",
            "samples": 8,
            "proxy_contexts": 2,
            "plans": 7,
            "search_repeats": 3,
            "proxy_seconds": 1.0,
            "proxy_seconds_range": [0.9, 1.1],
            "task_group_prefill_seconds": s / 2,
            "task_seconds": s,
            "spearman_top1": 0.9,
            "task_seconds_equal_samples": s,
            "task_seconds_equal_samples_range": [s - 1, s + 1],
            "cost_ratio_equal_samples": s,
            "cost_ratio_equal_samples_range": [low, s + 1],
        }
        for p, s, low in (("x", 12.0, 11.0), ("y", 15.0, 14.0))
    ]
    toy = [{"rule": "point", "pair": "t<-s", "plan": "recompute:0-0", "within": True, "layers": 1}]
    summary = proxy_summary(_heldout("x", 1.0) + _heldout("y", 0.97), comparisons, 0.05)
    assert all(e["within"] for p in summary for e in p["entries"])
    page = proxy_markdown(summary, toy, rule="point", command="make x", tolerance=0.05, template=TEMPLATE)
    assert "is **met**" in page and "x 12.00× [11.00–13.00]" in page and "cheaper on every pair" in page
    comparisons[1]["cost_ratio_equal_samples_range"][0] = 9.0  # a run below the goal: not met, whatever the median
    page = proxy_markdown(proxy_summary(_heldout("x", 1.0) + _heldout("y", 0.97), comparisons, 0.05), toy,
                          rule="point", command="make x", tolerance=0.05, template=TEMPLATE)
    assert "is **not met**" in page
    missed = proxy_summary(_heldout("x", 1.0) + _heldout("y", 0.75), comparisons, 0.05)
    text = proxy_markdown(missed, toy, rule="point", command="make x", tolerance=0.05, template=TEMPLATE)
    assert "is **not met**" in text and "for 1 of 2 pairs" in text
