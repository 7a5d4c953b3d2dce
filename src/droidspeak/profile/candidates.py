"""Which plans profiling evaluates: the paper's aligned contiguous groups, single-layer sensitivity plans and
the fixed-layer-count plans of varying transitions (Fig. 10), drawn on ``granularity``-aligned blocks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from droidspeak.engine.plan import parse_plan
from droidspeak.errors import PlanError
from droidspeak.profile.points import Group, group_plan


def aligned_blocks(num_layers: int, granularity: int) -> list[Group]:
    """Consecutive aligned blocks of ``granularity`` layers; the last one is shorter when L % g != 0."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if granularity < 1:
        raise ValueError(f"granularity must be >= 1, got {granularity}")
    return [(s, min(s + granularity, num_layers) - 1) for s in range(0, num_layers, granularity)]


def contiguous_groups(num_layers: int, granularity: int = 1) -> list[Group]:
    """Every contiguous group whose boundaries are aligned to ``granularity`` (inclusive ``(start, end)``).

    With B = ceil(L / g) blocks there are B(B+1)/2 groups — 528 for L=32, g=1 and 136 at g=2. The full
    group ``(0, L-1)`` is included; the empty plan (full_reuse) has no group — :func:`single_group_plans`
    adds both endpoints as plan strings.
    """
    units = aligned_blocks(num_layers, granularity)
    return [(units[i][0], units[j][1]) for i in range(len(units)) for j in range(i, len(units))]


def single_group_plans(num_layers: int, granularity: int = 1, max_layers: int | None = None) -> list[str]:
    """The profiling candidates of the paper: full_reuse, every aligned contiguous group (of at most
    ``max_layers`` layers, where given), full_prefill."""
    groups = [g for g in contiguous_groups(num_layers, granularity) if g != (0, num_layers - 1)
              and (max_layers is None or g[1] - g[0] + 1 <= max_layers)]
    return ["full_reuse"] + [group_plan([g], num_layers) for g in groups] + ["full_prefill"]


def single_layer_plan(layer: int, num_layers: int) -> str:
    """Single-layer sensitivity plan: reuse only ``layer``'s K/V, recompute every other layer (paper Fig. 7)."""
    if not 0 <= layer < num_layers:
        raise PlanError(f"layer {layer} is out of range for a model with {num_layers} layers")
    if num_layers == 1:
        return "full_reuse"
    groups = [g for g in ((0, layer - 1), (layer + 1, num_layers - 1)) if g[0] <= g[1]]
    return group_plan(groups, num_layers)


def transition_plans(
    num_layers: int,
    recomputed: int,
    max_transitions: int,
    *,
    granularity: int = 1,
    per_count: int = 8,
    include: Iterable[int] = (),
    seed: int = 0,
) -> dict[int, list[str]]:
    """For Fig. 10: up to ``per_count`` plans per transition count t = 0..max_transitions, each recomputing exactly
    ``recomputed`` layers, every layer of ``include`` among them.

    Why ``include``: a fixed layer count does not isolate the transitions. Which layers a plan recomputes matters
    far more (a plan that skips a critical layer loses whatever its layout), so one plan per count confounds the
    two. Holding the critical layers in every plan leaves only the layout of the others to vary.
    Layouts are drawn at random (seeded; random group sizes and gaps on the ``granularity``-aligned blocks) and
    deduplicated, so a small space comes out complete and a 32-layer model stays tractable. Counts with no
    feasible layout are absent.
    """
    units = aligned_blocks(num_layers, granularity)
    if recomputed % granularity and recomputed != num_layers:
        raise ValueError(f"recomputed={recomputed} is not a multiple of granularity={granularity}")
    if not 0 < recomputed < num_layers:
        raise ValueError(f"recomputed must lie in 1..{num_layers - 1} to vary transitions, got {recomputed}")
    n_take = -(-recomputed // granularity)
    required = set(include)
    rng = random.Random(seed)
    found: dict[int, set[tuple[Group, ...]]] = {t: set() for t in range(max_transitions + 1)}
    for _ in range(200 * per_count * (max_transitions + 1)):
        t = rng.randint(0, max_transitions)
        blocks = _random_layout(rng, n_take, len(units) - n_take, t) if len(found[t]) < per_count else None
        if blocks is None:
            continue
        groups = tuple((units[a][0], units[b][1]) for a, b in blocks)
        if required <= {layer for s, e in groups for layer in range(s, e + 1)}:
            found[t].add(groups)
    return {t: sorted(group_plan(g, num_layers) for g in layouts) for t, layouts in found.items() if layouts}


def recomputes_all(plan: str, layers: Iterable[int], num_layers: int) -> bool:
    """Whether the layer plan ``plan`` recomputes every one of ``layers`` (e.g. the critical ones)."""
    parsed = parse_plan(plan, num_layers)
    return parsed.kind == "full_prefill" or set(layers) <= set(parsed.recomputed_layers)


def _random_layout(rng: random.Random, n_take: int, n_free: int, transitions: int) -> list[Group] | None:
    """``n_take`` of ``n_take + n_free`` blocks as groups (block indices) with ``transitions`` groups not at block 0.

    Either the first group starts at block 0 (``transitions + 1`` groups) or none does (``transitions`` groups);
    group sizes are a random composition, and the free blocks are spread over the gaps (inner gaps >= 1).
    """
    at_zero = transitions == 0 or rng.random() < 0.5
    n_groups = transitions + 1 if at_zero else transitions
    spare = n_free - (n_groups - 1) - (0 if at_zero else 1)  # free blocks left after the mandatory gaps
    if not 1 <= n_groups <= n_take or spare < 0:
        return None
    sizes = _composition(rng, n_take, n_groups, minimum=1)
    slack = _composition(rng, spare, n_groups if at_zero else n_groups + 1, minimum=0)
    gaps = ([0] if at_zero else [1 + slack.pop(0)]) + [1 + x for x in slack[: n_groups - 1]]
    groups, pos = [], 0
    for gap, size in zip(gaps, sizes):
        pos += gap
        groups.append((pos, pos + size - 1))
        pos += size
    return groups


def _composition(rng: random.Random, total: int, parts: int, *, minimum: int) -> list[int]:
    """``total`` split into ``parts`` random parts, each >= ``minimum`` (stars and bars)."""
    spare = total - minimum * parts
    cuts = sorted(rng.sample(range(spare + parts - 1), parts - 1))
    edges = [-1, *cuts, spare + parts - 1]
    return [minimum + edges[i + 1] - edges[i] - 1 for i in range(parts)]
