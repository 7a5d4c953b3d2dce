"""Beyond the paper, each measured against the paper's exhaustive single-group profile of the same pair.

a) ``compare_multigroup`` — several groups, searched by dynamic programming with the transition cost counted
   (groups_dp.search_groups), under two additive models fitted from the profile itself: per-layer harms from the
   single-layer table (calibrated to full reuse) with a transition penalty from the Fig. 10 points, and
   measured single-group gains. Each DP plan is then MEASURED and compared with the best measured single group
   at the same recomputed-layer count.
b) ``compare_proxy`` — output-level proxies (profile.proxy) on few samples: rank correlation with the task
   metric over every profiled plan; the cost of each search against the task search run on the proxy's own samples
   (equal samples), both from scratch (sender prefill included), timed ``search_repeats`` times with the order
   alternated (median and range: one wall-clock run of a whole search is noise); and whether the plan the proxy
   alone chooses (fewest layers whose disagreement passes the tolerance) is as good.
c) ``compare_hybrid`` — at equal compute fraction: the best single layer group, CacheBlend cross-model, and a
   hybrid (the best group one granularity step smaller plus token recompute in the other layers filling the budget).
Every function returns plain dict rows (one JSON line each); :func:`run_comparisons` runs the kinds a job asks for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from droidspeak.engine.cacheblend import cacheblend_prefill
from droidspeak.engine.plan import parse_plan
from droidspeak.profile.candidates import recomputes_all
from droidspeak.profile.choice import best_by_budget, choose_point, quality_target
from droidspeak.profile.groups_dp import estimate_transition_penalty, search_additive, search_groups
from droidspeak.profile.points import ProfilePoint, plan_layers
from droidspeak.profile.profile_file import Profile
from droidspeak.profile.profiler import Profiler
from droidspeak.profile.proxy import PROXY_RULES, ProxyRule, ProxyScorer, get_rule
from droidspeak.profile.ranks import rank_agreement
from droidspeak.profile.sensitivity import harm_from_single_layer
from droidspeak.stats import median_range

COMPARISON_KINDS = ("multigroup", "proxy", "hybrid")


def run_comparisons(profiler: Profiler, profile: Profile, kinds: Sequence[str], *, max_groups: int | None,
                    proxy_samples: int, proxy_rule: str, tolerance: float, hybrid_fractions: Sequence[float],
                    cacheblend_ratios: Sequence[float], search_repeats: int = 1) -> list[dict]:
    """The comparisons ``kinds`` (of COMPARISON_KINDS) of a profiled pair, as rows; the proxy's scores and the time
    they took go into ``profile``."""
    rows: list[dict] = []
    started = time.perf_counter()
    if "multigroup" in kinds:
        rows += compare_multigroup(profiler, profile, max_groups=max_groups)
    if "proxy" in kinds:
        scorer = ProxyScorer(profiler.receiver, profiler.sender, profiler.task, profiler.rows.rows,
                             samples=proxy_samples, batch_size=profiler.batch_size,
                             allow_mismatch=profiler.allow_mismatch)
        proxy = compare_proxy(profiler, profile, scorer, tolerance=tolerance, rule=get_rule(proxy_rule),
                              search_repeats=search_repeats)
        profile.extra["proxy_scores"] = proxy.pop("proxy_scores")
        rows.append(proxy)
    if "hybrid" in kinds:
        rows += compare_hybrid(profiler, profile, hybrid_fractions)
        for ratio in cacheblend_ratios:
            profiler.evaluate(f"cacheblend:{ratio:g}")
    if kinds:
        profile.timing["comparisons_seconds"] = round(time.perf_counter() - started, 3)
    return rows


def _r(x: float | None, digits: int = 4):
    """Rounded for the JSONL; NaN (e.g. a rank correlation over constant scores) becomes null."""
    return None if x is None or math.isnan(float(x)) else round(float(x), digits)


def compare_multigroup(profiler: Profiler, profile: Profile, *, max_groups: int | None = 3) -> list[dict]:
    layers, ref = profile.num_layers, profile.reference_quality
    single = best_by_budget(profile.points)
    reuse_q = profile.full_reuse_quality if profile.full_reuse_quality is not None else single[0].quality
    harm = harm_from_single_layer(profile.single_layer_table, ref, num_layers=layers, full_reuse_quality=reuse_q)
    # The penalty from the layouts that all recompute the critical layers, where transitions are not confounded
    # with skipping a critical layer (see candidates.transition_plans); the whole study where there are none.
    critical = profile.critical_layers()
    held = [p for p in profile.transitions if critical and recomputes_all(p.plan, critical, layers)]
    penalty = estimate_transition_penalty(held or profile.transitions)
    models = {
        "dp_single_layer_harm": search_additive(
            harm, penalty, reference_quality=ref, granularity=profile.granularity, max_groups=max_groups
        ),
    }
    gains = {(p.plan): p.quality - reuse_q for p in profile.points}

    def group_gain(s: int, e: int) -> float:
        plan = "full_prefill" if (s, e) == (0, layers - 1) else f"recompute:{s}-{e}"
        return gains.get(plan, 0.0)

    models["dp_measured_groups"] = search_groups(
        layers, group_gain, granularity=profile.granularity, max_groups=max_groups, base_score=reuse_q
    )
    rows = []
    for name, results in models.items():
        for k, res in results.items():
            if k in (0, layers) or k not in single:
                continue
            measured = profiler.point(res.plan)
            best = single[k]
            rows.append({
                "comparison": "multigroup", "search": name, "recomputed_layers": k,
                "plan": res.plan, "groups": len(res.groups), "transitions": res.transitions,
                "predicted_quality": _r(res.predicted_quality), "quality": _r(measured.quality),
                "best_single_plan": best.plan, "best_single_quality": _r(best.quality),
                "delta_vs_best_single": _r(measured.quality - best.quality),
                "transition_penalty": _r(penalty), "reference_quality": _r(ref),
            })
    return rows


def _searches_again(profiler: Profiler, proxy: ProxyScorer, plans: Sequence[str], *,
                    proxy_first: bool) -> tuple[float, float]:
    """Both searches once more on the proxy's samples, each from scratch (new objects: the sender's prefill again,
    nothing memoised), counted as the first run counts them: (proxy seconds, task seconds)."""
    def proxy_search() -> float:
        fresh = ProxyScorer(profiler.receiver, profiler.sender, profiler.task, profiler.rows.rows,
                            samples=len(proxy.index), batch_size=profiler.batch_size,
                            allow_mismatch=profiler.allow_mismatch)
        return fresh.setup_seconds + sum(s.seconds for s in fresh.score_all(plans).values())

    def task_search() -> float:
        fresh = Profiler(profiler.receiver, profiler.sender, profiler.task, proxy.rows.rows,
                         batch_size=profiler.batch_size, allow_mismatch=profiler.allow_mismatch)
        return fresh.sender_seconds + sum(e.seconds for e in fresh.evaluate_many(plans))

    if proxy_first:
        seconds = proxy_search()
        return seconds, task_search()
    seconds = task_search()
    return proxy_search(), seconds


def _median_range(values: Sequence[float], digits: int) -> tuple[float | None, list]:
    """stats.median_range, rounded for the JSONL."""
    median, (low, high) = median_range(values)
    return _r(median, digits), [_r(low, digits), _r(high, digits)]


def compare_proxy(profiler: Profiler, profile: Profile, proxy: ProxyScorer, *, tolerance: float,
                  rule: ProxyRule = PROXY_RULES["binomial@0.05"], search_repeats: int = 1) -> dict:
    plans = [p.plan for p in profile.points]
    scores = proxy.score_all(plans)
    task = {p.plan: p.quality for p in profile.points}
    top1 = rank_agreement({p: s.top1 for p, s in scores.items()}, task)
    kl = rank_agreement({p: -s.kl for p, s in scores.items()}, task)
    # Both from scratch: the sender's prefill of the contexts each search uses, then every plan (and reference).
    proxy_seconds = proxy.setup_seconds + sum(s.seconds for s in scores.values())
    task_seconds = profiler.sender_seconds + sum(profiler.results[p].seconds for p in plans)
    layers = profile.num_layers
    ref = profile.reference_quality
    exhaustive = choose_point(profile, tolerance=tolerance, rule=profile.rule())
    # quality = top-1 agreement; cost = KL, so agreement ties fall to the plan whose distributions moved least
    proxy_points = [ProfilePoint.from_plan(p, s.top1, num_layers=layers, cost=s.kl) for p, s in scores.items()]
    chosen_plan = rule.choose({p: (s.top1, s.kl) for p, s in scores.items()}, proxy.positions, tolerance, layers)
    # At a fixed budget (recomputed layers), how much task quality does trusting the proxy's best plan give up?
    task_best, proxy_best = best_by_budget(profile.points), best_by_budget(proxy_points)
    regret = [(task_best[k].quality - task[proxy_best[k].plan]) / abs(ref) if ref else 0.0 for k in proxy_best]
    chosen_quality = task.get(chosen_plan, ref)
    chosen_layers = plan_layers(chosen_plan, layers)[0]
    # The task search again on the proxy's own samples (its contexts, its questions): costs compared like with like,
    # counted as the whole search is (sender prefill + every plan; the reference answers are not charged to either).
    # Where the proxy sampled every row the profile read, that is the profile's own search.
    same_rows = [r["id"] for r in proxy.rows.rows] == profiler.inputs
    equal = profiler if same_rows else Profiler(profiler.receiver, profiler.sender, profiler.task, proxy.rows.rows,
                                                batch_size=profiler.batch_size, allow_mismatch=profiler.allow_mismatch)
    equal.evaluate_many(plans)
    equal_seconds = equal.sender_seconds + sum(equal.results[p].seconds for p in plans)
    # The first run is the profile's own (the task search, then the proxy); each further run alternates the order.
    runs = [(proxy_seconds, equal_seconds)] + [
        _searches_again(profiler, proxy, plans, proxy_first=i % 2 == 1) for i in range(1, search_repeats)
    ]
    proxy_median, proxy_range = _median_range([p for p, _ in runs], 3)
    equal_median, equal_range = _median_range([t for _, t in runs], 3)
    ratio_median, ratio_range = _median_range([t / max(p, 1e-9) for p, t in runs], 2)
    equal_reference = equal.evaluate("full_prefill")
    equal_choice = choose_point([equal.point(p) for p in plans], equal_reference.quality, tolerance,
                                rule=profile.rule(), reference_per_input=equal_reference.per_input)
    equal_plan = equal_choice.plan if equal_choice else "full_prefill"
    equal_quality = task.get(equal_plan, ref)
    return {
        "comparison": "proxy",
        "plans": len(plans),
        "samples": len(proxy.index),
        "task_samples": len(profiler.rows.rows),
        "proxy_contexts": len(proxy.distinct),
        "task_contexts": len(profiler.caches),
        "proxy_positions": proxy.positions,
        "spearman_top1": _r(top1["spearman"]),
        "kendall_top1": _r(top1["kendall"]),
        "spearman_kl": _r(kl["spearman"]),
        "kendall_kl": _r(kl["kendall"]),
        "same_best_top1": top1["same_best"],
        "same_best_kl": kl["same_best"],
        "search_repeats": len(runs),
        "proxy_seconds": proxy_median,
        "proxy_seconds_range": proxy_range,
        "task_seconds": _r(task_seconds, 3),  # the whole task search, once: the profile's own run
        # the part of the task search that prefix sharing (which the proxy uses) could save at most
        "task_group_prefill_seconds": _r(
            sum(profiler.results[p].prefill_seconds for p in plans if p.startswith("recompute:")), 3
        ),
        "task_seconds_equal_samples": equal_median,
        "task_seconds_equal_samples_range": equal_range,
        "cost_ratio_equal_samples": ratio_median,
        "cost_ratio_equal_samples_range": ratio_range,
        "equal_samples_plan": equal_plan,
        "equal_samples_layers": equal_choice.recomputed_layers if equal_choice else layers,
        "equal_samples_quality": _r(equal_quality),
        "equal_samples_within_tolerance": equal_quality >= quality_target(ref, tolerance) - 1e-12,
        "tolerance": tolerance,
        "reference_quality": _r(ref),
        "proxy_rule": rule.name,
        "exhaustive_plan": exhaustive.plan if exhaustive else "full_prefill",
        "exhaustive_layers": exhaustive.recomputed_layers if exhaustive else layers,
        "exhaustive_quality": _r(exhaustive.quality if exhaustive else ref),
        "proxy_plan": chosen_plan,
        "proxy_layers": chosen_layers,
        "proxy_quality": _r(chosen_quality),
        "proxy_within_tolerance": chosen_quality >= quality_target(ref, tolerance) - 1e-12,
        "budgets": len(regret),
        "budget_regret_mean": _r(sum(regret) / len(regret)),
        "budget_regret_max": _r(max(regret)),
        "budgets_same_quality": sum(r <= 1e-12 for r in regret),
        "proxy_scores": {p: {"top1": _r(s.top1), "kl": _r(s.kl, 6)} for p, s in scores.items()},
    }


def compare_hybrid(profiler: Profiler, profile: Profile, fractions: Sequence[float]) -> list[dict]:
    layers = profile.num_layers
    single = best_by_budget(profile.points)
    receiver = profiler.receiver
    rows = []
    for fraction in fractions:
        k = round(fraction * layers)
        if not 1 <= k < layers or k not in single:
            continue
        budget = k / layers
        entries = {"group": (single[k].plan, profiler.evaluate(single[k].plan))}
        entries["cacheblend"] = (f"cacheblend:{budget:g}", profiler.evaluate(f"cacheblend:{budget:g}"))
        smaller = [j for j in single if 1 <= j < k]
        if smaller:  # the best group one granularity step smaller; tokens fill the rest of the budget
            j = max(smaller)
            base = single[j].plan
            groups = parse_plan(base, layers).groups
            ratio = (k - j) / (layers - j)
            name = f"hybrid:{base}+tokens:{ratio:.4g}"
            entries["hybrid"] = (name, profiler.evaluate(
                name, prefill=lambda caches, g=groups, r=ratio: cacheblend_prefill(receiver, caches, r, groups=g)
            ))
        for method, (plan, ev) in entries.items():
            rows.append({
                "comparison": "hybrid", "budget_fraction": _r(budget), "method": method, "plan": plan,
                "quality": _r(ev.quality), "compute_fraction": _r(ev.compute_fraction),
                "prefill_seconds": _r(ev.prefill_seconds, 4), "reference_quality": _r(profile.reference_quality),
            })
    return rows
