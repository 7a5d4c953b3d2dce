"""Whose critical layers are they? Two profiles' single-layer sensitivities side by side, with their sampling noise.

A critical set read off a profile's questions is an estimate: a layer one answer over the 10% line is critical in one
draw of the questions and not in the next. So two profiles are compared over bootstrap resamples of their questions.
Their critical sets' overlap (Jaccard) over independent resamples of each is set against each profile's overlap with
an independent resample of itself (its self-agreement: what two draws of one profile show); the rank correlation of
their per-layer drops is given with the middle of its resampled values (the same resamples for both where they read
the same questions); and a layer is called different only where its status (critical or not) differs in at least
``level`` of those resamples. Which profiles to compare follows from the pairs: the same receiver fed by two senders,
one sender feeding two receivers, and a receiver beside its seed twin (the same recipe trained with another seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from droidspeak.profile.choice import CHOICE_RESAMPLES
from droidspeak.profile.profile_file import Profile
from droidspeak.profile.ranks import spearman
from droidspeak.profile.sensitivity import critical_layers, is_critical
from droidspeak.stats import percentile_interval

LEVEL = 0.95
SAME_RECEIVER, SAME_SENDER, SEED_TWINS = "same receiver, other sender", "same sender, other receiver", "seed twins"
TWINS = {"seed": SEED_TWINS, "train_size": "twins but for their training contexts' size",
         "steps": "twins but for their training steps"}  # receivers whose recipes differ in that one field only
OTHER_TASK = "same sender, other receiver and task"  # the receiver, its task and its questions all differ


@dataclass(frozen=True)
class SetComparison:
    """Two profiles' critical sets (``first``, ``second``: pair names) and how far their agreement survives
    resampling the questions. Jaccard values are NaN where neither set holds a layer (nothing to overlap)."""

    first: str
    second: str
    relation: str
    critical_first: tuple[int, ...]
    critical_second: tuple[int, ...]
    jaccard: float  # of the two critical sets, on all the questions
    jaccard_resampled: float  # mean over independent resamples of each profile
    self_agreement: tuple[float, float]  # each profile's mean Jaccard with an independent resample of itself
    rank_correlation: float  # Spearman, per-layer drops, on all the questions
    rank_range: tuple[float, float]  # the middle `level` of it over the resamples
    differs_first: tuple[int, ...]  # critical for first and not for second in at least `level` of the resamples
    differs_second: tuple[int, ...]
    paired: bool  # both read the same questions of one task, resampled together
    undefined: int  # resamples where a statistic was undefined (no critical layer on either side, no rank spread)


def _sensitivity(profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """The receiver's per-question scores (n,) and each layer's, reused alone (layers, n)."""
    entries = sorted(profile.single_layer, key=lambda s: s.layer)
    if not entries or profile.reference_per_input is None or any(s.per_input is None for s in entries):
        raise ValueError(f"profile {profile.pair} on {profile.task}: no per-question single-layer scores to resample")
    if [s.layer for s in entries] != list(range(profile.num_layers)):
        raise ValueError(f"profile {profile.pair} on {profile.task}: single-layer entries do not cover every layer")
    return np.asarray(profile.reference_per_input, float), np.asarray([s.per_input for s in entries], float)


def _drops(reference: np.ndarray, layers: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Relative drop of each layer in each resample (resamples, layers); NaN where the receiver scores 0."""
    ref = reference[picks].mean(axis=1)
    per_layer = layers[:, picks].mean(axis=2).T
    return (ref[:, None] - per_layer) / np.where(ref == 0, np.nan, np.abs(ref))[:, None]


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair; NaN where either row holds a NaN or has no spread."""
    return np.array([spearman(x.tolist(), y.tolist()) if np.isfinite(x).all() and np.isfinite(y).all() else np.nan
                     for x, y in zip(a, b, strict=True)])


def _jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two boolean (rows, layers) arrays; NaN where both are empty."""
    union = (a | b).sum(axis=1)
    return np.divide((a & b).sum(axis=1), union, out=np.full(len(a), np.nan), where=union > 0)


