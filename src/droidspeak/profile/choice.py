"""How a plan is chosen: the Pareto frontier of measured points and the fewest-layer plan within a tolerance
of the receiver's own quality.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from droidspeak.engine.plan import DEFAULT_PROFILE_TOLERANCE
from droidspeak.profile.points import HasPoints, ProfilePoint


def point_sort_key(p: ProfilePoint) -> tuple:
    """Among equal-layer points: higher quality, then fewer transitions, then lower cost, then plan text."""
    return (
        -p.quality,
        p.transitions if p.transitions is not None else math.inf,
        p.cost if p.cost is not None else math.inf,
        p.plan,
    )


def pareto_frontier(points: Iterable[ProfilePoint]) -> list[ProfilePoint]:
    """Points not dominated in (fewer recomputed layers, higher quality), sorted by recomputed layers.

    Quality strictly increases along the frontier, so "the best quality reachable with at most k layers"
    is the last frontier point with ``recomputed_layers <= k``. Points with NaN quality are ignored.
    """
    valid = [p for p in points if not math.isnan(p.quality)]
    best: list[ProfilePoint] = []
    for p in sorted(valid, key=lambda p: (p.recomputed_layers, *point_sort_key(p))):
        if not best or p.quality > best[-1].quality:
            if best and best[-1].recomputed_layers == p.recomputed_layers:
                continue  # same layer count, lower-ranked tie-break
            best.append(p)
    return best


def best_by_budget(points: Iterable[ProfilePoint]) -> dict[int, ProfilePoint]:
    """The best point at each exact recomputed-layer count (e.g. best single group vs best multi-group at k)."""
    out: dict[int, ProfilePoint] = {}
    for p in sorted((p for p in points if not math.isnan(p.quality)), key=point_sort_key):
        out.setdefault(p.recomputed_layers, p)
    return dict(sorted(out.items()))


def quality_target(reference_quality: float, tolerance: float) -> float:
    """Lowest acceptable quality: ``reference - tolerance * |reference|`` (= (1 - tol) * ref for ref >= 0)."""
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must lie in [0, 1), got {tolerance}")
    return reference_quality - tolerance * abs(reference_quality)


def choose_point(
    points: Iterable[ProfilePoint] | "HasPoints",
    reference_quality: float | None = None,
    tolerance: float = DEFAULT_PROFILE_TOLERANCE,
) -> ProfilePoint | None:
    """The frontier point :func:`choose_plan` picks, or None when no point is within the tolerance."""
    points, reference_quality = _points_and_reference(points, reference_quality)
    target = quality_target(reference_quality, tolerance)
    slack = 1e-12 * max(1.0, abs(reference_quality))  # float noise must not flip an exact tie
    for p in pareto_frontier(points):
        if p.quality >= target - slack:
            return p
    return None


def choose_plan(
    points: Iterable[ProfilePoint] | "HasPoints",
    reference_quality: float | None = None,
    tolerance: float = DEFAULT_PROFILE_TOLERANCE,
    *,
    fallback: str = "full_prefill",
) -> str:
    """The plan with the fewest recomputed layers whose quality >= (1 - tolerance) × reference.

    ``points`` is a list of :class:`ProfilePoint` (all points or just a frontier: the answer is the same) or
    a profile object with ``points`` and ``reference_quality`` (then ``reference_quality`` may be omitted).
    Ties at the same layer count go to the higher quality, then fewer transitions, then lower cost.

    When no profiled plan meets the target the answer is ``fallback``: ``"full_prefill"`` (the default —
    the receiver's own prefill is the reference, so it always meets the target by definition) or
    ``"best"`` (the highest-quality profiled plan, for callers who prefer speed over the guarantee).
    """
    if fallback not in ("full_prefill", "best"):
        raise ValueError(f"fallback must be 'full_prefill' or 'best', got {fallback!r}")
    points, reference_quality = _points_and_reference(points, reference_quality)
    chosen = choose_point(points, reference_quality, tolerance)
    if chosen is not None:
        return chosen.plan
    frontier = pareto_frontier(points)
    if fallback == "best" and frontier:
        return frontier[-1].plan
    return "full_prefill"


def _points_and_reference(points, reference_quality) -> tuple[list[ProfilePoint], float]:
    if hasattr(points, "points") and hasattr(points, "reference_quality"):
        if reference_quality is None:
            reference_quality = points.reference_quality
        points = points.points
    if reference_quality is None:
        raise ValueError("reference_quality is required when choosing from a plain list of points")
    if math.isnan(reference_quality):
        raise ValueError("reference_quality is NaN")
    return list(points), float(reference_quality)
