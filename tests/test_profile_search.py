"""Profiling search, frontier, plan choice and the profile file, on synthetic tables with known optima."""

from __future__ import annotations

import json
import math
import random

import pytest

from droidspeak.engine.plan import parse_plan
from droidspeak.errors import PlanError
from droidspeak.profile import (
    LayerSensitivity,
    Profile,
    ProfileError,
    ProfilePoint,
    beam_search,
    best_by_budget,
    choose_plan,
    contiguous_groups,
    critical_layers,
    estimate_transition_penalty,
    frontier_difference,
    harm_from_single_layer,
    kendall,
    load_profile,
    pareto_frontier,
    plan_layers,
    rank_agreement,
    resolve_profile_plan,
    save_profile,
    search_additive,
    search_groups,
    single_group_plans,
    single_layer_plan,
    spearman,
    transition_plans,
)

L = 8


def point(plan: str, quality: float, num_layers: int = L, **kw) -> ProfilePoint:
    return ProfilePoint.from_plan(plan, quality, num_layers=num_layers, **kw)


def additive_quality(plan: str, harm, penalty: float, reference: float) -> float:
    """Ground truth for the synthetic tests: reference - Σ harm of reused layers - penalty × transitions."""
    parsed = parse_plan(plan, len(harm))
    recomputed = set(range(len(harm))) if parsed.kind == "full_prefill" else set(parsed.recomputed_layers)
    transitions = 0 if parsed.kind == "full_prefill" else parsed.transitions
    return reference - sum(h for layer, h in enumerate(harm) if layer not in recomputed) - penalty * transitions


def brute_force(harm, penalty: float, max_groups: int | None = None) -> dict[int, float]:
    """Best additive objective per exact budget over every subset of layers (2^L plans)."""
    n = len(harm)
    best: dict[int, float] = {}
    for mask in range(1 << n):
        layers = [i for i in range(n) if mask >> i & 1]
        starts = [i for i in layers if i == 0 or not mask >> (i - 1) & 1]
        if max_groups is not None and len(starts) > max_groups:
            continue
        value = sum(harm[i] for i in layers) - penalty * sum(1 for s in starts if s > 0)
        k = len(layers)
        best[k] = max(best.get(k, -math.inf), value)
    return best


# ---- candidates ----------------------------------------------------------------------------------------
def test_contiguous_group_counts_match_paper_granularity_saving():
    assert len(contiguous_groups(32)) == 32 * 33 // 2
    assert len(contiguous_groups(32, 2)) == 16 * 17 // 2  # ~3.9x fewer profiling runs
    groups = contiguous_groups(5, 2)
    assert groups == [(0, 1), (0, 3), (0, 4), (2, 3), (2, 4), (4, 4)]
    assert (0, 31) in contiguous_groups(32, 4)
    with pytest.raises(ValueError):
        contiguous_groups(8, 0)


def test_single_group_plans_are_valid_and_bracketed_by_endpoints():
    plans = single_group_plans(L)
    assert plans[0] == "full_reuse" and plans[-1] == "full_prefill"
    assert len(plans) == len(set(plans)) == L * (L + 1) // 2 + 1
    for plan in plans:
        parse_plan(plan, L)


def test_single_layer_plan_reuses_exactly_one_layer():
    assert single_layer_plan(0, 4) == "recompute:1-3"
    assert single_layer_plan(2, 4) == "recompute:0-1+3-3"
    assert single_layer_plan(3, 4) == "recompute:0-2"
    for layer in range(L):
        assert plan_layers(single_layer_plan(layer, L), L)[0] == L - 1
    with pytest.raises(PlanError):
        single_layer_plan(L, L)


def test_transition_plans_hold_layers_fixed_and_vary_transitions():
    plans = transition_plans(32, 12, 4, granularity=2, per_count=5)
    assert sorted(plans) == [0, 1, 2, 3, 4]
    assert plans[0] == ["recompute:0-11"]  # the only 0-transition layout
    for t, by_count in plans.items():
        assert 1 <= len(by_count) <= 5 and len(set(by_count)) == len(by_count)
        for plan in by_count:
            assert plan_layers(plan, 32) == (12, t)
            assert all(s % 2 == 0 and (e + 1) % 2 == 0 for s, e in parse_plan(plan, 32).groups)  # aligned
    assert transition_plans(32, 12, 4, granularity=2, per_count=5) == plans  # seeded


