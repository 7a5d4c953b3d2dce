"""Plan search over a pair's profiled quality: candidates, Pareto frontier, plan choice, multi-group search.

Why this module exists: profiling a pair (paper §5) is "evaluate many plans, keep the frontier, pick the
cheapest plan close enough to the receiver's own quality". Everything here is pure — plans go in as contract
strings, qualities as floats — so the model-running side only supplies a ``score(plan) -> float`` callable
and the searches can be tested on synthetic tables with a known optimum.

Conventions used throughout:
- quality is higher-is-better (F1, accuracy, Rouge-L, edit similarity, or a proxy such as minus KL);
- ``recomputed_layers`` counts layers the receiver computes over the context (``full_reuse`` = 0,
  ``full_prefill`` = num_layers); a group that starts at layer 0 costs no transition (embeddings suffice),
  matching :attr:`droidspeak.plan.RecomputePlan.transitions`;
- ``recompute:0-(L-1)`` computes exactly what ``full_prefill`` computes, so candidate lists name it
  ``full_prefill``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from droidspeak.errors import PlanError
from droidspeak.plan import DEFAULT_PROFILE_TOLERANCE, format_plan, parse_plan, recompute

Group = tuple[int, int]


class HasPoints(Protocol):
    """Anything with measured points and the receiver's reference quality (e.g. profile_file.Profile)."""

    points: Sequence["ProfilePoint"]
    reference_quality: float


# ---- points and candidates --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfilePoint:
    """One evaluated plan: its contract string, how many layers it recomputes, and its measured quality.

    ``per_input`` holds the quality of each profiling input (same order for every point of a profile);
    ``cost`` is whatever the profiler measured (prefill seconds, compute fraction); ``transitions`` is the
    number of groups that start from the sender's E cache.
    """

    plan: str
    recomputed_layers: int
    quality: float
    per_input: tuple[float, ...] | None = None
    cost: float | None = None
    transitions: int | None = None

    @classmethod
    def from_plan(
        cls,
        plan: str,
        quality: float,
        *,
        num_layers: int,
        per_input: Sequence[float] | None = None,
        cost: float | None = None,
    ) -> "ProfilePoint":
        """Build a point, deriving ``recomputed_layers`` and ``transitions`` from the plan string."""
        layers, transitions = plan_layers(plan, num_layers)
        return cls(
            plan=str(plan),
            recomputed_layers=layers,
            quality=float(quality),
            per_input=tuple(float(q) for q in per_input) if per_input is not None else None,
            cost=None if cost is None else float(cost),
            transitions=transitions,
        )

    def to_dict(self) -> dict:
        out: dict = {"plan": self.plan, "recomputed_layers": self.recomputed_layers, "quality": self.quality}
        if self.transitions is not None:
            out["transitions"] = self.transitions
        if self.cost is not None:
            out["cost"] = self.cost
        if self.per_input is not None:
            out["per_input"] = list(self.per_input)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "ProfilePoint":
        per_input = data.get("per_input")
        return cls(
            plan=str(data["plan"]),
            recomputed_layers=int(data["recomputed_layers"]),
            quality=float(data["quality"]),
            per_input=None if per_input is None else tuple(float(q) for q in per_input),
            cost=None if data.get("cost") is None else float(data["cost"]),
            transitions=None if data.get("transitions") is None else int(data["transitions"]),
        )


def plan_layers(plan: str, num_layers: int) -> tuple[int, int]:
    """(recomputed layers, transitions) of a concrete plan string; full_prefill counts every layer, 0 transitions."""
    parsed = parse_plan(plan, num_layers)
    if parsed.kind == "full_prefill":
        return num_layers, 0
    if parsed.kind in ("full_reuse", "recompute"):
        return len(parsed.recomputed_layers), parsed.transitions
    raise PlanError(f"plan {plan!r} is not a layer plan (expected full_prefill, full_reuse or recompute:...)")


def group_plan(groups: Iterable[Group], num_layers: int) -> str:
    """Contract string for a set of disjoint groups; no groups = full_reuse, every layer = full_prefill."""
    plan = recompute(*groups).validate(num_layers)
    if len(plan.recomputed_layers) == num_layers:
        return "full_prefill"
    return format_plan(plan)


def _units(num_layers: int, granularity: int) -> list[Group]:
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
    units = _units(num_layers, granularity)
    return [(units[i][0], units[j][1]) for i in range(len(units)) for j in range(i, len(units))]


def single_group_plans(num_layers: int, granularity: int = 1) -> list[str]:
    """The profiling candidates of the paper: full_reuse, every aligned contiguous group, full_prefill."""
    groups = [g for g in contiguous_groups(num_layers, granularity) if g != (0, num_layers - 1)]
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
    units = _units(num_layers, granularity)
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


# ---- frontier and choice -----------------------------------------------------------------------------------
def _rank_key(p: ProfilePoint) -> tuple:
    """Among equal-layer points: higher quality, then fewer transitions, then lower cost, then plan text."""
    return (
        -p.quality,
        p.transitions if p.transitions is not None else math.inf,
        p.cost if p.cost is not None else math.inf,
        p.plan,
    )


