"""Offline profiling of a sender/receiver pair: which plans to try, how to search them, which one to serve.

Pure and model-free (plans go in as contract strings, qualities as floats; tested on synthetic tables):
- ``points`` — :class:`ProfilePoint` (one measured plan), layer groups, plan-string helpers;
- ``candidates`` — which plans to evaluate (aligned contiguous groups, single-layer and transition plans);
- ``choice`` — the Pareto frontier and the fewest-layer plan a choice rule (the mean, or a paired-bootstrap lower
  bound) accepts within a tolerance of the receiver's quality;
- ``sensitivity`` — critical layers and per-layer harms from single-layer sensitivity;
- ``critical_sets`` — two profiles' critical layers side by side over resamples of their questions (whose are they:
  the receiver's, the sender's, the seed's?);
- ``groups_dp`` — multi-group search by dynamic programming over an additive model of quality;
- ``beam`` — evaluation-driven multi-group search (a beam over a ``score(plan) -> float`` callable);
- ``coarse_to_fine`` — the group search that scores coarse groups first, then only the fine ones that could win;
  its replay from an exhaustive profile, and how often its premise fails there;
- ``ranks`` — comparing rankings (proxy vs task metric) and frontiers (cross-dataset transfer);
- ``profile_file`` — the profile JSON file, and :func:`resolve_profile_plan` for ``profile:PATH[@TOL][@RULE]`` plans;
- ``question_budget`` — a profile's questions drawn again at smaller budgets, and the plan each rule picks.

Running models (they score plans and hand the pure modules floats):
- ``profiler`` — scores plans by the task metric on profiling rows and writes the profile;
- ``proxy`` — the output-level proxy score, cheaper than the task metric;
- ``comparisons`` — the comparisons beyond the paper (multi-group, proxy, hybrid).
- ``result_rows`` — the result rows a profiling job adds for the quality-vs-cost figures.

Conventions: quality is higher-is-better (F1, accuracy, Rouge-L, edit similarity, or a proxy such as minus KL);
``recomputed_layers`` counts layers the receiver computes over the context (``full_reuse`` = 0,
``full_prefill`` = num_layers); a group that starts at layer 0 costs no transition (embeddings suffice),
matching :attr:`droidspeak.engine.plan.RecomputePlan.transitions`; ``recompute:0-(L-1)`` computes exactly what
``full_prefill`` computes, so candidate lists name it ``full_prefill``.
"""

from droidspeak.profile.beam import beam_search
from droidspeak.profile.candidates import (
    contiguous_groups,
    recomputes_all,
    single_group_plans,
    single_layer_plan,
    transition_plans,
)
from droidspeak.profile.choice import best_by_budget, choose_plan, choose_point, pareto_frontier, quality_target
from droidspeak.profile.groups_dp import (
    GroupSearchResult,
    additive_group_value,
    estimate_transition_penalty,
    search_additive,
    search_groups,
)
from droidspeak.profile.points import ProfilePoint, group_plan, plan_layers
from droidspeak.profile.profile_file import (
    SCHEMA,
    SCHEMA_VERSION,
    LayerSensitivity,
    Profile,
    ProfileError,
    ResolvedProfile,
    check_profile_pair,
    comparisons_path,
    load_profile,
    resolve_profile_plan,
    save_profile,
)
from droidspeak.profile.ranks import frontier_difference, frontier_step, kendall, rank_agreement, spearman
from droidspeak.profile.sensitivity import critical_layers, harm_from_single_layer, relative_drop

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "GroupSearchResult",
    "LayerSensitivity",
    "Profile",
    "ProfileError",
    "ProfilePoint",
    "additive_group_value",
    "beam_search",
    "best_by_budget",
    "choose_plan",
    "choose_point",
    "contiguous_groups",
    "critical_layers",
    "estimate_transition_penalty",
    "frontier_difference",
    "frontier_step",
    "group_plan",
    "harm_from_single_layer",
    "kendall",
    "comparisons_path",
    "load_profile",
    "pareto_frontier",
    "plan_layers",
    "quality_target",
    "recomputes_all",
    "rank_agreement",
    "relative_drop",
    "ResolvedProfile",
    "check_profile_pair",
    "resolve_profile_plan",
    "save_profile",
    "search_additive",
    "search_groups",
    "single_group_plans",
    "single_layer_plan",
    "spearman",
    "transition_plans",
]
