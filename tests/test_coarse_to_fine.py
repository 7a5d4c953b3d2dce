"""The coarse-to-fine group search: the exhaustive fine search's choice at a fraction of its plans where quality is
monotone in the recomputed layers, and what it misses where it is not."""

from __future__ import annotations

import pytest

from droidspeak.engine.plan import parse_plan
from droidspeak.profile.candidates import contiguous_groups, single_group_plans
from droidspeak.profile.choice import choose_plan
from droidspeak.profile.coarse_to_fine import (
    coarse_hull,
    coarse_to_fine,
    fine_candidates,
    hull_misses,
    nested_inversions,
    replay,
)
from droidspeak.profile.points import ProfilePoint

L = 30


def covered(plan: str, layers: range) -> float:
    """The share of ``layers`` the plan recomputes: monotone in the recomputed set."""
    parsed = parse_plan(plan, L)
    if parsed.kind == "full_prefill":
        return 1.0
    recomputed = {layer for s, e in parsed.groups for layer in range(s, e + 1)}
    return len(recomputed & set(layers)) / len(layers)


def search(quality, coarse=6, fine=2, layers=L):
    scored: list[str] = []

    def evaluate(plans):
        scored.extend(plans)
        return [ProfilePoint.from_plan(p, quality(p), num_layers=layers) for p in plans]

    points = coarse_to_fine(evaluate, lambda p: p.quality >= 0.95, layers, coarse=coarse, fine=fine)
    exhaustive = [ProfilePoint.from_plan(p, quality(p), num_layers=layers) for p in single_group_plans(layers, fine)]
    return choose_plan(points, 1.0, 0.05), choose_plan(exhaustive, 1.0, 0.05), scored, len(exhaustive)


@pytest.mark.parametrize("critical", [range(11, 17), range(0, 3), range(25, 30), range(8, 22), range(14, 15)])
def test_where_quality_is_monotone_it_picks_the_exhaustive_choice_from_fewer_plans(critical):
    chosen, exhaustive, scored, everything = search(lambda plan: covered(plan, critical))
    assert chosen == exhaustive
    assert len(scored) == len(set(scored)) and len(scored) < everything / 2


def test_groups_as_long_as_the_coarse_choice_are_scored_so_ties_break_as_in_the_exhaustive_search():
    candidates = fine_candidates({(6, 17)}, 6, L, coarse=6, fine=2)
    assert (10, 15) in candidates and (8, 13) in candidates  # 6 layers under the 12-layer hull 6-17
    assert all(e - s + 1 <= 6 and coarse_hull((s, e), 6, L) == (6, 17) for s, e in candidates)
    assert [e - s for s, e in candidates] == sorted(e - s for s, e in candidates)  # shortest first


def test_a_last_block_shorter_than_the_coarse_one():
    layers = 28  # coarse blocks of 6: ..., 24-27
    chosen, exhaustive, scored, everything = search(lambda plan: covered_of(plan, range(25, 27), layers),
                                                    layers=layers)
    assert chosen == exhaustive == "recompute:24-27" and len(scored) < everything


def covered_of(plan: str, layers: range, num_layers: int) -> float:
    parsed = parse_plan(plan, num_layers)
    if parsed.kind == "full_prefill":
        return 1.0
    return len({x for s, e in parsed.groups for x in range(s, e + 1)} & set(layers)) / len(layers)


def test_full_reuse_accepted_ends_the_search_at_the_coarse_stage():
    chosen, exhaustive, scored, _ = search(lambda plan: 1.0)
    assert chosen == exhaustive == "full_reuse" and scored == single_group_plans(L, 6)


def test_where_a_group_scores_better_than_its_hull_it_can_miss_the_exhaustive_choice():
    def quality(plan):  # recomputing 10-17 alone is good, any more of the model is bad: not monotone
        return 1.0 if plan in ("recompute:10-17", "full_prefill") else 0.0

    chosen, exhaustive, _, _ = search(quality)
    assert exhaustive == "recompute:10-17" and chosen == "full_prefill"


def test_the_hull_and_the_granularities():
    assert coarse_hull((10, 17), 6, L) == (6, 17) and coarse_hull((24, 29), 6, L) == (24, 29)
    assert coarse_hull((0, 1), 4, L) == (0, 3) and coarse_hull((28, 29), 4, L) == (28, 29)
    with pytest.raises(ValueError, match="multiple of the fine one"):
        coarse_to_fine(lambda plans: [], lambda p: True, L, coarse=5, fine=2)


