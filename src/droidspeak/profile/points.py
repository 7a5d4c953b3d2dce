"""The data every profiling module shares: a measured plan (:class:`ProfilePoint`), a layer group, and the
plan-string helpers that turn groups into contract strings and back into layer counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from droidspeak.engine.plan import format_plan, parse_plan, recompute
from droidspeak.errors import PlanError

Group = tuple[int, int]


class HasPoints(Protocol):
    """Anything with measured points and the receiver's reference quality (e.g. profile_file.Profile)."""

    points: Sequence["ProfilePoint"]
    reference_quality: float


@dataclass(frozen=True)
class ProfilePoint:
    """One evaluated plan: its contract string, how many layers it recomputes, and its measured quality.

    ``per_input`` holds the quality of each profiling input (same order for every point of a profile);
    ``cost`` is whatever the profiler measured (prefill seconds, compute fraction); ``transitions`` is the
    number of groups that start from the sender's E cache.
    """

    plan: str
    recomputed_layers: int
    quality: float
    per_input: tuple[float, ...] | None = None
    cost: float | None = None
    transitions: int | None = None

    @classmethod
    def from_plan(
        cls,
        plan: str,
        quality: float,
        *,
        num_layers: int,
        per_input: Sequence[float] | None = None,
        cost: float | None = None,
    ) -> "ProfilePoint":
        """Build a point, deriving ``recomputed_layers`` and ``transitions`` from the plan string."""
        layers, transitions = plan_layers(plan, num_layers)
        return cls(
            plan=str(plan),
            recomputed_layers=layers,
            quality=float(quality),
            per_input=tuple(float(q) for q in per_input) if per_input is not None else None,
            cost=None if cost is None else float(cost),
            transitions=transitions,
        )

    def to_dict(self) -> dict:
        out: dict = {"plan": self.plan, "recomputed_layers": self.recomputed_layers, "quality": self.quality}
        if self.transitions is not None:
            out["transitions"] = self.transitions
        if self.cost is not None:
            out["cost"] = self.cost
        if self.per_input is not None:
            out["per_input"] = list(self.per_input)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "ProfilePoint":
        per_input = data.get("per_input")
        return cls(
            plan=str(data["plan"]),
            recomputed_layers=int(data["recomputed_layers"]),
            quality=float(data["quality"]),
            per_input=None if per_input is None else tuple(float(q) for q in per_input),
            cost=None if data.get("cost") is None else float(data["cost"]),
            transitions=None if data.get("transitions") is None else int(data["transitions"]),
        )


def plan_layers(plan: str, num_layers: int) -> tuple[int, int]:
    """(recomputed layers, transitions) of a concrete plan string; full_prefill counts every layer, 0 transitions."""
    parsed = parse_plan(plan, num_layers)
    if parsed.kind == "full_prefill":
        return num_layers, 0
    if parsed.kind in ("full_reuse", "recompute"):
        return len(parsed.recomputed_layers), parsed.transitions
    raise PlanError(f"plan {plan!r} is not a layer plan (expected full_prefill, full_reuse or recompute:...)")


def group_plan(groups: Iterable[Group], num_layers: int) -> str:
    """Contract string for a set of disjoint groups; no groups = full_reuse, every layer = full_prefill."""
    plan = recompute(*groups).validate(num_layers)
    if len(plan.recomputed_layers) == num_layers:
        return "full_prefill"
    return format_plan(plan)
