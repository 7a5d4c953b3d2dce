"""Single-layer sensitivity: which layers are critical (reusing them alone costs too much quality) and the
per-layer harms the additive multi-group model is built from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def _layer_table(table: Mapping[int, float] | Sequence[float]) -> dict[int, float]:
    if isinstance(table, Mapping):
        return {int(k): float(v) for k, v in table.items()}
    return {i: float(v) for i, v in enumerate(table)}


def relative_drop(quality: float, reference_quality: float) -> float:
    """(reference - quality) / |reference|; 0 when the reference is 0 and quality matches, else ±inf."""
    if reference_quality == 0:
        return 0.0 if quality == 0 else math.copysign(math.inf, -quality)
    return (reference_quality - quality) / abs(reference_quality)


def critical_layers(
    single_layer_table: Mapping[int, float] | Sequence[float],
    baseline_quality: float,
    threshold: float = 0.10,
) -> list[int]:
    """Layers whose reuse alone (every other layer recomputed) costs more than ``threshold`` relative quality.

    ``single_layer_table`` maps layer -> quality with only that layer's K/V reused (a sequence is indexed by
    layer); ``baseline_quality`` is the receiver's own (full-prefill) quality. Paper: >10% F1 drop.
    """
    table = _layer_table(single_layer_table)
    return sorted(layer for layer, q in table.items() if is_critical(relative_drop(q, baseline_quality), threshold))


def is_critical(drop, threshold: float = 0.10):
    """A relative drop over ``threshold`` (a float, or an array of them); exactly the threshold, up to float noise,
    is not critical."""
    return drop > threshold + 1e-9


def harm_from_single_layer(
    single_layer_table: Mapping[int, float] | Sequence[float],
    reference_quality: float,
    *,
    num_layers: int | None = None,
    full_reuse_quality: float | None = None,
    clip_negative: bool = True,
) -> list[float]:
    """Per-layer "harm if reused" scores for the additive model, from single-layer sensitivity.

    harm[l] = reference - quality(reuse only l). Negative harms (reusing l looked better: noise) are clipped
    to 0 unless ``clip_negative=False``. With ``full_reuse_quality`` the harms are rescaled so that they sum
    to reference - full_reuse_quality, i.e. the model reproduces both endpoints (calibration; single-layer
    drops usually under-count the compounding of many reused layers). Missing layers get harm 0.
    """
    table = _layer_table(single_layer_table)
    n = num_layers if num_layers is not None else (max(table) + 1 if table else 0)
    harm = [reference_quality - table[layer] if layer in table else 0.0 for layer in range(n)]
    if clip_negative:
        harm = [max(0.0, h) for h in harm]
    if full_reuse_quality is not None:
        total, want = sum(harm), reference_quality - full_reuse_quality
        if total > 0 and want > 0:
            harm = [h * want / total for h in harm]
    return harm