def test_a_profile_job_refuses_an_unknown_search_or_a_coarse_stage_that_does_not_nest():
    from droidspeak.errors import DroidSpeakError
    from droidspeak.sweep.profile_job import check_search

    check_search("exhaustive", 2, None)
    check_search("coarse_to_fine", 2, 6)
    with pytest.raises(DroidSpeakError, match="search=greedy: one of exhaustive, coarse_to_fine"):
        check_search("greedy", 2, None)
    for coarse in (None, 2, 5):
        with pytest.raises(DroidSpeakError, match="needs coarse_granularity"):
            check_search("coarse_to_fine", 2, coarse)
    with pytest.raises(DroidSpeakError, match="drop max_group_layers=6"):
        check_search("coarse_to_fine", 2, 6, max_group_layers=6)


def test_a_steered_profile_chooses_only_with_the_rule_and_tolerance_that_steered_it():
    from droidspeak.profile.profile_file import Profile, ProfileError
    from droidspeak.profile.question_budget import budget_choices

    points = [ProfilePoint.from_plan(p, q, num_layers=L, per_input=[q] * 4)
              for p, q in (("full_reuse", 0.5), ("recompute:10-19", 1.0))]
    profile = Profile(receiver="r", sender="s", task="t", metric="f1", num_layers=L, reference_quality=1.0,
                      reference_per_input=[1.0] * 4, points=points, n_samples=4, inputs=list("abcd"),
                      choice_rule="point",
                      extra={"search": {"kind": "coarse_to_fine", "rule": "point", "tolerance": 0.05}})
    profile.check_choice(0.05)
    for tolerance, rule in ((0.1, None), (0.05, "bootstrap95")):
        with pytest.raises(ProfileError, match="steered by rule point at tolerance 0.05"):
            profile.check_choice(tolerance, rule)
    with pytest.raises(ProfileError, match="search=exhaustive"):
        budget_choices(profile, [2], draws=1, rules=["point"], tolerance=0.05)


def _exhaustive(quality, fine=2, layers=L):
    return [ProfilePoint.from_plan(p, quality(p), num_layers=layers) for p in single_group_plans(layers, fine)]


def test_replayed_from_an_exhaustive_profile_it_scores_what_the_live_search_scores():
    def quality(plan):
        return covered(plan, range(11, 17))

    def evaluate(plans):  # a live search: each plan scored as it is asked for
        return [ProfilePoint.from_plan(p, quality(p), num_layers=L) for p in plans]

    live = [p.plan for p in coarse_to_fine(evaluate, lambda p: p.quality >= 0.95, L, coarse=6, fine=2)]
    replayed = [p.plan for p in replay(_exhaustive(quality), lambda p: p.quality >= 0.95, L, coarse=6, fine=2)]
    assert replayed == live and len(replayed) < len(_exhaustive(quality))
    with pytest.raises(ValueError, match="exhaustive profile aligned to 2"):  # a coarser profile lacks the fine plans
        replay(_exhaustive(quality, fine=6), lambda p: p.quality >= 0.95, L, coarse=6, fine=2)


def test_the_premise_is_counted_where_a_group_beats_its_hull():
    def spiky(plan):  # recomputing 10-17 alone is good, any more of the model (but all of it) is bad
        return 1.0 if plan in ("recompute:10-17", "full_prefill") else 0.0

    accepts = lambda p: p.quality >= 0.95  # noqa: E731
    assert hull_misses(_exhaustive(spiky), accepts, L, 6) == [("recompute:10-17", "recompute:6-17")]
    assert hull_misses(_exhaustive(lambda p: covered(p, range(11, 17))), accepts, L, 6) == []
    inverted, nested = nested_inversions(_exhaustive(spiky), L)
    holding = [(s, e) for s, e in contiguous_groups(L, 2) if s <= 10 and 17 <= e and (s, e) not in ((10, 17), (0, 29))]
    assert inverted == len(holding) and nested > inverted  # each larger group but the whole model scores lower
    assert nested_inversions(_exhaustive(lambda p: covered(p, range(11, 17))), L)[0] == 0