def test_transition_plans_enumerate_a_small_space_completely():
    plans = transition_plans(8, 4, 4, per_count=100)
    assert sum(len(v) for v in plans.values()) == math.comb(8, 4)  # every 4-of-8 layout, bucketed by count
    assert {t: len(v) for t, v in plans.items()} == {0: 1, 1: 16, 2: 36, 3: 16, 4: 1}


def test_transition_plans_can_hold_the_critical_layers_fixed():
    plans = transition_plans(8, 4, 4, per_count=100, include=[0, 1])
    assert sum(len(v) for v in plans.values()) == math.comb(6, 2)  # 0 and 1, plus any 2 of the other 6
    for by_count in plans.values():
        assert all({0, 1} <= set(parse_plan(p, 8).recomputed_layers) for p in by_count)
    assert 4 not in plans  # four 1-layer groups off layer 0 cannot include layer 0


# ---- frontier and choice ---------------------------------------------------------------------------------
def test_pareto_frontier_is_monotone_and_drops_dominated_points():
    points = [
        point("full_reuse", 0.30),
        point("recompute:3-3", 0.50),
        point("recompute:5-5", 0.45),  # same layers, worse
        point("recompute:2-3", 0.48),  # more layers, worse than 3-3: dominated
        point("recompute:2-4", 0.70),
        point("recompute:1-2+4-4", 0.70),  # tie at 3 layers: more transitions loses
        point("recompute:0-5", math.nan),  # failed evaluation: ignored
        point("full_prefill", 0.80),
    ]
    front = pareto_frontier(points)
    assert [p.plan for p in front] == ["full_reuse", "recompute:3-3", "recompute:2-4", "full_prefill"]
    assert all(a.quality < b.quality and a.recomputed_layers < b.recomputed_layers for a, b in zip(front, front[1:]))
    assert best_by_budget(points)[2].plan == "recompute:2-3"


FRONTIER = [
    point("full_reuse", 0.40),
    point("recompute:3-3", 0.60),
    point("recompute:2-4", 0.76),
    point("recompute:1-5", 0.79),
    point("recompute:0-5", 0.80),
    point("full_prefill", 0.80),
]


@pytest.mark.parametrize(
    ("tolerance", "expected"),
    [
        (0.05, "recompute:2-4"),  # target 0.76: met exactly (boundary counts as within)
        (0.049, "recompute:1-5"),  # target 0.7608
        (0.25, "recompute:3-3"),  # target 0.60, exactly
        (0.5, "full_reuse"),
        (0.0, "recompute:0-5"),  # fewest layers reaching the reference itself
    ],
)
def test_choose_plan_picks_fewest_layers_within_tolerance(tolerance, expected):
    assert choose_plan(FRONTIER, 0.80, tolerance) == expected
    assert choose_plan(list(reversed(FRONTIER)), 0.80, tolerance) == expected  # order-free


def test_choose_plan_falls_back_when_nothing_qualifies():
    points = [point("full_reuse", 0.2), point("recompute:2-4", 0.5)]
    assert choose_plan(points, 0.8, 0.05) == "full_prefill"
    assert choose_plan(points, 0.8, 0.05, fallback="best") == "recompute:2-4"
    assert choose_plan([], 0.8, 0.05) == "full_prefill"


def test_choose_plan_handles_negative_reference_and_bad_tolerance():
    points = [point("full_reuse", -2.5), point("recompute:2-4", -2.05), point("full_prefill", -2.0)]
    assert choose_plan(points, -2.0, 0.05) == "recompute:2-4"  # target -2.1, not -1.9
    with pytest.raises(ValueError):
        choose_plan(points, -2.0, 1.0)
    with pytest.raises(ValueError):
        choose_plan(points, None, 0.05)


def test_critical_layers_threshold_is_strict_relative_drop():
    table = {0: 0.80, 1: 0.71, 2: 0.72, 3: 0.40, 4: 0.79}
    assert critical_layers(table, 0.80) == [1, 3]  # 2 drops exactly 10%: not critical
    assert critical_layers([0.80, 0.71, 0.72, 0.40, 0.79], 0.80, threshold=0.05) == [1, 2, 3]


