"""Model-based multi-group search: the best set of disjoint groups for every layer budget by dynamic
programming over a per-group value (the additive model), without evaluating any plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from droidspeak.profile.candidates import aligned_blocks
from droidspeak.profile.points import Group, ProfilePoint, group_plan


@dataclass(frozen=True)
class GroupSearchResult:
    """Best plan found for one budget: ``score`` is the objective the search maximised."""

    plan: str
    groups: tuple[Group, ...]
    recomputed_layers: int
    transitions: int
    score: float
    predicted_quality: float | None = None


def additive_group_value(harm: Sequence[float], transition_penalty: float = 0.0) -> Callable[[int, int], float]:
    """Value of recomputing group [s, e] under the additive model: harm avoided minus a transition penalty.

    Model (an assumption, checked against measured plans in the profiling report):
        quality(plan) ≈ reference - Σ_{l reused} harm[l] - transition_penalty × transitions(plan)
    i.e. reused layers hurt independently and every group that starts from the sender's E cache (s > 0)
    adds a fixed loss (the paper's observation that each transition injects a deviation that propagates).
    """
    prefix = [0.0]
    for h in harm:
        prefix.append(prefix[-1] + float(h))

    def value(s: int, e: int) -> float:
        return prefix[e + 1] - prefix[s] - (transition_penalty if s > 0 else 0.0)

    return value


def search_groups(
    num_layers: int,
    group_value: Callable[[int, int], float],
    *,
    granularity: int = 1,
    max_groups: int | None = None,
    base_score: float | None = None,
) -> dict[int, GroupSearchResult]:
    """Best set of disjoint, non-adjacent groups for every exact recomputed-layer budget, by dynamic programming.

    The objective is Σ group_value(s, e) over the chosen groups: any per-group quality estimate works so
    long as groups contribute independently (the additive model is :func:`additive_group_value`). Groups
    are aligned to ``granularity``, never touch (two adjacent groups are one group with a needless
    transition), and number at most ``max_groups`` (None: unlimited; 1: the paper's single-group search).
    With ``base_score`` (e.g. the predicted full-reuse quality) each result carries
    ``predicted_quality = base_score + score``.

    Cost: O(B² · L · G) for B blocks, G = max_groups (or 1 when unlimited) — microseconds for L=32.
    Returns {k: result} for every reachable k in 0..num_layers; k = num_layers is named full_prefill.
    """
    units = aligned_blocks(num_layers, granularity)
    n_units = len(units)
    unit_start = [u[0] for u in units]
    unit_end = [u[1] for u in units]
    # best[i][(k, n)] = (score, back pointer) for plans deciding units < i, with unit i free to start a group
    best: list[dict[tuple[int, int], tuple[float, tuple | None]]] = [dict() for _ in range(n_units + 2)]
    best[0][(0, 0)] = (0.0, None)
    for i in range(n_units):
        for (k, n), (score, _) in list(best[i].items()):
            _relax(best[i + 1], (k, n), score, (i, k, n, None))  # unit i reused
            n2 = 0 if max_groups is None else n + 1  # groups are only counted when capped
            if max_groups is not None and n2 > max_groups:
                continue
            for j in range(i, n_units):  # group covering units i..j, then unit j+1 is reused
                s, e = unit_start[i], unit_end[j]
                nxt = min(j + 2, n_units)
                _relax(best[nxt], (k + e - s + 1, n2), score + group_value(s, e), (i, k, n, (s, e)))
    final: dict[int, tuple[float, tuple[int, int]]] = {}
    for (k, n), (score, _) in best[n_units].items():
        if k not in final or score > final[k][0]:
            final[k] = (score, (k, n))
    results: dict[int, GroupSearchResult] = {}
    for k in sorted(final):
        score, key = final[k]
        groups = _backtrack(best, n_units, key)
        plan = group_plan(groups, num_layers)
        results[k] = GroupSearchResult(
            plan=plan,
            groups=tuple(groups),
            recomputed_layers=k,
            transitions=sum(1 for s, _ in groups if s > 0) if plan != "full_prefill" else 0,
            score=score,
            predicted_quality=None if base_score is None else base_score + score,
        )
    return results


def _relax(table: dict, key: tuple[int, int], score: float, back: tuple) -> None:
    if key not in table or score > table[key][0]:
        table[key] = (score, back)


def _backtrack(best: list[dict], end: int, key: tuple[int, int]) -> list[Group]:
    groups: list[Group] = []
    pos = end
    while True:
        _, back = best[pos][key]
        if back is None:
            break
        i, k, n, group = back
        if group is not None:
            groups.append(group)
        pos, key = i, (k, n)
    return sorted(groups)


def search_additive(
    harm: Sequence[float],
    transition_penalty: float = 0.0,
    *,
    reference_quality: float | None = None,
    granularity: int = 1,
    max_groups: int | None = None,
) -> dict[int, GroupSearchResult]:
    """Additive-model search (see :func:`additive_group_value`) for every exact budget k.

    ``score`` is the predicted loss avoided; with ``reference_quality`` each result also carries
    ``predicted_quality = reference - Σ harm + score``. ``max_groups=1`` gives the best single group under
    the same model, for the "multi-group vs best single group at equal layers" comparison.
    """
    base = None if reference_quality is None else reference_quality - sum(harm)
    return search_groups(
        len(harm),
        additive_group_value(harm, transition_penalty),
        granularity=granularity,
        max_groups=max_groups,
        base_score=base,
    )


def estimate_transition_penalty(points: Iterable[ProfilePoint]) -> float:
    """Quality lost per extra transition at a fixed recomputed-layer count (Fig. 10 table), >= 0.

    Least-squares slope of quality on transitions, pooled within each recomputed-layer count (each count
    gets its own intercept). Needs points with ``transitions`` set; returns 0 when there is no variation.
    """
    by_k: dict[int, list[tuple[int, float]]] = {}
    for p in points:
        if p.transitions is not None and not math.isnan(p.quality):
            by_k.setdefault(p.recomputed_layers, []).append((p.transitions, p.quality))
    num = den = 0.0
    for rows in by_k.values():
        mt = sum(t for t, _ in rows) / len(rows)
        mq = sum(q for _, q in rows) / len(rows)
        num += sum((t - mt) * (q - mq) for t, q in rows)
        den += sum((t - mt) ** 2 for t, _ in rows)
    return max(0.0, -num / den) if den > 0 else 0.0
