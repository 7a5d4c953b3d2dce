"""Recompute plans: which layers the receiver recomputes over the shared context.

One syntax everywhere (Hydra, lm-eval model_args, Python):
``full_prefill`` · ``full_reuse`` · ``recompute:A-B[+C-D...]`` (0-based, inclusive) ·
``cacheblend:R[@L]`` (tokens chosen at check layer L, default 0) · ``profile:PATH[@TOL][@RULE]`` (the fewest-layer
plan the choice RULE accepts within TOL of the receiver: ``point`` or ``bootstrapNN``, see profile.choice; default
the rule the profile was made with).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from droidspeak.errors import PlanError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
DEFAULT_PROFILE_TOLERANCE = 0.05
CHOICE_RULE_NAME = re.compile(r"point|(bootstrap|simultaneous)\d{2}")  # profile.choice.choice_rule checks the level
DEFAULT_CHOICE_RULE = "bootstrap95"


@dataclass(frozen=True)
class RecomputePlan:
    """A parsed plan.

    ``kind`` is one of ``full_prefill``, ``full_reuse``, ``recompute``, ``cacheblend``, ``profile``.
    ``groups`` are inclusive, sorted, disjoint layer ranges recomputed with the receiver's weights;
    ``full_prefill`` means the receiver computes everything itself (the baseline, no cache used).
    """

    kind: str
    groups: tuple[tuple[int, int], ...] = ()
    token_fraction: float | None = None  # cacheblend
    check_layer: int | None = None  # cacheblend:R@L: tokens chosen by their deviation at layer L (None: layer 0)
    profile_path: str | None = None  # profile
    tolerance: float | None = None  # profile
    rule: str | None = None  # profile: the choice rule (None: the one the profile records)

    @property
    def recomputed_layers(self) -> tuple[int, ...]:
        return tuple(layer for s, e in self.groups for layer in range(s, e + 1))

    @property
    def uses_cache(self) -> bool:
        return self.kind != "full_prefill"

    @property
    def transitions(self) -> int:
        """Groups that start from the sender's E cache (a group starting at layer 0 needs only embeddings)."""
        return sum(1 for s, _ in self.groups if s > 0)

    @property
    def e_layers(self) -> tuple[int, ...]:
        """Layers whose input hidden state (E) the receiver needs from the sender."""
        return tuple(s for s, _ in self.groups if s > 0)

    def __str__(self) -> str:
        return format_plan(self)

    def validate(self, num_layers: int) -> "RecomputePlan":
        """Check the groups against a model's layer count; return self for chaining."""
        for s, e in self.groups:
            if not (0 <= s <= e < num_layers):
                raise PlanError(
                    f"plan {format_plan(self)!r}: layer range {s}-{e} is out of range for a model with "
                    f"{num_layers} layers (valid layers are 0-{num_layers - 1})"
                )
        if self.check_layer is not None and not 0 < self.check_layer < num_layers:
            raise PlanError(f"plan {format_plan(self)!r}: check layer {self.check_layer} is out of range for a model "
                            f"with {num_layers} layers")
        return self


def recompute(*groups: tuple[int, int]) -> RecomputePlan:
    """Build a ``recompute`` plan from inclusive ranges, checking order and overlap."""
    ordered = tuple(sorted((int(s), int(e)) for s, e in groups))
    if not ordered:
        return RecomputePlan("full_reuse")
    for s, e in ordered:
        if s < 0 or e < s:
            raise PlanError(f"layer range {s}-{e} is invalid: ranges are 0-based 'start-end' with start <= end")
    for (s1, e1), (s2, e2) in zip(ordered, ordered[1:]):
        if s2 <= e1:
            raise PlanError(f"layer ranges {s1}-{e1} and {s2}-{e2} overlap: each layer may be recomputed once")
    return RecomputePlan("recompute", ordered)


def parse_plan(text: str | RecomputePlan, num_layers: int | None = None) -> RecomputePlan:
    """Parse the contract syntax; with ``num_layers`` also check ranges against the model."""
    if isinstance(text, RecomputePlan):
        plan = text
    else:
        plan = _parse(str(text).strip())
    return plan.validate(num_layers) if num_layers is not None else plan


def _parse(text: str) -> RecomputePlan:
    if text in ("full_prefill", "full_reuse"):
        return RecomputePlan(text)
    head, sep, body = text.partition(":")
    if not sep or not body:
        raise PlanError(
            f"unknown plan {text!r}: expected full_prefill, full_reuse, recompute:A-B[+C-D...], "
            "cacheblend:R or profile:PATH[@TOL][@RULE]"
        )
    if head == "recompute":
        groups = []
        for part in body.split("+"):
            match = _RANGE.match(part.strip())
            if not match:
                raise PlanError(f"plan {text!r}: {part!r} is not a layer range like '4-7' or '12'")
            s = int(match.group(1))
            e = int(match.group(2)) if match.group(2) is not None else s
            groups.append((s, e))
        return recompute(*groups)
    if head == "cacheblend":
        ratio, at, layer = body.partition("@")
        try:
            fraction = float(ratio)
        except ValueError:
            raise PlanError(f"plan {text!r}: cacheblend takes a token fraction, e.g. cacheblend:0.15") from None
        if not 0.0 <= fraction <= 1.0:
            raise PlanError(f"plan {text!r}: cacheblend fraction must lie in [0, 1]")
        if at and not layer.isdigit():
            raise PlanError(f"plan {text!r}: the check layer after '@' is a layer index, e.g. cacheblend:0.15@4")
        return RecomputePlan("cacheblend", token_fraction=fraction, check_layer=int(layer) or None if at else None)
    if head == "profile":
        rest, at, last = body.rpartition("@")
        rule = last if at and CHOICE_RULE_NAME.fullmatch(last) else None
        body = rest if rule else body
        path, at, tol = body.rpartition("@") if "@" in body else (body, "", "")
        try:
            tolerance = float(tol) if at else DEFAULT_PROFILE_TOLERANCE
        except ValueError:
            raise PlanError(f"plan {text!r}: after '@' comes a tolerance (e.g. @0.05), then optionally a choice "
                            f"rule (@point or @{DEFAULT_CHOICE_RULE}); {tol!r} is neither") from None
        if not 0.0 <= tolerance < 1.0:
            raise PlanError(f"plan {text!r}: tolerance must lie in [0, 1)")
        return RecomputePlan("profile", profile_path=path, tolerance=tolerance, rule=rule)
    raise PlanError(f"unknown plan kind {head!r} in {text!r}: expected recompute, cacheblend or profile")


