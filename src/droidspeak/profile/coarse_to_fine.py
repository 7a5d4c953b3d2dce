"""Coarse-to-fine group search: every group aligned to a coarse granularity, then only the fine-aligned groups that
could beat the coarse choice.

Where recomputing more layers never scores worse (a group's quality is at most its superset's), the exhaustive
fine search's choice — the fewest-layer fine group the rule accepts — lies inside its *coarse hull* (the smallest
coarse-aligned group holding it), which the rule then accepts too and which has at most
``chosen + 2 (coarse - fine)`` layers. So the fine groups worth scoring are those with no more layers than the
coarse choice whose hull the rule accepted; they are scored shortest first, and the search stops at the first
length where one is accepted (every group of that length is scored, so ties break as in the exhaustive search).
For a bootstrap rule the premise is stronger: a superset must score at least as well question by question.
Whether it holds on a pair is measured, not assumed: run the exhaustive search once (``search=exhaustive``), then
:func:`replay` this search on its stored points and count :func:`hull_misses`. The plans scored are steered by one
rule and tolerance, which the profile records; a choice with others could miss plans the search never scored
(``Profile.check_choice`` refuses it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from droidspeak.engine.plan import parse_plan
from droidspeak.errors import PlanError
from droidspeak.profile.candidates import contiguous_groups, single_group_plans
from droidspeak.profile.choice import ChoiceRule
from droidspeak.profile.points import Group, ProfilePoint, group_plan

SEARCHES = ("exhaustive", "coarse_to_fine")


def _group_of(plan: str, num_layers: int) -> Group:
    """The one group a single-group plan recomputes (full prefill: the whole model)."""
    parsed = parse_plan(plan, num_layers)
    return (0, num_layers - 1) if parsed.kind == "full_prefill" else parsed.groups[0]


def coarse_hull(group: Group, coarse: int, num_layers: int) -> Group:
    """The smallest ``coarse``-aligned group holding ``group``."""
    start, end = group
    return start // coarse * coarse, min((end // coarse + 1) * coarse, num_layers) - 1


def fine_candidates(accepted: set[Group], most: int, num_layers: int, coarse: int, fine: int) -> list[Group]:
    """The ``fine``-aligned groups of at most ``most`` layers whose coarse hull is in ``accepted``, shortest first
    (the whole model, ``(0, L-1)``, stands for full prefill)."""
    groups = [g for g in contiguous_groups(num_layers, fine)
              if g[1] - g[0] + 1 <= most and coarse_hull(g, coarse, num_layers) in accepted]
    return sorted(groups, key=lambda g: (g[1] - g[0], g[0]))


def check_rule(rule: ChoiceRule) -> None:
    """The search judges each plan as it scores it, so its rule must judge a plan alone: a simultaneous rule's bounds
    hold only over a set of plans fixed before any is judged."""
    if rule.simultaneous:
        raise PlanError(f"search=coarse_to_fine judges each plan as it scores it, and choice rule {rule.name} judges "
                        "a plan only beside every plan scored: profile with search=exhaustive, or steer the search "
                        "with a bootstrapNN rule")


def coarse_to_fine(
    evaluate: Callable[[list[str]], Sequence[ProfilePoint]],
    accepts: Callable[[ProfilePoint], bool],
    num_layers: int,
    *,
    coarse: int,
    fine: int,
) -> list[ProfilePoint]:
    """Every point the search scores: the coarse groups (with full reuse and full prefill), then the fine candidates
    one length at a time until ``accepts`` takes one. ``evaluate`` scores a list of plans (sharing passes),
    ``accepts`` is the choice rule at the tolerance."""
    if coarse % fine or coarse <= fine:
        raise ValueError(f"coarse granularity {coarse} must be a multiple of the fine one ({fine}) and larger")
    points = list(evaluate(single_group_plans(num_layers, coarse)))
    accepted = {_group_of(p.plan, num_layers) for p in points if accepts(p) and p.plan != "full_reuse"}
    taken = [p.recomputed_layers for p in points if accepts(p)]
    fewest = min(taken) if taken else num_layers
    by_length: dict[int, list[Group]] = {}
    for group in fine_candidates(accepted, fewest, num_layers, coarse, fine):
        by_length.setdefault(group[1] - group[0] + 1, []).append(group)
    seen = {p.plan for p in points}
    for length in sorted(by_length):
        plans = [plan for plan in (group_plan([g], num_layers) for g in by_length[length]) if plan not in seen]
        scored = list(evaluate(plans))
        points += scored
        seen.update(plans)
        if any(accepts(p) for p in scored):
            break
    return points


def replay(
    points: Iterable[ProfilePoint],
    accepts: Callable[[ProfilePoint], bool],
    num_layers: int,
    *,
    coarse: int,
    fine: int,
) -> list[ProfilePoint]:
    """What :func:`coarse_to_fine` would score, read from an exhaustive ``fine``-aligned profile's ``points``
    instead of a model: the same plans in the same order, so its choice and its plan count come without a run."""
    scored = {p.plan: p for p in points}

    def evaluate(plans: list[str]) -> list[ProfilePoint]:
        missing = [plan for plan in plans if plan not in scored]
        if missing:
            raise ValueError(f"the profile did not score {missing[0]!r} (and {len(missing) - 1} more): replay needs "
                             f"an exhaustive profile aligned to {fine} layers")
        return [scored[plan] for plan in plans]

    return coarse_to_fine(evaluate, accepts, num_layers, coarse=coarse, fine=fine)


def hull_misses(points: Iterable[ProfilePoint], accepts: Callable[[ProfilePoint], bool], num_layers: int,
                coarse: int) -> list[tuple[str, str]]:
    """The search's premise, measured: each (group, its coarse hull) the profile scored where ``accepts`` takes
    the group but not its hull, so the coarse stage could rule out a region holding an acceptable group."""
    scored = {p.plan: p for p in points}
    misses = []
    for plan, point in scored.items():
        if plan in ("full_reuse", "full_prefill") or not accepts(point):
            continue
        hull = scored.get(group_plan([coarse_hull(_group_of(plan, num_layers), coarse, num_layers)], num_layers))
        if hull is not None and hull.plan != plan and not accepts(hull):
            misses.append((plan, hull.plan))
    return misses


def nested_inversions(points: Iterable[ProfilePoint], num_layers: int) -> tuple[int, int]:
    """How often recomputing more scores worse: of the (group, larger group holding it) pairs the profile scored,
    those where the smaller group's quality is higher, and all such pairs."""
    groups = [(_group_of(p.plan, num_layers), p.quality) for p in points if p.plan != "full_reuse"]
    pairs = [(q, q_outer) for (inner, q) in groups for (outer, q_outer) in groups
             if inner != outer and outer[0] <= inner[0] and inner[1] <= outer[1]]
    return sum(q > q_outer for q, q_outer in pairs), len(pairs)