# ---- model-based multi-group search ---------------------------------------------------------------------
PAPER_HARM = [0.0] * 32
for _layer in (16, 17, 18, 20, 25, 26, 27):  # the paper's Fig. 10 example: critical 16-18, 20, 25-27
    PAPER_HARM[_layer] = 0.1


def test_dp_with_high_transition_cost_merges_scattered_critical_layers_into_one_group():
    results = search_additive(PAPER_HARM, transition_penalty=0.15, reference_quality=1.0)
    assert results[12].plan == "recompute:16-27"
    assert results[12].transitions == 1
    assert results[12].predicted_quality == pytest.approx(1.0 - 0.15)


def test_dp_without_transition_cost_recomputes_exactly_the_critical_layers():
    results = search_additive(PAPER_HARM, transition_penalty=0.0, reference_quality=1.0)
    assert results[7].plan == "recompute:16-18+20-20+25-27"
    assert results[7].predicted_quality == pytest.approx(1.0)
    assert results[0].plan == "full_reuse" and results[32].plan == "full_prefill"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_groups", [None, 1, 2])
def test_dp_matches_brute_force_on_random_tables(seed, max_groups):
    rng = random.Random(seed)
    harm = [rng.choice([0.0, rng.random()]) for _ in range(10)]
    penalty = rng.random() * 0.3
    truth = brute_force(harm, penalty, max_groups)
    results = search_additive(harm, penalty, max_groups=max_groups)
    assert sorted(results) == sorted(truth)
    for k, result in results.items():
        assert result.score == pytest.approx(truth[k]), k
        assert result.recomputed_layers == k == plan_layers(result.plan, 10)[0]
        assert max_groups is None or len(result.groups) <= max_groups


