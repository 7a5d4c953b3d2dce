"""The bootstrap every number with an interval rests on: percentile intervals of a mean over questions, paired
differences (the same questions resampled for both), and a paired one-sided lower bound (a profile's choice rule).
Where a context's questions are known (``clusters``: each question's context), a resample draws whole contexts: the
questions over one document are not independent draws, so resampling them one by one would understate the spread.
Deterministic for a seed, so a page, a profile and a test read the same interval."""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Sequence

import numpy as np


def percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The middle ``level`` of ``values`` (what every bootstrap interval here is)."""
    values = sorted(values)
    tail = (1 - level) / 2
    low = values[int(tail * (len(values) - 1))]
    high = values[int(round((1 - tail) * (len(values) - 1)))]
    return low, high


def cluster_sums(scores: Sequence[float], clusters: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's score total and question count, clusters in order of first appearance."""
    if len(clusters) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(clusters)} cluster labels: a layout of other questions")
    index = {label: i for i, label in enumerate(dict.fromkeys(clusters))}
    labels = np.asarray([index[label] for label in clusters])
    totals = np.bincount(labels, weights=np.asarray(scores, dtype=np.float64), minlength=len(index))
    return totals, np.bincount(labels, minlength=len(index)).astype(np.float64)


def _resample_indices(size: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` draws of ``size`` indices with replacement: every bootstrap here draws through this, so bounds
    computed apart (one plan's, many plans' together) read the same resamples."""
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def bootstrap_means(scores: Sequence[float], *, resamples: int, seed: int = 0,
                    clusters: Sequence[Hashable] | None = None) -> np.ndarray:
    """The mean of ``scores`` in each of ``resamples`` resamples with replacement: of questions, or, with
    ``clusters`` (each question's context), of whole contexts (the mean over the questions they bring)."""
    if not scores:
        raise ValueError("no scores to bootstrap")
    if clusters is None:
        picks = _resample_indices(len(scores), resamples, seed)
        return np.asarray(scores, dtype=np.float64)[picks].mean(axis=1)
    totals, counts = cluster_sums(scores, clusters)
    picks = _resample_indices(len(totals), resamples, seed)
    return totals[picks].sum(axis=1) / counts[picks].sum(axis=1)


def bootstrap_interval(scores: Sequence[float], *, resamples: int, level: float, seed: int = 0,
                       clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Two-sided percentile bootstrap interval of the mean of ``scores`` (``clusters``: contexts resampled whole)."""
    return percentile_interval(bootstrap_means(scores, resamples=resamples, seed=seed, clusters=clusters).tolist(),
                               level)


def _differences(scores: Sequence[float], reference: Sequence[float]) -> list[float]:
    if len(scores) != len(reference) or not scores:
        raise ValueError(f"paired scores need the same questions: {len(scores)} vs {len(reference)}")
    return [a - b for a, b in zip(scores, reference)]


def paired_difference_interval(scores: Sequence[float], reference: Sequence[float], *, resamples: int,
                               level: float, seed: int = 0,
                               clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Two-sided bootstrap interval of mean(scores - reference), the same questions (``clusters``: the same whole
    contexts) resampled for both."""
    return bootstrap_interval(_differences(scores, reference), resamples=resamples, level=level, seed=seed,
                              clusters=clusters)


def paired_lower_bound(scores: Sequence[float], reference: Sequence[float], *, resamples: int, level: float,
                       seed: int = 0) -> float:
    """One-sided ``level`` lower confidence bound of mean(scores - reference): the (1 - level) percentile of the
    paired bootstrap means (percentile method, same indexing as the two-sided interval's lower end)."""
    means = bootstrap_means(_differences(scores, reference), resamples=resamples, seed=seed)
    return percentile_interval(means.tolist(), 2 * level - 1)[0]


def simultaneous_lower_bounds(scores_by_plan: Sequence[Sequence[float]], reference: Sequence[float], *,
                              resamples: int, level: float, seed: int = 0) -> list[float]:
    """One-sided lower confidence bounds of mean(scores - reference) for many plans at once, meant to hold together
    with probability ``level``: each plan's mean difference minus c × its bootstrap standard error, where c is the
    ``level`` quantile, over the paired resamples of questions (the same for every plan, as
    :func:`paired_lower_bound` draws them), of the largest studentized shortfall of any plan's resampled mean below
    its observed one (single-step max-t, Westfall & Young 1993). For one plan this is :func:`paired_lower_bound`'s
    percentile bound (up to rounding); plans that always agree widen it no more than one does.

    Why: a search that keeps the fewest-layer plan among many, each bounded alone, keeps a plan whose true loss is past
    the tolerance more often than 1 − ``level`` of the time; these bounds hold that near 1 − ``level``, not exactly: a
    bootstrap on a few dozen questions is optimistic (tests/test_choice_rule.py measures the shortfall on 30 plans),
    and questions are resampled as independent, though a context's questions are not. Like the percentile bound, a plan
    that never differs from the reference in a resample keeps its mean as its bound: a plan that matched the receiver
    on every question by luck is not caught, whatever the number of plans."""
    if not scores_by_plan:
        raise ValueError("no plans to bound")
    differences = np.array([_differences(scores, reference) for scores in scores_by_plan], dtype=np.float64)
    questions = differences.shape[1]
    picks = _resample_indices(questions, resamples, seed)
    counts = np.zeros((resamples, questions))
    np.add.at(counts, (np.arange(resamples)[:, None], picks), 1.0)  # a plans x resamples x questions array, avoided
    means = differences @ counts.T / questions  # plans x resamples
    observed, spread = differences.mean(axis=1), means.std(axis=1)
    varies = spread > 1e-12  # a constant difference resampled leaves rounding noise, not spread
    if not varies.any():
        return observed.tolist()
    deviations = (observed[varies, None] - means[varies]) / spread[varies, None]
    spread = np.where(varies, spread, 0.0)
    largest = np.sort(deviations.max(axis=0))
    critical = float(largest[resamples - 1 - int((1 - level) * (resamples - 1))])  # percentile_interval's order
    return (observed - critical * spread).tolist()


def median_range(values: Sequence[float]) -> tuple[float | None, list[float] | None]:
    """The median of repeated measurements with their smallest and largest: how every timing and ratio is quoted
    (None, None for none)."""
    if not values:
        return None, None
    return statistics.median(values), [min(values), max(values)]
