"""Evaluation-driven multi-group search: a beam that grows plans block by block, scoring each one it tries,
for when no additive model of quality can be trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from droidspeak.profile.candidates import aligned_blocks
from droidspeak.profile.choice import point_sort_key
from droidspeak.profile.points import Group, ProfilePoint, group_plan


@dataclass
class _Evaluator:
    score: Callable[[str], float]
    num_layers: int
    max_evals: int
    seen: dict[str, ProfilePoint] = field(default_factory=dict)

    def __call__(self, groups: Iterable[Group]) -> ProfilePoint | None:
        plan = group_plan(groups, self.num_layers)
        if plan not in self.seen:
            if len(self.seen) >= self.max_evals:
                return None
            self.seen[plan] = ProfilePoint.from_plan(plan, float(self.score(plan)), num_layers=self.num_layers)
        return self.seen[plan]


def beam_search(
    score: Callable[[str], float],
    num_layers: int,
    *,
    max_evals: int,
    beam_width: int = 1,
    granularity: int = 1,
    prior: Sequence[float] | None = None,
    candidates_per_step: int | None = None,
    max_layers: int | None = None,
) -> list[ProfilePoint]:
    """Grow plans from full_reuse one block at a time, keeping the ``beam_width`` best by measured score.

    ``score(plan) -> float`` evaluates a plan string (task metric or proxy; higher is better). Each step adds
    one aligned block of ``granularity`` layers to every beam plan (a block next to a group extends it;
    elsewhere it opens a new group, so transitions are paid through the score itself). With ``prior``
    (per-layer harm, e.g. from :func:`harm_from_single_layer`) only the ``candidates_per_step`` blocks with
    the highest prior harm are tried per beam plan, cutting evaluations from O(B) to that number per step.

    Stops when ``max_evals`` distinct plans have been scored (repeats are cached, free) or the beam reaches
    ``max_layers`` (default: all layers). Greedy by construction: it can miss optima that need a block
    whose benefit appears only together with another. Returns every evaluated point in evaluation order;
    take :func:`pareto_frontier` or :func:`best_by_budget` of it.
    """
    if max_evals < 1:
        raise ValueError(f"max_evals must be >= 1, got {max_evals}")
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    units = aligned_blocks(num_layers, granularity)
    limit = num_layers if max_layers is None else min(max_layers, num_layers)
    evaluate = _Evaluator(score, num_layers, max_evals)
    unit_prior = None
    if prior is not None:
        if len(prior) != num_layers:
            raise ValueError(f"prior has {len(prior)} entries for a model with {num_layers} layers")
        unit_prior = [sum(prior[s : e + 1]) for s, e in units]
    start = evaluate([])
    beam: list[tuple[frozenset[int], ProfilePoint]] = [(frozenset(), start)] if start else []
    while beam:
        candidates: dict[frozenset[int], ProfilePoint] = {}
        exhausted = False
        for chosen, _ in beam:
            free = [u for u in range(len(units)) if u not in chosen]
            if unit_prior is not None and candidates_per_step is not None:
                free = sorted(free, key=lambda u: (-unit_prior[u], u))[:candidates_per_step]
            for u in free:
                grown = chosen | {u}
                if grown in candidates:
                    continue
                layers = sum(units[v][1] - units[v][0] + 1 for v in grown)
                if layers > limit:
                    continue
                point = evaluate(_merge_units(grown, units))
                if point is None:
                    exhausted = True
                    break
                candidates[grown] = point
            if exhausted:
                break
        if not candidates:
            break
        ranked = sorted(candidates.items(), key=lambda item: point_sort_key(item[1]))
        beam = ranked[:beam_width]
        if exhausted:
            break
    return list(evaluate.seen.values())


def _merge_units(chosen: Iterable[int], units: Sequence[Group]) -> list[Group]:
    groups: list[list[int]] = []
    for u in sorted(chosen):
        if groups and groups[-1][1] == units[u][0] - 1:
            groups[-1][1] = units[u][1]
        else:
            groups.append([units[u][0], units[u][1]])
    return [(s, e) for s, e in groups]
