"""The statistics every page quotes: percentile bootstrap intervals over questions, paired differences, a paired
sign-flip test, and the rule for calling a difference significant (p < 0.05 and an interval that excludes zero under
every resampling seed of SEEDS), so no page words an effect more strongly than these numbers allow. Given
``clusters`` (each question's context), every one of them resamples, or flips, whole contexts."""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from droidspeak import stats

RESAMPLES = 10_000
LEVEL = 0.95
SEEDS = range(10)  # a difference is called significant only if every one of these resampling seeds agrees


def bootstrap_interval(scores: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0, clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores`` at the pages' resamples and level."""
    return stats.bootstrap_interval(scores, resamples=resamples, level=level, seed=seed, clusters=clusters)


def paired_difference_interval(scores: Sequence[float], reference: Sequence[float], *, resamples: int = RESAMPLES,
                               level: float = LEVEL, seed: int = 0,
                               clusters: Sequence[Hashable] | None = None) -> tuple[float, float]:
    """Bootstrap interval of mean(scores - reference), the same questions (or whole contexts) resampled for both."""
    return stats.paired_difference_interval(scores, reference, resamples=resamples, level=level, seed=seed,
                                            clusters=clusters)


def sign_flip_p(diffs: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
                clusters: Sequence[Hashable] | None = None) -> float:
    """Two-sided p-value of a paired sign-flip (permutation) test that the mean difference is 0: exact over every
    sign pattern of the non-zero differences when there are at most 2^14 of them, else ``resamples`` random ones.
    With ``clusters``, a context's questions keep one sign together (what is flipped is each context's total)."""
    if clusters is not None:
        diffs = stats.cluster_sums(diffs, clusters)[0].tolist()
    nonzero = np.asarray([d for d in diffs if d != 0], dtype=np.float64)
    if nonzero.size == 0:
        return 1.0
    if nonzero.size <= 14:
        signs = 1 - 2 * ((np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, nonzero.size))
    observed = abs(nonzero.sum())
    return float(np.mean(np.abs(signs @ nonzero) >= observed - 1e-12))


def paired_delta(scores: Sequence[float] | None, reference: Sequence[float] | None,
                 clusters: Sequence[Hashable] | None = None) -> dict:
    """``delta`` (mean of scores minus reference's), its paired ``delta_ci`` (seed 0), the sign-flip test's ``p``,
    and ``significant``: p < 0.05 and the interval excludes 0 under every seed of SEEDS; ``clusters``: contexts
    resampled and flipped whole. None where the questions differ."""
    if not scores or not reference or len(scores) != len(reference):
        return {"delta": None, "delta_ci": None, "p": None, "significant": None}
    intervals = [paired_difference_interval(scores, reference, seed=seed, clusters=clusters) for seed in SEEDS]
    p = sign_flip_p([a - b for a, b in zip(scores, reference)], clusters=clusters)
    return {"delta": statistics.fmean(scores) - statistics.fmean(reference), "delta_ci": intervals[0], "p": p,
            "significant": p < 1 - LEVEL and all(low > 0 or high < 0 for low, high in intervals)}


def meets_target(entry: Mapping, receiver_quality: float) -> bool | None:
    """Whether a plan chosen at a tolerance holds on these questions: the lower end of its paired interval against
    the receiver (``entry['delta_ci']``) stays above −tolerance × the receiver's quality (None: no tolerance or no
    interval)."""
    if entry.get("tolerance") is None or entry.get("delta_ci") is None:
        return None
    return entry["delta_ci"][0] >= -entry["tolerance"] * receiver_quality


def paired_test_text(d: Mapping) -> str:
    """The paired test as the pages print it: p, and whether the difference is significant (– for none)."""
    if d.get("p") is None:
        return "–"
    p = "p < 0.001" if d["p"] < 0.001 else f"p = {d['p']:.3f}"
    return f"{p}, {'significant' if d['significant'] else 'not significant'}"


def interval_text(ci, signed: bool = False) -> str:
    """A 95% interval as the pages print it (– where there is none); ``signed`` for differences."""
    form = "{:+.3f}" if signed else "{:.3f}"
    return "–" if ci is None else f"[{form.format(ci[0])}, {form.format(ci[1])}]"


TRUSTED_TIMING = (5, 3)  # contexts x interleaved rounds below which a page calls a timing cheap


def timing_fields(row: Mapping) -> dict:
    """What a page entry keeps of a row's timing: its median speedup, that speedup's range, and how it was timed
    (contexts, rounds)."""
    return {"speedup": row.get("speedup"), "speedup_spread": row.get("speedup_spread"),
            "timed": [row.get("timed_contexts"), row.get("timed_repeats")]}


def ranged_text(value: float | None, spread: Sequence[float] | None, *, digits: int = 2, unit: str = "") -> str:
    """A median with the smallest and largest of what it is the median of: ``2.97× [2.57–3.28]``, ``104.9 s
    [98.1–110.2]`` (– where unmeasured). Two such numbers differ only where their ranges do not overlap."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}" + ("" if spread is None else f" [{spread[0]:.{digits}f}–{spread[1]:.{digits}f}]")


def speedup_text(speedup: float | None, spread: Sequence[float] | None) -> str:
    """A median speedup with its smallest and largest ratio over the timed (context, round)s."""
    return ranged_text(speedup, spread, unit="×")


def timing_text(contexts: int | None, repeats: int | None, ranged: bool = True) -> str:
    """How a page's speedups were timed (``ranged``: printed with their ranges), and whether that is below what a
    reader should trust."""
    if not contexts or not repeats:
        return "one batched timing (not re-timed)"
    cheap = contexts < TRUSTED_TIMING[0] or repeats < TRUSTED_TIMING[1]
    return (f"median over {contexts} context{'s' if contexts != 1 else ''} × {repeats} interleaved rounds"
            + (" [smallest–largest]" if ranged else "")
            + (f" — a cheap timing, below {TRUSTED_TIMING[0]} × {TRUSTED_TIMING[1]}" if cheap else ""))
