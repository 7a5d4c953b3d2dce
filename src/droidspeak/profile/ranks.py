"""Comparing rankings (does a proxy order plans like the task metric?) and frontiers (does a profile made on
one dataset transfer to another?).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from droidspeak.profile.points import ProfilePoint


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks with ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _check_pairs(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"rank correlation needs equal-length inputs, got {len(x)} and {len(y)}")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson on average ranks, tie-aware, = scipy.stats.spearmanr); NaN if n < 2 or constant."""
    _check_pairs(x, y)
    if len(x) < 2:
        return math.nan
    return _pearson(_ranks(list(x)), _ranks(list(y)))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-aware, = scipy.stats.kendalltau's default); NaN if n < 2 or constant. O(n²)."""
    _check_pairs(x, y)
    n = len(x)
    if n < 2:
        return math.nan
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan


def rank_agreement(proxy: Mapping[str, float], task: Mapping[str, float]) -> dict[str, float | int | bool]:
    """How well a proxy score ranks plans like the task metric, over the plans both measured.

    Returns spearman, kendall, n (plans compared) and ``same_best`` (whether both put the same plan on top).
    """
    common = sorted(set(proxy) & set(task))
    x = [float(proxy[p]) for p in common]
    y = [float(task[p]) for p in common]
    same_best = bool(common) and max(common, key=lambda p: (proxy[p], p)) == max(common, key=lambda p: (task[p], p))
    return {"spearman": spearman(x, y), "kendall": kendall(x, y), "n": len(common), "same_best": same_best}


def frontier_step(frontier: Sequence[ProfilePoint], num_layers: int) -> list[float]:
    """Best quality reachable with at most k recomputed layers, for k = 0..num_layers (NaN before the first point)."""
    out, j, current = [], 0, math.nan
    pts = sorted(frontier, key=lambda p: p.recomputed_layers)
    for k in range(num_layers + 1):
        while j < len(pts) and pts[j].recomputed_layers <= k:
            current = pts[j].quality if math.isnan(current) else max(current, pts[j].quality)
            j += 1
        out.append(current)
    return out


def frontier_difference(
    a: Sequence[ProfilePoint],
    b: Sequence[ProfilePoint],
    num_layers: int,
    *,
    reference_a: float | None = None,
    reference_b: float | None = None,
) -> dict[str, float]:
    """Max and mean |a - b| between two frontiers' step functions over k (paper: ≤4 points, 2 on average).

    With both references the qualities are normalised (quality / reference) first, so profiles of one pair
    on datasets with different absolute scores compare. Budgets where either step is undefined are skipped.
    """
    sa, sb = frontier_step(a, num_layers), frontier_step(b, num_layers)
    if reference_a and reference_b:
        sa = [q / reference_a for q in sa]
        sb = [q / reference_b for q in sb]
    diffs = [abs(x - y) for x, y in zip(sa, sb) if not (math.isnan(x) or math.isnan(y))]
    if not diffs:
        return {"max": math.nan, "mean": math.nan, "n": 0}
    return {"max": max(diffs), "mean": sum(diffs) / len(diffs), "n": len(diffs)}
