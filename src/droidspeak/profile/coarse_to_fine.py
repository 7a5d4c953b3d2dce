"""Coarse-to-fine group search: every group aligned to a coarse granularity, then only the fine-aligned groups that
could beat the coarse choice.

Where recomputing more layers never scores worse (a group's quality is at most its superset's), the exhaustive
fine search's choice — the fewest-layer fine group the rule accepts — lies inside its *coarse hull* (the smallest
coarse-aligned group holding it), which the rule then accepts too and which has at most
``chosen + 2 (coarse - fine)`` layers. So the fine groups worth scoring are those with no more layers than the
coarse choice whose hull the rule accepted; they are scored shortest first, and the search stops at the first
length where one is accepted (every group of that length is scored, so ties break as in the exhaustive search).
For a bootstrap rule the premise is stronger: a superset must score at least as well question by question.
Whether it holds on a pair is measured, not assumed: run the exhaustive search once beside it
(``search=exhaustive``). The plans scored are steered by one rule and tolerance, which the profile records; a
choice with others could miss plans the search never scored (``Profile.check_choice`` refuses it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from droidspeak.engine.plan import parse_plan
from droidspeak.profile.candidates import contiguous_groups, single_group_plans
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
