"""Whose critical layers are they? Two profiles' single-layer sensitivities side by side, with their sampling noise.

A critical set read off a profile's questions is an estimate: a layer one answer over the 10% line is critical in one
draw of the questions and not in the next. So two profiles are compared over bootstrap resamples of their questions
(the same resamples for both where they read the same questions, independent ones where not): the overlap of their
critical sets (Jaccard) and the rank correlation of their per-layer drops, each with a percentile interval, and the
layers whose status differs in at least ``level`` of the resamples: a difference the questions cannot explain.
Which profiles to compare follows from the pairs: the same receiver fed by two senders, one sender feeding two
receivers, and a receiver beside its seed twin (the same recipe trained with another seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from droidspeak.profile.profile_file import Profile
from droidspeak.profile.sensitivity import critical_layers

THRESHOLD = 0.10  # the paper's: a layer is critical when reusing it alone loses over 10% of the receiver's quality
RESAMPLES, LEVEL = 2000, 0.95
SAME_RECEIVER, SAME_SENDER, SEED_TWINS = "same receiver, other sender", "same sender, other receiver", "seed twins"


@dataclass(frozen=True)
class SetComparison:
    """Two profiles' critical sets (``first``, ``second``: pair names) and how far their agreement survives
    resampling the questions."""

    first: str
    second: str
    relation: str
    critical_first: tuple[int, ...]
    critical_second: tuple[int, ...]
    jaccard: float
    jaccard_interval: tuple[float, float]
    rank_correlation: float
    rank_interval: tuple[float, float]
    only_first: tuple[int, ...]  # critical in first and not in second in at least `level` of the resamples
    only_second: tuple[int, ...]
    ceiling: tuple[float, float]  # each profile's mean Jaccard with itself over two independent resamples: how
    # much overlap its own questions allow, the most two profiles could show
    paired: bool  # both read the same questions, resampled together
    resamples: int
    level: float


def _sensitivity(profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """The receiver's per-question scores (n,) and each layer's, reused alone (layers, n)."""
    entries = sorted(profile.single_layer, key=lambda s: s.layer)
    if not entries or profile.reference_per_input is None or any(s.per_input is None for s in entries):
        raise ValueError(f"profile {profile.pair} on {profile.task}: no per-question single-layer scores to resample")
    if [s.layer for s in entries] != list(range(profile.num_layers)):
        raise ValueError(f"profile {profile.pair} on {profile.task}: single-layer entries do not cover every layer")
    return np.asarray(profile.reference_per_input, float), np.asarray([s.per_input for s in entries], float)


def _drops(reference: np.ndarray, layers: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Relative drop of each layer in each resample: (resamples, layers)."""
    ref = reference[picks].mean(axis=1)
    per_layer = layers[:, picks].mean(axis=2).T
    return (ref[:, None] - per_layer) / np.where(ref == 0, np.nan, np.abs(ref))[:, None]


def _critical(drops: np.ndarray) -> np.ndarray:
    return drops > THRESHOLD + 1e-9  # as sensitivity.critical_layers: a drop of exactly the threshold is not critical


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties sharing their mean rank (as Spearman's correlation takes them)."""
    out = np.empty_like(values)
    for row, v in enumerate(values):
        ranks = np.empty(len(v))
        ranks[np.argsort(v, kind="stable")] = np.arange(len(v))
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        out[row] = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    return np.divide((ra * rb).sum(axis=1), denominator, out=np.full(len(ra), np.nan), where=denominator > 0)


def _jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    union = (a | b).sum(axis=1)
    return np.where(union == 0, 1.0, (a & b).sum(axis=1) / np.maximum(union, 1))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))


def compare_critical_sets(first: Profile, second: Profile, relation: str, *, resamples: int = RESAMPLES,
                          level: float = LEVEL, seed: int = 0) -> SetComparison:
    """``first`` and ``second`` (profiles of one layer count) compared over ``resamples`` draws of their questions."""
    if first.num_layers != second.num_layers:
        raise ValueError(f"{first.pair} and {second.pair}: {first.num_layers} against {second.num_layers} layers")
    (ref_a, layers_a), (ref_b, layers_b) = _sensitivity(first), _sensitivity(second)
    rng = np.random.default_rng(seed)
    paired = first.inputs is not None and first.inputs == second.inputs

    def draw(n: int) -> np.ndarray:
        return rng.integers(0, n, size=(resamples, n))

    picks_a = draw(len(ref_a))
    picks_b = picks_a if paired else draw(len(ref_b))
    drops_a, drops_b = _drops(ref_a, layers_a, picks_a), _drops(ref_b, layers_b, picks_b)
    critical_a, critical_b = _critical(drops_a), _critical(drops_b)
    ceiling = tuple(float(np.mean(_jaccard(critical, _critical(_drops(ref, layers, draw(len(ref)))))))
                    for critical, ref, layers in ((critical_a, ref_a, layers_a), (critical_b, ref_b, layers_b)))
    jaccard, spearman = _jaccard(critical_a, critical_b), _spearman(drops_a, drops_b)
    point_a = critical_layers(first.single_layer_table, first.reference_quality, THRESHOLD)
    point_b = critical_layers(second.single_layer_table, second.reference_quality, THRESHOLD)
    whole_a = _drops(ref_a, layers_a, np.arange(len(ref_a))[None])
    whole_b = _drops(ref_b, layers_b, np.arange(len(ref_b))[None])
    return SetComparison(
        first=first.pair, second=second.pair, relation=relation,
        critical_first=tuple(point_a), critical_second=tuple(point_b),
        jaccard=float(_jaccard(np.isin(np.arange(first.num_layers), point_a)[None],
                               np.isin(np.arange(first.num_layers), point_b)[None])[0]),
        jaccard_interval=_interval(jaccard, level),
        rank_correlation=float(_spearman(whole_a, whole_b)[0]),
        rank_interval=_interval(spearman, level),
        only_first=tuple(int(i) for i in np.flatnonzero((critical_a & ~critical_b).mean(axis=0) >= level)),
        only_second=tuple(int(i) for i in np.flatnonzero((critical_b & ~critical_a).mean(axis=0) >= level)),
        ceiling=ceiling, paired=paired, resamples=resamples, level=level,
    )


def _recipe_without_seed(recipe: Mapping) -> dict:
    return {k: v for k, v in recipe.items() if k != "seed" and v is not None}


def relation_of(first: Profile, second: Profile, recipes: Mapping[str, Mapping]) -> str | None:
    """How two profiles' pairs relate (None: not a comparison that isolates anything). ``recipes``: each model's
    training recipe (a variant's or an extension's), to tell seed twins: the same recipe and another seed."""
    if first.receiver == second.receiver and first.sender != second.sender:
        return SAME_RECEIVER
    if first.sender != second.sender or first.receiver == second.receiver:
        return None
    a, b = recipes.get(first.receiver), recipes.get(second.receiver)
    if a is not None and b is not None and a.get("seed") != b.get("seed") \
            and _recipe_without_seed(a) == _recipe_without_seed(b):
        return SEED_TWINS
    return SAME_SENDER


def side_by_side(profiles: Sequence[Profile], recipes: Mapping[str, Mapping], **kwargs) -> list[SetComparison]:
    """Every related pair of ``profiles`` (each on its receiver's own task, with per-question sensitivities)."""
    usable = [p for p in profiles if p.single_layer and p.reference_per_input is not None]
    return [compare_critical_sets(a, b, relation, **kwargs)
            for i, a in enumerate(usable) for b in usable[i + 1:]
            if a.num_layers == b.num_layers and (relation := relation_of(a, b, recipes)) is not None]