def pareto_frontier(points: Iterable[ProfilePoint]) -> list[ProfilePoint]:
    """Points not dominated in (fewer recomputed layers, higher quality), sorted by recomputed layers.

    Quality strictly increases along the frontier, so "the best quality reachable with at most k layers"
    is the last frontier point with ``recomputed_layers <= k``. Points with NaN quality are ignored.
    """
    valid = [p for p in points if not math.isnan(p.quality)]
    best: list[ProfilePoint] = []
    for p in sorted(valid, key=lambda p: (p.recomputed_layers, *_rank_key(p))):
        if not best or p.quality > best[-1].quality:
            if best and best[-1].recomputed_layers == p.recomputed_layers:
                continue  # same layer count, lower-ranked tie-break
            best.append(p)
    return best


def best_by_budget(points: Iterable[ProfilePoint]) -> dict[int, ProfilePoint]:
    """The best point at each exact recomputed-layer count (e.g. best single group vs best multi-group at k)."""
    out: dict[int, ProfilePoint] = {}
    for p in sorted((p for p in points if not math.isnan(p.quality)), key=_rank_key):
        out.setdefault(p.recomputed_layers, p)
    return dict(sorted(out.items()))


def quality_target(reference_quality: float, tolerance: float) -> float:
    """Lowest acceptable quality: ``reference - tolerance * |reference|`` (= (1 - tol) * ref for ref >= 0)."""
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must lie in [0, 1), got {tolerance}")
    return reference_quality - tolerance * abs(reference_quality)


def choose_point(
    points: Iterable[ProfilePoint] | "HasPoints",
    reference_quality: float | None = None,
    tolerance: float = DEFAULT_PROFILE_TOLERANCE,
) -> ProfilePoint | None:
    """The frontier point :func:`choose_plan` picks, or None when no point is within the tolerance."""
    points, reference_quality = _points_and_reference(points, reference_quality)
    target = quality_target(reference_quality, tolerance)
    slack = 1e-12 * max(1.0, abs(reference_quality))  # float noise must not flip an exact tie
    for p in pareto_frontier(points):
        if p.quality >= target - slack:
            return p
    return None


def choose_plan(
    points: Iterable[ProfilePoint] | "HasPoints",
    reference_quality: float | None = None,
    tolerance: float = DEFAULT_PROFILE_TOLERANCE,
    *,
    fallback: str = "full_prefill",
) -> str:
    """The plan with the fewest recomputed layers whose quality >= (1 - tolerance) × reference.

    ``points`` is a list of :class:`ProfilePoint` (all points or just a frontier: the answer is the same) or
    a profile object with ``points`` and ``reference_quality`` (then ``reference_quality`` may be omitted).
    Ties at the same layer count go to the higher quality, then fewer transitions, then lower cost.

    When no profiled plan meets the target the answer is ``fallback``: ``"full_prefill"`` (the default —
    the receiver's own prefill is the reference, so it always meets the target by definition) or
    ``"best"`` (the highest-quality profiled plan, for callers who prefer speed over the guarantee).
    """
    if fallback not in ("full_prefill", "best"):
        raise ValueError(f"fallback must be 'full_prefill' or 'best', got {fallback!r}")
    points, reference_quality = _points_and_reference(points, reference_quality)
    chosen = choose_point(points, reference_quality, tolerance)
    if chosen is not None:
        return chosen.plan
    frontier = pareto_frontier(points)
    if fallback == "best" and frontier:
        return frontier[-1].plan
    return "full_prefill"


def _points_and_reference(points, reference_quality) -> tuple[list[ProfilePoint], float]:
    if hasattr(points, "points") and hasattr(points, "reference_quality"):
        if reference_quality is None:
            reference_quality = points.reference_quality
        points = points.points
    if reference_quality is None:
        raise ValueError("reference_quality is required when choosing from a plain list of points")
    if math.isnan(reference_quality):
        raise ValueError("reference_quality is NaN")
    return list(points), float(reference_quality)


# ---- single-layer sensitivity ------------------------------------------------------------------------------
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
    eps = 1e-9  # a drop of exactly the threshold (up to float noise) is not critical
    return sorted(layer for layer, q in table.items() if relative_drop(q, baseline_quality) > threshold + eps)


# ---- multi-group search: model-based (dynamic programming) -------------------------------------------------
@dataclass(frozen=True)
class GroupSearchResult:
    """Best plan found for one budget: ``score`` is the objective the search maximised."""

    plan: str
    groups: tuple[Group, ...]
    recomputed_layers: int
    transitions: int
    score: float
    predicted_quality: float | None = None


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
    units = _units(num_layers, granularity)
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


# ---- multi-group search: evaluation-driven (beam) ----------------------------------------------------------
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
    units = _units(num_layers, granularity)
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
        ranked = sorted(candidates.items(), key=lambda item: _rank_key(item[1]))
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


# ---- comparing rankings (proxy vs task metric) and frontiers (cross-dataset transfer) ----------------------
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
