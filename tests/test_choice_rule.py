"""The choice rule: the default accepts a plan only when its one-sided 95% paired-bootstrap lower bound stays within
the tolerance; the point rule stays available by name; both are recorded in the profile and in the rows that use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from droidspeak.engine.plan import format_plan, parse_plan
from droidspeak.errors import DroidSpeakError, PlanError
from droidspeak.figures.question_budget_page import budget_summary
from droidspeak.profile import Profile, ProfileError, ProfilePoint, load_profile, resolve_profile_plan, save_profile
from droidspeak.profile.choice import CHOICE_RESAMPLES, choice_rule, choose_point
from droidspeak.profile.question_budget import BudgetChoice, budget_choices, chosen_plans, restricted
from droidspeak.stats import paired_lower_bound, simultaneous_lower_bounds
from droidspeak.sweep.config import check_values

L = 4
IDENTITY = {"weights": "a" * 64, "adapter": None, "dtype": "float32"}


def _point(plan: str, per_input: list[float]) -> ProfilePoint:
    return ProfilePoint.from_plan(plan, sum(per_input) / len(per_input), num_layers=L, per_input=per_input)


def _profile(n: int, misses: int, **fields) -> Profile:
    """The receiver answers all ``n`` questions; full reuse misses ``misses`` of them; recompute:0-1 misses none."""
    reference = [1.0] * n
    points = [_point("full_reuse", [0.0] * misses + [1.0] * (n - misses)), _point("recompute:0-1", reference)]
    return Profile(receiver="r", sender="s", task="t", metric="em", num_layers=L, reference_quality=1.0,
                   reference_per_input=reference, points=points, n_samples=n, inputs=[f"q{i}" for i in range(n)],
                   receiver_identity=IDENTITY, sender_identity=IDENTITY, **fields)


def test_the_lower_bound_is_the_low_percentile_of_paired_bootstrap_means():
    assert paired_lower_bound([1.0] * 5, [1.0] * 5, resamples=100, level=0.95) == 0.0
    bound = paired_lower_bound([0.0] + [1.0] * 19, [1.0] * 20, resamples=CHOICE_RESAMPLES, level=0.95)
    assert -0.2 < bound < -0.05 + 1e-12  # one miss in 20: the mean is -0.05, the bound below it
    with pytest.raises(ValueError, match="same questions"):
        paired_lower_bound([1.0], [1.0, 0.0], resamples=10, level=0.95)


def test_on_few_questions_the_default_refuses_what_the_point_rule_accepts():
    few = _profile(20, 1)  # full reuse: 0.95 of the receiver, on the target at 5% — by one answer of 20
    assert few.choose(0.05, rule="point") == "full_reuse"
    assert few.choose(0.05, rule="bootstrap95") == "recompute:0-1"  # the questions cannot show full reuse is within
    many = _profile(400, 4)  # 1% lost on 400 questions: the bound shows it is within 5%
    assert many.choose(0.05, rule="bootstrap95") == "full_reuse"
    lenient = choice_rule("bootstrap60")
    assert choose_point(few, tolerance=0.05, rule=lenient).plan == "full_reuse"  # a 60% bound is barely below 0.95


def test_rule_names_and_levels():
    assert choice_rule("point").level is None and choice_rule("bootstrap95").level == 0.95
    assert choice_rule().name == "bootstrap95"  # the default
    for bad in ("bootstrap50", "bootstrap5", "boot95", "Point", ""):
        with pytest.raises(PlanError, match="unknown choice rule"):
            choice_rule(bad)
    assert choice_rule("bootstrap90").record(48) == {"rule": "bootstrap90", "level": 0.9,
                                                     "resamples": CHOICE_RESAMPLES, "questions": 48}


def test_the_plan_contract_names_a_rule_after_the_tolerance():
    plan = parse_plan("profile:runs/a@b/p.json@0.1@point")
    assert (plan.profile_path, plan.tolerance, plan.rule) == ("runs/a@b/p.json", 0.1, "point")
    assert parse_plan("profile:p.json@0.05").rule is None and parse_plan("profile:p.json@bootstrap90").tolerance == 0.05
    for text in ("profile:p.json@0.05@point", "profile:p.json@0.2@bootstrap90", "profile:p.json@0.05"):
        assert format_plan(parse_plan(text)) == text
    with pytest.raises(PlanError, match="choice rule"):
        parse_plan("profile:p.json@0.05@pointy")


def test_the_profile_records_its_rule_and_a_plan_may_override_it(tmp_path):
    path = save_profile(tmp_path / "p.json", _profile(20, 1, choice_rule="bootstrap95"))
    loaded = load_profile(path)
    assert loaded.choice_rule == "bootstrap95" and loaded.choose(0.05) == "recompute:0-1"
    resolved = resolve_profile_plan(f"profile:{path}@0.05", L, receiver=IDENTITY, sender=IDENTITY)
    assert format_plan(resolved.plan) == "recompute:0-1"
    assert resolved.record()["rule"] == "bootstrap95" and resolved.record()["questions"] == 20
    by_mean = resolve_profile_plan(f"profile:{path}@0.05@point", L, receiver=IDENTITY, sender=IDENTITY)
    assert format_plan(by_mean.plan) == "full_reuse" and by_mean.record()["level"] is None
    old = save_profile(tmp_path / "old.json", _profile(20, 1))  # written before rules were recorded
    assert load_profile(old).choose(0.05) == "full_reuse"


def test_a_rule_that_needs_per_question_scores_says_so(tmp_path):
    bare = _profile(20, 1, choice_rule="bootstrap95")
    bare.reference_per_input = None
    with pytest.raises(PlanError, match="per-question scores.*point rule by name"):
        bare.choose(0.05)
    assert bare.choose(0.05, rule="point") == "full_reuse"
    path = save_profile(tmp_path / "p.json", _profile(20, 1, choice_rule="bootstrap95"))
    text = path.read_text().replace('"rule": "bootstrap95"', '"rule": "bootstrap7"')
    path.write_text(text)
    with pytest.raises(ProfileError, match="unknown choice rule 'bootstrap7'"):
        load_profile(path)


def test_a_profile_job_with_an_unknown_rule_fails_before_any_model_loads():
    with pytest.raises(DroidSpeakError, match="choice_rule=pointwise: unknown choice rule"):
        check_values(OmegaConf.create({"choice_rule": "pointwise"}))


def test_a_profile_restricted_to_some_questions_scores_them_alone():
    profile = _profile(20, 1)
    few = restricted(profile, [0, 1, 2, 3])  # the question full reuse misses is question 0
    assert few.point("full_reuse").quality == 0.75 and few.reference_quality == 1.0 and few.questions == 4
    assert few.inputs == ["q0", "q1", "q2", "q3"]
    assert restricted(profile, [5, 6]).point("full_reuse").quality == 1.0


def test_budget_choices_draw_the_same_questions_for_every_rule_and_end_with_all_of_them():
    profile = _profile(20, 1)
    choices = budget_choices(profile, [4, 8, 32], draws=5, rules=["point", "bootstrap95"], tolerance=0.05)
    assert {c.budget for c in choices} == {4, 8, 20}  # 32 > the 20 questions read: only all of them
    by_draw: dict = {}
    for c in choices:
        by_draw.setdefault((c.budget, c.draw), set()).add(c.questions)
    assert all(len(q) == 1 for q in by_draw.values())  # the same draw for both rules
    assert [c.plan for c in choices if c.budget == 20] == ["full_reuse", "recompute:0-1"]
    for c in choices:  # a draw without the missed question: full reuse on every rule's reading
        if 0 not in c.questions and c.rule == "point":
            assert c.plan == "full_reuse"
    assert chosen_plans(choices)[0] in ("full_reuse", "recompute:0-1")
    assert BudgetChoice.from_dict(json.loads(json.dumps(choices[0].to_dict()))) == choices[0]
    again = budget_choices(profile, [4, 8, 32], draws=5, rules=["point", "bootstrap95"], tolerance=0.05)
    assert again == choices  # seeded: the same draws


def test_the_budget_summary_counts_the_draws_whose_plan_holds():
    choices = [BudgetChoice("p", "t", 4, d, "point", plan, (0, 1, 2, 3))
               for d, plan in enumerate(["full_reuse", "full_reuse", "recompute:0-1"])]
    outcomes = {("p", "full_reuse"): {"quality": 0.5, "holds": False, "speedup": 9.0, "num_layers": L},
                ("p", "recompute:0-1"): {"quality": 0.9, "holds": True, "speedup": 2.0, "num_layers": L}}
    (entry,) = budget_summary(choices, outcomes)
    assert entry["holds"] == pytest.approx(1 / 3) and entry["distinct_plans"] == 2 and entry["layers"] == 0
    assert entry["speedup_of_holding"] == 2.0  # a plan that misses is never the speedup quoted
    assert entry["quality"] == 0.5 and entry["quality_range"] == [0.5, 0.9]


def test_simultaneous_bounds_match_the_rule_for_one_plan_ignore_copies_and_widen_with_independent_plans():
    """Max-t over the same paired resamples: one plan's bound is the percentile bound, a plan repeated adds nothing
    to the search's noise, and many plans that err independently lower every bound; a plan that always agrees with
    the receiver keeps its mean."""
    reference = [1.0] * 48
    plan = [0.0] * 3 + [1.0] * 45
    alone = paired_lower_bound(plan, reference, resamples=CHOICE_RESAMPLES, level=0.95)
    one = simultaneous_lower_bounds([plan], reference, resamples=CHOICE_RESAMPLES, level=0.95)
    assert one == pytest.approx([alone])
    copies = simultaneous_lower_bounds([plan] * 30, reference, resamples=CHOICE_RESAMPLES, level=0.95)
    assert copies == pytest.approx([alone] * 30)
    rng = np.random.default_rng(3)
    others = [list(rng.random(48) < 0.85) for _ in range(30)]  # each loses about 15%, independently
    together = simultaneous_lower_bounds([plan, *others], reference, resamples=CHOICE_RESAMPLES, level=0.95)
    assert together[0] < alone - 0.02
    each = [paired_lower_bound(p, reference, resamples=CHOICE_RESAMPLES, level=0.95) for p in [plan, *others]]
    assert all(t <= e + 1e-12 for t, e in zip(together, each))  # never above a plan's own bound
    constant = simultaneous_lower_bounds([reference, [0.9] * 48, *others], reference, resamples=500, level=0.95)
    assert constant[:2] == pytest.approx([0.0, -0.1])  # no spread: the mean, however many plans (a luck it misses)
    with pytest.raises(ValueError, match="same questions"):
        simultaneous_lower_bounds([plan[:-1]], reference, resamples=10, level=0.95)
    with pytest.raises(ValueError, match="no plans"):
        simultaneous_lower_bounds([], reference, resamples=10, level=0.95)


def test_simultaneous_bounds_cover_a_family_of_plans_where_bounds_each_alone_do_not():
    """30 plans, each losing a known share of 48 questions at random: how often every plan's bound stays below its
    true loss at once, over 200 draws. The simultaneous bounds fall short of their 95% on so few questions (about
    80% here: a bootstrap's small-sample optimism), and bounds each alone hold together far less often."""
    rng = np.random.default_rng(0)
    losses = np.linspace(0.2, 0.4, 30)
    reference = [1.0] * 48
    together = alone = 0
    for _ in range(200):
        plans = [list((rng.random(48) >= loss).astype(float)) for loss in losses]
        bounds = simultaneous_lower_bounds(plans, reference, resamples=500, level=0.95)
        together += all(b <= -loss for b, loss in zip(bounds, losses))
        alone += all(paired_lower_bound(p, reference, resamples=500, level=0.95) <= -loss
                     for p, loss in zip(plans, losses))
    assert together / 200 >= 0.7 and alone / 200 <= 0.3


def test_a_simultaneous_rule_refuses_the_fewest_layer_plan_that_only_its_own_bound_accepts():
    """Many plans each a little noisy: the pointwise rule keeps the one that happened to lose least; the rule whose
    bounds hold for every plan at once does not, and judging one plan alone is refused."""
    n, reference = 48, [1.0] * 48
    lucky = _point("recompute:0-0", [0.0] * 2 + [1.0] * (n - 2))
    noisy = [_point(f"recompute:{s}-{s + 1}", [0.0 if (i + 5 * s) % 12 == 0 else 1.0 for i in range(n)])
             for s in range(3)]
    exact = _point("recompute:0-3", reference)
    points = [lucky, *noisy, exact]
    profile = Profile(receiver="r", sender="s", task="t", metric="em", num_layers=L, reference_quality=1.0,
                      reference_per_input=reference, points=points, n_samples=n, inputs=[f"q{i}" for i in range(n)],
                      receiver_identity=IDENTITY, sender_identity=IDENTITY)
    assert choose_point(profile, tolerance=0.10, rule="bootstrap95").plan == "recompute:0-0"
    assert choose_point(profile, tolerance=0.10, rule="simultaneous95").plan == "recompute:0-3"
    with pytest.raises(PlanError, match="only beside every other plan"):
        choice_rule("simultaneous95").passes(lucky, 1.0, reference, 0.10)
    assert choice_rule("simultaneous90").record(48) == {"rule": "simultaneous90", "level": 0.9,
                                                        "resamples": CHOICE_RESAMPLES, "questions": 48}
    for bad in ("simultaneous5", "simultaneous100", "simultaneous"):
        with pytest.raises(PlanError, match="unknown choice rule"):
            choice_rule(bad)
    assert format_plan(parse_plan("profile:p.json@0.05@simultaneous95")) == "profile:p.json@0.05@simultaneous95"


def test_a_coarse_to_fine_search_is_never_steered_by_a_simultaneous_rule():
    """It judges each plan as it scores it; the refusal comes before any model loads."""
    from droidspeak.sweep.profile_job import check_search

    check_search("coarse_to_fine", 2, 6, rule=choice_rule("bootstrap95"))
    check_search("exhaustive", 2, None, rule=choice_rule("simultaneous95"))
    with pytest.raises(DroidSpeakError, match="judges a plan only beside every plan scored"):
        check_search("coarse_to_fine", 2, 6, rule=choice_rule("simultaneous95"))