def _draws(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    return rng.integers(0, n, size=(resamples, n))


def self_agreement(profile: Profile, *, resamples: int = CHOICE_RESAMPLES, seed: int = 0) -> float:
    """Mean Jaccard of a profile's critical set in one resample of its questions with that in another, independent
    one: how much two draws of the same profile overlap (NaN if no resample has a critical layer)."""
    reference, layers = _sensitivity(profile)
    rng = np.random.default_rng(seed)
    a, b = (is_critical(_drops(reference, layers, _draws(rng, len(reference), resamples))) for _ in range(2))
    overlap = _jaccard(a, b)
    return float(np.nanmean(overlap)) if np.isfinite(overlap).any() else float("nan")


def compare_critical_sets(first: Profile, second: Profile, relation: str, *, resamples: int = CHOICE_RESAMPLES,
                          level: float = LEVEL, seed: int = 0,
                          agreement: tuple[float, float] | None = None) -> SetComparison:
    """``first`` and ``second`` (profiles of one layer count) compared over ``resamples`` draws of their questions;
    ``agreement``: their self-agreements, where already computed (the same in every comparison a profile is in)."""
    if first.num_layers != second.num_layers:
        raise ValueError(f"{first.pair} and {second.pair}: {first.num_layers} against {second.num_layers} layers")
    (ref_a, layers_a), (ref_b, layers_b) = _sensitivity(first), _sensitivity(second)
    rng = np.random.default_rng(seed)
    paired = first.task == second.task and first.inputs is not None and first.inputs == second.inputs
    picks_a = _draws(rng, len(ref_a), resamples)
    picks_b = picks_a if paired else _draws(rng, len(ref_b), resamples)
    drops_a, drops_b = _drops(ref_a, layers_a, picks_a), _drops(ref_b, layers_b, picks_b)
    critical_a, critical_b = is_critical(drops_a), is_critical(drops_b)
    apart_b = is_critical(_drops(ref_b, layers_b, _draws(rng, len(ref_b), resamples))) if paired else critical_b
    jaccard_apart, spearman = _jaccard(critical_a, apart_b), _spearman(drops_a, drops_b)
    point_a = critical_layers(first.single_layer_table, first.reference_quality)
    point_b = critical_layers(second.single_layer_table, second.reference_quality)
    whole_a = _drops(ref_a, layers_a, np.arange(len(ref_a))[None])
    whole_b = _drops(ref_b, layers_b, np.arange(len(ref_b))[None])
    in_a, in_b = (np.isin(np.arange(first.num_layers), point)[None] for point in (point_a, point_b))
    rank_values = spearman[np.isfinite(spearman)].tolist()
    return SetComparison(
        first=first.pair, second=second.pair, relation=relation,
        critical_first=tuple(point_a), critical_second=tuple(point_b),
        jaccard=float(_jaccard(in_a, in_b)[0]),
        jaccard_resampled=float(np.nanmean(jaccard_apart)) if np.isfinite(jaccard_apart).any() else float("nan"),
        self_agreement=agreement or (self_agreement(first, resamples=resamples, seed=seed),
                                     self_agreement(second, resamples=resamples, seed=seed)),
        rank_correlation=float(_spearman(whole_a, whole_b)[0]),
        rank_range=percentile_interval(rank_values, level) if rank_values else (float("nan"), float("nan")),
        differs_first=tuple(int(i) for i in np.flatnonzero((critical_a & ~critical_b).mean(axis=0) >= level)),
        differs_second=tuple(int(i) for i in np.flatnonzero((critical_b & ~critical_a).mean(axis=0) >= level)),
        paired=paired,
        undefined=int((~np.isfinite(jaccard_apart)).sum() + (~np.isfinite(spearman)).sum()),
    )


def _differing(first: Mapping, second: Mapping) -> set[str]:
    """The recipe fields two receivers' recipes set differently (unset fields left out)."""
    return {k for k in {**first, **second} if first.get(k) != second.get(k)}


def relation_of(first: Profile, second: Profile, recipes: Mapping[str, Mapping]) -> str | None:
    """How two profiles' pairs relate (None: not a comparison that isolates anything). ``recipes``: each model's
    training recipe with its seed filled in, to tell twins: receivers whose recipes differ in one field of ``TWINS``
    (seed twins: the same recipe and another seed)."""
    if first.receiver == second.receiver and first.sender != second.sender:
        return SAME_RECEIVER if first.task == second.task else None
    if first.sender != second.sender or first.receiver == second.receiver:
        return None
    if first.task != second.task:
        return OTHER_TASK
    a, b = recipes.get(first.receiver), recipes.get(second.receiver)
    differing = _differing(a, b) if a is not None and b is not None else set()
    return TWINS[next(iter(differing))] if len(differing) == 1 and differing <= TWINS.keys() else SAME_SENDER


def side_by_side(profiles: Sequence[Profile], recipes: Mapping[str, Mapping], **kwargs) -> list[SetComparison]:
    """Every related pair of ``profiles`` that have per-question sensitivities and one layer count."""
    usable = [p for p in profiles if p.single_layer and p.reference_per_input is not None]
    agreement = {id(p): self_agreement(p, **{k: v for k, v in kwargs.items() if k in ("resamples", "seed")})
                 for p in usable}
    return [compare_critical_sets(a, b, relation, agreement=(agreement[id(a)], agreement[id(b)]), **kwargs)
            for i, a in enumerate(usable) for b in usable[i + 1:]
            if a.num_layers == b.num_layers and (relation := relation_of(a, b, recipes)) is not None]