def format_plan(plan: RecomputePlan) -> str:
    """The contract string for a plan; ``parse_plan(format_plan(p)) == p``."""
    if plan.kind in ("full_prefill", "full_reuse"):
        return plan.kind
    if plan.kind == "recompute":
        return "recompute:" + "+".join(f"{s}-{e}" for s, e in plan.groups)
    if plan.kind == "cacheblend":
        return f"cacheblend:{plan.token_fraction:g}" + (f"@{plan.check_layer}" if plan.check_layer else "")
    return f"profile:{plan.profile_path}@{plan.tolerance:g}" + (f"@{plan.rule}" if plan.rule else "")


def layer_groups(plan: RecomputePlan, num_layers: int) -> tuple[tuple[int, int], ...]:
    """The layer groups the receiver computes itself over the context for a concrete plan."""
    if plan.kind == "full_prefill":
        return ((0, num_layers - 1),)
    if plan.kind in ("full_reuse", "recompute"):
        return plan.validate(num_layers).groups
    raise PlanError(
        f"plan {format_plan(plan)!r} must be resolved to concrete layer groups first "
        "(cacheblend runs its own path; profile plans resolve through droidspeak.profile)"
    )


@dataclass(frozen=True)
class PrefillCost:
    """What a partial prefill costs, in model-independent units.

    ``compute_fraction`` is recomputed layer-tokens over a full prefill's layer-tokens; the byte counts are
    what a receiver on another host would have to load (E at each transition, K/V of every reused layer).
    """

    context_tokens: int
    num_layers: int
    recomputed_layers: int
    recomputed_layer_tokens: int
    compute_fraction: float
    transitions: int
    e_bytes: int
    kv_bytes: int

    @property
    def bytes_to_load(self) -> int:
        return self.e_bytes + self.kv_bytes


def prefill_cost(
    plan: RecomputePlan,
    *,
    num_layers: int,
    context_tokens: int,
    kv_bytes_per_token_layer: int,
    e_bytes_per_token: int,
    chosen_tokens: int = 0,
    kv_tokens: Sequence[int] | None = None,
) -> PrefillCost:
    """Cost of ``plan`` over ``context_tokens`` (summed over a batch) for a model of the given shape.

    ``chosen_tokens``: tokens also recomputed in every layer outside the groups (CacheBlend's selection).
    ``kv_tokens``: per layer, the tokens whose K/V a reused layer loads (default: every context token; fewer in a
    sliding layer whose cache keeps only its window).
    """
    groups = layer_groups(plan, num_layers)
    recomputed = sum(e - s + 1 for s, e in groups)
    in_groups = {layer for s, e in groups for layer in range(s, e + 1)}
    loaded = [context_tokens if kv_tokens is None else kv_tokens[layer] for layer in range(num_layers)
              if layer not in in_groups] if plan.uses_cache else []
    transitions = sum(1 for s, _ in groups if s > 0) if plan.uses_cache else 0
    reused = num_layers - recomputed if plan.uses_cache else 0
    layer_tokens = recomputed * context_tokens + reused * chosen_tokens
    return PrefillCost(
        context_tokens=context_tokens,
        num_layers=num_layers,
        recomputed_layers=recomputed,
        recomputed_layer_tokens=layer_tokens,
        compute_fraction=layer_tokens / (num_layers * context_tokens) if context_tokens else recomputed / num_layers,
        transitions=transitions,
        e_bytes=transitions * context_tokens * e_bytes_per_token,
        kv_bytes=sum(loaded) * kv_bytes_per_token_layer,
    )


def total_cost(costs: Sequence[PrefillCost]) -> PrefillCost | None:
    """One cost for several prefills under the same plan: tokens, layer-tokens and bytes summed (None if none)."""
    if not costs:
        return None
    total = lambda name: sum(getattr(c, name) for c in costs)  # noqa: E731
    tokens, first = total("context_tokens"), costs[0]
    return PrefillCost(
        context_tokens=tokens,
        num_layers=first.num_layers,
        recomputed_layers=first.recomputed_layers,
        recomputed_layer_tokens=total("recomputed_layer_tokens"),
        compute_fraction=total("recomputed_layer_tokens") / max(1, tokens * first.num_layers),
        transitions=first.transitions,
        e_bytes=total("e_bytes"),
        kv_bytes=total("kv_bytes"),
    )
