"""How a plan is chosen: the Pareto frontier of measured points and the fewest-layer plan a :class:`ChoiceRule`
accepts at a tolerance of the receiver's own quality.

Why a rule with a level: a profile reads a sample of questions, and a plan whose mean on 8 of them sits inside the
tolerance may well sit outside it on the next 64. The default rule (``bootstrap95``) accepts a plan only when the
profile's own questions show it: the one-sided 95% lower confidence bound of its paired difference with the receiver
stays above −tolerance × the receiver's quality. ``point`` (the mean alone) stays available by name, and so does
``simultaneous95``, whose bounds are meant to hold for every plan the profile scored at once: a search that keeps the
fewest-layer plan among many, each bounded alone, keeps one whose true loss is past the tolerance more often than 5% of
the time; with simultaneous bounds, about 5% at most (stats.simultaneous_lower_bounds says where that falls short).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from droidspeak.engine.plan import CHOICE_RULE_NAME, DEFAULT_CHOICE_RULE, DEFAULT_PROFILE_TOLERANCE
from droidspeak.errors import PlanError
from droidspeak.profile.points import HasPoints, ProfilePoint
from droidspeak.stats import paired_lower_bound, simultaneous_lower_bounds

CHOICE_RESAMPLES = 2_000


@dataclass(frozen=True)
class ChoiceRule:
    """``point``: a plan passes when its mean quality reaches the target. ``bootstrap<NN>``: when the one-sided
    NN% lower bound of its paired bootstrap difference with the receiver (``CHOICE_RESAMPLES`` resamples of the
    profile's questions, seed 0, the same resamples for every plan) reaches −tolerance × |receiver|.
    ``simultaneous<NN>``: the same, with bounds that hold together for every plan judged at once
    (stats.simultaneous_lower_bounds), so a plan is judged only beside the others (:meth:`accepted`)."""

    name: str
    level: float | None  # None for the point rule
    simultaneous: bool = False

    def record(self, questions: int) -> dict:
        """What a profile or a row says of the rule it chose with."""
        return {"rule": self.name, "level": self.level, "resamples": CHOICE_RESAMPLES if self.level else None,
                "questions": questions}

    def passes(self, point: ProfilePoint, reference_quality: float, reference_per_input: Sequence[float] | None,
               tolerance: float) -> bool:
        """Whether the rule accepts ``point`` judged alone (never for a simultaneous rule)."""
        if self.simultaneous:
            raise PlanError(f"choice rule {self.name}: bounds a plan only beside every other plan judged with it "
                            "(ChoiceRule.accepted)")
        target = quality_target(reference_quality, tolerance)
        if self.level is None:
            return point.quality >= target - _slack(reference_quality)
        [bound] = self.lower_bounds([point], reference_per_input)
        return bound >= target - reference_quality - _slack(reference_quality)

    def accepted(self, points: Sequence[ProfilePoint], reference_quality: float,
                 reference_per_input: Sequence[float] | None, tolerance: float) -> Iterator[ProfilePoint]:
        """The points the rule accepts, in their order: one by one (lazily) for a rule that judges a plan alone, all
        ``points`` together for a simultaneous one."""
        if not self.simultaneous:
            return (p for p in points if self.passes(p, reference_quality, reference_per_input, tolerance))
        floor = quality_target(reference_quality, tolerance) - reference_quality - _slack(reference_quality)
        bounds = self.lower_bounds(points, reference_per_input) if points else []
        return iter([p for p, bound in zip(points, bounds) if bound >= floor])

    def lower_bounds(self, points: Sequence[ProfilePoint], reference_per_input: Sequence[float] | None) -> list[float]:
        """Each point's one-sided lower bound of its paired difference with the receiver at the rule's level: its own
        (bootstrapNN) or one that holds with every other point's (simultaneousNN)."""
        if self.level is None:
            raise PlanError("choice rule point: compares means, with no bound")
        self._check_scores(points, reference_per_input)
        if self.simultaneous:
            return simultaneous_lower_bounds([p.per_input for p in points], reference_per_input,
                                             resamples=CHOICE_RESAMPLES, level=self.level)
        return [paired_lower_bound(p.per_input, reference_per_input, resamples=CHOICE_RESAMPLES, level=self.level)
                for p in points]

    def _check_scores(self, points: Sequence[ProfilePoint], reference_per_input: Sequence[float] | None) -> None:
        bare = [p.plan for p in points if p.per_input is None]
        if bare or reference_per_input is None:
            raise PlanError(f"choice rule {self.name}: {'the plan ' + repr(bare[0]) if bare else 'the receiver'} has "
                            "no per-question scores in this profile; profile the pair again, or choose with the "
                            "point rule by name")


def _slack(reference_quality: float) -> float:
    """Float noise must not flip an exact tie."""
    return 1e-12 * max(1.0, abs(reference_quality))


def choice_rule(name: str = DEFAULT_CHOICE_RULE) -> ChoiceRule:
    """The rule called ``name``: ``point``, ``bootstrapNN`` or ``simultaneousNN`` (NN% one-sided, 50 < NN < 100)."""
    if name == "point":
        return ChoiceRule("point", None)
    kind = name.rstrip("0123456789")
    if CHOICE_RULE_NAME.fullmatch(name) is None or not 50 < int(name.removeprefix(kind)) < 100:
        raise PlanError(f"unknown choice rule {name!r}: expected point, bootstrapNN or simultaneousNN (a one-sided "
                        f"level, e.g. {DEFAULT_CHOICE_RULE})")
    return ChoiceRule(name, int(name.removeprefix(kind)) / 100, simultaneous=kind == "simultaneous")


def simultaneous_rule(rule: ChoiceRule) -> ChoiceRule:
    """The simultaneous rule at ``rule``'s level (95% for the point rule): the same choice once its bounds account for
    every plan compared."""
    return choice_rule(f"simultaneous{round(100 * (rule.level or 0.95))}")


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
    *,
    rule: ChoiceRule | str = "point",
    reference_per_input: Sequence[float] | None = None,
) -> ProfilePoint | None:
    """The point :func:`choose_plan` picks: the fewest recomputed layers ``rule`` accepts (at a layer count, the
    higher quality first), or None when it accepts none. With the point rule this is a frontier point."""
    points, reference_quality, reference_per_input = _points_and_reference(points, reference_quality,
                                                                           reference_per_input)
    rule = choice_rule(rule) if isinstance(rule, str) else rule
    ordered = sorted((p for p in points if not math.isnan(p.quality)),
                     key=lambda p: (p.recomputed_layers, *point_sort_key(p)))
    return next(rule.accepted(ordered, reference_quality, reference_per_input, tolerance), None)


