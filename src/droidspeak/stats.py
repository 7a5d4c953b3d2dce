"""The bootstrap every number with an interval rests on: percentile intervals of a mean over questions, paired
differences (the same questions resampled for both), and a paired one-sided lower bound (a profile's choice rule).
Deterministic for a seed, so a page, a profile and a test read the same interval."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The middle ``level`` of ``values`` (what every bootstrap interval here is)."""
    values = sorted(values)
    tail = (1 - level) / 2
    low = values[int(tail * (len(values) - 1))]
    high = values[int(round((1 - tail) * (len(values) - 1)))]
    return low, high


def bootstrap_means(scores: Sequence[float], *, resamples: int, seed: int = 0) -> np.ndarray:
    """The mean of ``scores`` in each of ``resamples`` resamples with replacement."""
    if not scores:
        raise ValueError("no scores to bootstrap")
    picks = np.random.default_rng(seed).integers(0, len(scores), size=(resamples, len(scores)))
    return np.asarray(scores, dtype=np.float64)[picks].mean(axis=1)


def bootstrap_interval(scores: Sequence[float], *, resamples: int, level: float,
                       seed: int = 0) -> tuple[float, float]:
    """Two-sided percentile bootstrap interval of the mean of ``scores``."""
    return percentile_interval(bootstrap_means(scores, resamples=resamples, seed=seed).tolist(), level)


def _differences(scores: Sequence[float], reference: Sequence[float]) -> list[float]:
    if len(scores) != len(reference) or not scores:
        raise ValueError(f"paired scores need the same questions: {len(scores)} vs {len(reference)}")
    return [a - b for a, b in zip(scores, reference)]


def paired_difference_interval(scores: Sequence[float], reference: Sequence[float], *, resamples: int,
                               level: float, seed: int = 0) -> tuple[float, float]:
    """Two-sided bootstrap interval of mean(scores - reference), the same questions resampled for both."""
    return bootstrap_interval(_differences(scores, reference), resamples=resamples, level=level, seed=seed)


def paired_lower_bound(scores: Sequence[float], reference: Sequence[float], *, resamples: int, level: float,
                       seed: int = 0) -> float:
    """One-sided ``level`` lower confidence bound of mean(scores - reference): the (1 - level) percentile of the
    paired bootstrap means (percentile method, same indexing as the two-sided interval's lower end)."""
    means = bootstrap_means(_differences(scores, reference), resamples=resamples, seed=seed)
    return percentile_interval(means.tolist(), 2 * level - 1)[0]


def median_range(values: Sequence[float]) -> tuple[float | None, list[float] | None]:
    """The median of repeated measurements with their smallest and largest: how every timing and ratio is quoted
    (None, None for none)."""
    if not values:
        return None, None
    return statistics.median(values), [min(values), max(values)]