def test_dp_respects_granularity_and_general_group_values():
    results = search_additive([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0, granularity=2)
    assert sorted(results) == [0, 2, 4, 6, 8]
    assert results[2].plan == "recompute:2-3"
    assert all(s % 2 == 0 and e % 2 == 1 for r in results.values() for s, e in r.groups)
    odd = search_additive([0.0] * 7, 0.0, granularity=2)  # the last block (layer 6) stands alone
    assert sorted(odd) == list(range(8)) and odd[1].plan == "recompute:6-6"
    # a non-additive group value: only the group 3-5 is worth anything
    results = search_groups(8, lambda s, e: 1.0 if (s, e) == (3, 5) else -0.01 * (e - s + 1))
    assert results[3].plan == "recompute:3-5" and results[3].score == pytest.approx(1.0)


def test_harm_calibration_reproduces_both_endpoints():
    table = {0: 0.8, 1: 0.7, 2: 0.9, 3: 0.6}  # layer 2 looks better than the reference: noise, clipped
    harm = harm_from_single_layer(table, 0.85, full_reuse_quality=0.25)
    assert harm[2] == 0.0
    assert sum(harm) == pytest.approx(0.85 - 0.25)
    assert harm[3] > harm[1] > harm[0]


def test_transition_penalty_estimate_recovers_the_slope():
    pts = [
        ProfilePoint(f"p{k}-{t}", k, 0.9 - 0.02 * k - 0.05 * t, transitions=t) for k in (4, 8) for t in (0, 1, 2, 3)
    ]
    assert estimate_transition_penalty(pts) == pytest.approx(0.05)
    assert estimate_transition_penalty([ProfilePoint("a", 1, 0.5, transitions=1)]) == 0.0


# ---- evaluation-driven search ---------------------------------------------------------------------------
def test_beam_search_finds_additive_optimum_with_cached_budgeted_evaluations():
    harm = [0.0, 0.3, 0.0, 0.5, 0.1, 0.0, 0.0, 0.2]
    calls: list[str] = []

    def score(plan: str) -> float:
        calls.append(plan)
        return additive_quality(plan, harm, 0.0, 1.0)

    points = beam_search(score, L, max_evals=1000, beam_width=2)
    assert len(calls) == len(set(calls)) == len(points)  # each plan scored once
    best = best_by_budget(points)
    truth = search_additive(harm, 0.0, reference_quality=1.0)
    for k in range(L + 1):
        assert best[k].quality == pytest.approx(truth[k].predicted_quality), k

    calls.clear()
    limited = beam_search(score, L, max_evals=5)
    assert len(limited) == len(calls) == 5


def test_beam_search_prior_cuts_evaluations():
    harm = [0.0, 0.3, 0.0, 0.5, 0.1, 0.0, 0.0, 0.2]
    full = beam_search(lambda p: additive_quality(p, harm, 0.0, 1.0), L, max_evals=1000)
    guided = beam_search(
        lambda p: additive_quality(p, harm, 0.0, 1.0), L, max_evals=1000, prior=harm, candidates_per_step=2
    )
    assert len(guided) < len(full)
    assert best_by_budget(guided)[4].quality == pytest.approx(1.0)


# ---- rankings and frontier comparison -------------------------------------------------------------------
def test_rank_correlations_known_values_and_scipy_agreement():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    x = [rng.randint(0, 5) for _ in range(30)]  # plenty of ties
    y = [v + rng.randint(-2, 2) for v in x]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_rank_agreement_over_common_plans():
    proxy = {"a": -0.1, "b": -0.5, "c": -0.9, "only_proxy": 0.0}
    task = {"a": 0.8, "b": 0.6, "c": 0.3}
    out = rank_agreement(proxy, task)
    assert out["n"] == 3 and out["same_best"] is True
    assert out["spearman"] == pytest.approx(1.0) and out["kendall"] == pytest.approx(1.0)


def test_frontier_difference_normalises_by_reference():
    a = [point("full_reuse", 0.4), point("recompute:2-4", 0.76), point("full_prefill", 0.8)]
    b = [ProfilePoint(p.plan, p.recomputed_layers, p.quality / 2) for p in a]
    assert frontier_difference(a, b, L, reference_a=0.8, reference_b=0.4)["max"] == pytest.approx(0.0)
    assert frontier_difference(a, b, L)["max"] == pytest.approx(0.4)


# ---- profile file ---------------------------------------------------------------------------------------
RECEIVER = {"weights": "a" * 64, "adapter": None, "dtype": "float32"}
SENDER = {"weights": "b" * 64, "adapter": "c" * 64, "dtype": "float32"}
PAIR = {"receiver": RECEIVER, "sender": SENDER}


def make_profile(num_layers: int = L, **overrides) -> Profile:
    harm = [0.0] * num_layers
    harm[2], harm[3], harm[5] = 0.2, 0.15, 0.05
    reference = 0.8
    points = [
        point(plan, additive_quality(plan, harm, 0.02, reference), num_layers, per_input=[0.5, 1.0])
        for plan in single_group_plans(num_layers)
    ]
    fields = dict(
        receiver="ft_a",
        sender="ft_b",
        receiver_fingerprint="aaa",
        sender_fingerprint="bbb",
        receiver_identity=RECEIVER,
        sender_identity=SENDER,
        task="hotpot_like",
        metric="f1",
        num_layers=num_layers,
        reference_quality=reference,
        reference_per_input=[0.6, 1.0],
        points=points,
        n_samples=2,
        inputs=["doc-0", "doc-1"],
        single_layer=[
            LayerSensitivity(i, reference - harm[i], (0.6 - harm[i], 1.0 - harm[i])) for i in range(num_layers)
        ],
        timing={"total_seconds": 1.5, "evaluations": len(points)},
    )
    fields.update(overrides)
    return Profile(**fields)


def test_profile_roundtrip_and_chosen_plan(tmp_path):
    prof = make_profile()
    path = save_profile(tmp_path / "sub" / "pair.json", prof)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and raw["pair"]["name"] == "ft_a<-ft_b"
    assert [p["plan"] for p in raw["frontier"]] == [p.plan for p in prof.frontier]
    loaded = load_profile(path)
    assert loaded.points == prof.points and loaded.single_layer == prof.single_layer
    assert loaded.critical_layers() == [2, 3]
    # target 0.76: recomputing 2-3 leaves harm 0.05 + one transition 0.02 -> 0.73; 2-5 -> 0.78
    assert loaded.choose(0.05) == "recompute:2-5"
    resolve = lambda plan: resolve_profile_plan(plan, L, **PAIR).plan  # noqa: E731
    assert resolve(parse_plan(f"profile:{path}")) == parse_plan("recompute:2-5")
    assert resolve(f"profile:{path}@0.2") == parse_plan("recompute:2-3")
    assert resolve(f"profile:{path}@0").kind in ("recompute", "full_prefill")
    resolved = resolve_profile_plan(f"profile:{path}@0.2", L, **PAIR)
    assert resolved.record() == {"path": str(path), "pair": "ft_a<-ft_b", "task": "hotpot_like", "tolerance": 0.2,
                                 "plan": "recompute:2-3", "foreign_pair": False, "rule": "point", "level": None,
                                 "resamples": None, "questions": 2}  # no rule recorded: chosen by the point rule
    assert resolved.measured_dtype == "float32"  # the receiver's dtype when it was measured (a server compares)


def test_resolve_rejects_a_profile_for_another_layer_count(tmp_path):
    path = save_profile(tmp_path / "p.json", make_profile())
    with pytest.raises(ProfileError, match="8 layers.*this model has 12 layers"):
        resolve_profile_plan(parse_plan(f"profile:{path}"), 12, **PAIR)
    with pytest.raises(PlanError):
        resolve_profile_plan(parse_plan("recompute:1-2"), L, **PAIR)


@pytest.mark.parametrize("role, field", [("receiver", "weights"), ("receiver", "adapter"), ("sender", "weights"),
                                         ("sender", "dtype")])
def test_a_profile_of_another_pair_is_refused_naming_both_unless_allowed(tmp_path, role, field):
    path = save_profile(tmp_path / "p.json", make_profile())
    here = {"receiver": dict(RECEIVER), "sender": dict(SENDER)}
    here[role][field] = "something-else"
    with pytest.raises(ProfileError, match=rf"ft_a<-ft_b(.|\n)*{role} {field}: profile .*, here something-el"):
        resolve_profile_plan(f"profile:{path}", L, **here)
    allowed = resolve_profile_plan(f"profile:{path}", L, **here, allow_foreign=True)
    assert allowed.foreign and allowed.record()["foreign_pair"] is True
    assert allowed.plan == resolve_profile_plan(f"profile:{path}", L, **PAIR).plan


def test_a_profile_without_identity_is_refused(tmp_path):
    path = save_profile(tmp_path / "p.json", make_profile(receiver_identity=None, sender_identity=None))
    with pytest.raises(ProfileError, match="records no model identity"):
        resolve_profile_plan(f"profile:{path}", L, **PAIR)
    assert resolve_profile_plan(f"profile:{path}", L, **PAIR, allow_foreign=True).foreign


def test_load_profile_errors_are_clear(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.json")
    good = save_profile(tmp_path / "p.json", make_profile())
    text = good.read_text()

    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(ProfileError, match="corrupt or truncated"):
        load_profile(truncated)

    def variant(name: str, edit) -> str:
        data = json.loads(text)
        edit(data)
        (tmp_path / name).write_text(json.dumps(data))
        return str(tmp_path / name)

    with pytest.raises(ProfileError, match="schema version 99"):
        load_profile(variant("v99.json", lambda d: d.update(schema_version=99)))
    with pytest.raises(ProfileError, match="not a droidspeak profile"):
        load_profile(variant("other.json", lambda d: d.update(schema="something")))
    with pytest.raises(ProfileError, match="missing field 'metric'"):
        load_profile(variant("nometric.json", lambda d: d.pop("metric")))
    with pytest.raises(ProfileError, match="out of range"):
        load_profile(
            variant(
                "range.json",
                lambda d: d["points"].append({"plan": "recompute:7-9", "recomputed_layers": 3, "quality": 0.1}),
            )
        )
    with pytest.raises(ProfileError, match="says 5 recomputed layers"):
        load_profile(
            variant(
                "count.json",
                lambda d: d["points"].append({"plan": "recompute:1-2", "recomputed_layers": 5, "quality": 0.1}),
            )
        )
    with pytest.raises(ProfileError, match="per-input values"):
        load_profile(variant("inputs.json", lambda d: d.update(inputs=["only-one"])))
    assert issubclass(ProfileError, PlanError)


def test_save_refuses_non_finite_quality(tmp_path):
    prof = make_profile()
    prof.points.append(ProfilePoint("recompute:1-1", 1, math.inf))
    with pytest.raises(ProfileError, match="quality inf"):
        save_profile(tmp_path / "p.json", prof)
    assert not (tmp_path / "p.json").exists()