def choose_plan(
    points: Iterable[ProfilePoint] | "HasPoints",
    reference_quality: float | None = None,
    tolerance: float = DEFAULT_PROFILE_TOLERANCE,
    *,
    fallback: str = "full_prefill",
    rule: ChoiceRule | str = "point",
    reference_per_input: Sequence[float] | None = None,
) -> str:
    """The plan with the fewest recomputed layers that ``rule`` accepts at ``tolerance`` (the point rule: quality
    >= (1 - tolerance) × reference).

    ``points`` is a list of :class:`ProfilePoint` (all points; a frontier gives the same answer by the point rule
    only, for a bound can accept a plan the means rank off the frontier, and a simultaneous one widens with the
    points judged) or
    a profile object with ``points`` and ``reference_quality`` (then ``reference_quality`` may be omitted).
    Ties at the same layer count go to the higher quality, then fewer transitions, then lower cost.

    When no profiled plan meets the target the answer is ``fallback``: ``"full_prefill"`` (the default —
    the receiver's own prefill is the reference, so it always meets the target by definition) or
    ``"best"`` (the highest-quality profiled plan, for callers who prefer speed over the guarantee).
    """
    if fallback not in ("full_prefill", "best"):
        raise ValueError(f"fallback must be 'full_prefill' or 'best', got {fallback!r}")
    points, reference_quality, reference_per_input = _points_and_reference(points, reference_quality,
                                                                           reference_per_input)
    chosen = choose_point(points, reference_quality, tolerance, rule=rule, reference_per_input=reference_per_input)
    if chosen is not None:
        return chosen.plan
    frontier = pareto_frontier(points)
    if fallback == "best" and frontier:
        return frontier[-1].plan
    return "full_prefill"


def _points_and_reference(points, reference_quality, reference_per_input=None):
    if hasattr(points, "points") and hasattr(points, "reference_quality"):
        if reference_quality is None:
            reference_quality = points.reference_quality
        if reference_per_input is None:
            reference_per_input = getattr(points, "reference_per_input", None)
        points = points.points
    if reference_quality is None:
        raise ValueError("reference_quality is required when choosing from a plain list of points")
    if math.isnan(reference_quality):
        raise ValueError("reference_quality is NaN")
    return list(points), float(reference_quality), reference_per_input
