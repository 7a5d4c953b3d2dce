import pytest

from droidspeak.engine.plan import RecomputePlan, format_plan, layer_groups, parse_plan, prefill_cost
from droidspeak.errors import PlanError


@pytest.mark.parametrize(
    "text",
    [
        "full_prefill",
        "full_reuse",
        "recompute:0-3",
        "recompute:0-3+10-11",
        "recompute:5-5",
        "cacheblend:0.15",
        "cacheblend:0.15@4",
        "profile:p.json@0.01",
    ],
)
def test_plan_syntax_round_trips(text):
    assert format_plan(parse_plan(text)) == text


def test_recompute_groups_are_sorted_and_single_layers_allowed():
    plan = parse_plan("recompute:10-11+0-3+7")
    assert plan.groups == ((0, 3), (7, 7), (10, 11))
    assert plan.recomputed_layers == (0, 1, 2, 3, 7, 10, 11)
    assert plan.e_layers == (7, 10)  # a group starting at 0 needs embeddings only
    assert plan.transitions == 2


def test_profile_default_tolerance_is_five_percent():
    plan = parse_plan("profile:/tmp/x.json")
    assert plan.profile_path == "/tmp/x.json" and plan.tolerance == 0.05


@pytest.mark.parametrize(
    "text, message",
    [
        ("recompute:3-1", "start <= end"),
        ("recompute:0-3+2-5", "overlap"),
        ("recompute:a-b", "not a layer range"),
        ("recompute:", "unknown plan"),
        ("partial", "unknown plan"),
        ("cacheblend:1.5", "[0, 1]"),
        ("cacheblend:lots", "token fraction"),
        ("cacheblend:0.2@x", "check layer after .@. is a layer index"),
        ("profile:x.json@high", "tolerance"),
        ("bogus:1", "unknown plan kind"),
    ],
)
def test_malformed_plans_fail_with_a_clear_message(text, message):
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_plan(text)


def test_out_of_range_names_the_layer_count():
    with pytest.raises(PlanError, match="6 layers"):
        parse_plan("recompute:4-6", num_layers=6)


def test_cost_counts_layer_tokens_transitions_and_bytes():
    plan = parse_plan("recompute:0-1+4-4")
    cost = prefill_cost(plan, num_layers=8, context_tokens=100, kv_bytes_per_token_layer=10, e_bytes_per_token=7)
    assert cost.recomputed_layers == 3
    assert cost.recomputed_layer_tokens == 300
    assert cost.compute_fraction == pytest.approx(3 / 8)
    assert cost.transitions == 1
    assert cost.e_bytes == 100 * 7
    assert cost.kv_bytes == 5 * 100 * 10
    full = prefill_cost(
        parse_plan("full_prefill"), num_layers=8, context_tokens=100, kv_bytes_per_token_layer=10, e_bytes_per_token=7
    )
    assert (full.compute_fraction, full.bytes_to_load) == (1.0, 0)


def test_unresolved_plans_cannot_reach_the_engine():
    with pytest.raises(PlanError, match="resolved"):
        layer_groups(RecomputePlan("cacheblend", token_fraction=0.1), 8)
