"""The tables of offline profiling and of the beyond-the-paper comparisons, from the profile files alone.

Profiling writes ``<dir>/<task>.json`` (the profile) and, beside it, ``<dir>/<task>.comparisons.jsonl`` (multi-group
DP, proxy metric and hybrid rows, see :mod:`droidspeak.profile.comparisons`). :func:`profiles_summary` gathers both
into one JSON-able dict and :func:`write_profiles_summary` renders it as ``profiles.json`` + ``profiles.md``, so
``reports/`` carries these numbers without anyone copying them by hand.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from droidspeak.engine.plan import parse_plan
from droidspeak.errors import PlanError
from droidspeak.figures.intervals import ranged_text
from droidspeak.figures.profile_plots import transition_strata
from droidspeak.figures.summary import fmt
from droidspeak.markdown import table
from droidspeak.profile.choice import simultaneous_rule
from droidspeak.profile.points import plan_layers
from droidspeak.profile.profile_file import Profile, comparisons_path, load_profile
from droidspeak.track.results import read_rows

HYBRID_METHODS = ("group", "cacheblend", "hybrid")


def _choice_together(prof: Profile, tolerance: float) -> tuple[str | None, str | None]:
    """(the simultaneous rule at the profile's level, the plan it chooses): what the choice becomes once its bounds
    account for every plan the profile compared; (None, None) for a point-rule profile, for a coarse-to-fine one
    (which can choose only by the rule that steered it) and where a plan lacks per-question scores."""
    rule = prof.rule()
    if rule.level is None:
        return None, None
    together = simultaneous_rule(rule).name
    try:
        prof.check_choice(tolerance, together)
        return together, prof.choose(tolerance, rule=together)
    except PlanError:  # a steered profile refuses the rule, or a plan lacks the scores its own rule never needed
        return None, None


def _profile_entry(path: Path, prof: Profile, tolerance: float) -> dict:
    plan = prof.choose(tolerance)
    point = prof.point(plan)  # only the full_prefill fallback can be unprofiled; its quality is the reference
    together_rule, together_plan = _choice_together(prof, tolerance)
    return {
        "profile": str(path),
        "pair": prof.pair,
        "task": prof.task,
        "metric": prof.metric,
        "num_layers": prof.num_layers,
        "granularity": prof.granularity,
        "contexts": prof.timing.get("contexts"),
        "questions": prof.n_samples,
        "receiver": prof.reference_quality,
        "sender": prof.sender_quality,
        "full_reuse": prof.full_reuse_quality,
        "critical_layers": prof.critical_layers() if prof.single_layer else None,
        "tolerance": tolerance,
        "rule": prof.rule().name,
        "chosen_plan": plan,
        "chosen_layers": plan_layers(plan, prof.num_layers)[0],
        "together_rule": together_rule,
        "chosen_together": together_plan,
        "chosen_quality": point.quality if point else prof.reference_quality,
        "uses_e_cache": uses_e_cache(plan, prof.num_layers),
        "plans_evaluated": prof.timing.get("evaluations"),
        "profiling_seconds": prof.timing.get("total_seconds"),
        "comparisons_seconds": prof.timing.get("comparisons_seconds"),
    }


def uses_e_cache(plan: str, num_layers: int) -> bool:
    """Whether a layer plan recomputes a group that starts above layer 0, i.e. is fed by the sender's E cache."""
    parsed = parse_plan(plan, num_layers)
    return parsed.kind == "recompute" and any(start > 0 for start, _ in parsed.groups)


def _transition_entry(prof: Profile) -> dict | None:
    k, strata = transition_strata(prof)
    if not strata:
        return None
    return {
        "pair": prof.pair,
        "task": prof.task,
        "k": k,
        "num_layers": prof.num_layers,
        "strata": [
            {"stratum": label, "by_transitions": [
                {"transitions": t, "mean_loss_pct": statistics.fmean(losses), "plans": len(losses)}
                for t, losses in sorted(by_t.items())
            ]}
            for label, by_t in strata.items()
        ],
    }


def _hybrid_entries(rows: list[dict]) -> list[dict]:
    """One entry per budget, the methods side by side: the comparison is at equal compute."""
    budgets: dict[float | None, dict] = {}
    for row in rows:
        entry = budgets.setdefault(
            row.get("budget_fraction"),
            {
                "pair": row["pair"],
                "task": row["task"],
                "num_layers": row["num_layers"],
                "budget_fraction": row.get("budget_fraction"),
                "reference_quality": row.get("reference_quality"),
                "methods": {},
            },
        )
        entry["methods"][row["method"]] = {
            field: row.get(field) for field in ("plan", "quality", "compute_fraction", "prefill_seconds")
        }
    return list(budgets.values())


def profiles_summary(profile_paths: Iterable[str | os.PathLike], tolerance: float = 0.05) -> dict:
    """Per profile: its headline row, its Fig. 10 transition strata and its beyond-the-paper comparison rows.

    Comparison rows take the profile's pair and task (so every table names a pair the same way) and its layer
    count; a profile without a ``.comparisons.jsonl`` (or with an empty one) simply contributes no comparison rows.
    """
    summary: dict = {
        "tolerance": tolerance,
        "profiles": [],
        "transitions": [],
        "proxy": [],
        "multigroup": [],
        "hybrid": [],
    }
    for raw in profile_paths:
        path = Path(raw)
        prof = load_profile(path)
        summary["profiles"].append(_profile_entry(path, prof, tolerance))
        transitions = _transition_entry(prof)
        if transitions is not None:
            summary["transitions"].append(transitions)
        comparisons = comparisons_path(path)
        by_kind: dict[str, list[dict]] = defaultdict(list)
        for row in read_rows(comparisons):
            by_kind[row.get("comparison")].append(
                {**row, "pair": prof.pair, "task": prof.task, "num_layers": prof.num_layers}
            )
        summary["proxy"] += by_kind["proxy"]
        summary["multigroup"] += by_kind["multigroup"]
        summary["hybrid"] += _hybrid_entries(by_kind["hybrid"])
    return summary


def _plan(plan: str | None, layers: int | None, num_layers: int) -> str:
    return "–" if plan is None else f"{fmt(layers)}/{num_layers} {_code(plan)}"


def _code(text: str | None) -> str:
    return "–" if text is None else f"`{text}`"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{1000 * seconds:.1f}"


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "no")


def _profiles_section(entries: list[Mapping]) -> list[str]:
    rows = []
    for e in entries:
        critical = e["critical_layers"]
        rows.append([
            e["pair"], e["task"], e["metric"], fmt(e["contexts"]), fmt(e["questions"]), fmt(e["granularity"]),
            fmt(e["receiver"]), fmt(e["sender"]), fmt(e["full_reuse"]),
            "–" if critical is None else (", ".join(map(str, critical)) or "none"),
            _plan(e["chosen_plan"], e["chosen_layers"], e["num_layers"]), fmt(e["chosen_quality"]),
            _yes_no(e.get("uses_e_cache")), fmt(e["plans_evaluated"]), fmt(e["profiling_seconds"]),
        ])
    header = ["pair (receiver<-sender)", "task", "metric", "contexts", "questions", "granularity", "receiver", "sender",
              "full reuse", "critical layers (>10%)", "fewest layers within tol.", "its quality",
              "fed by the E cache", "plans evaluated", "profiling s"]
    return table(header, rows, empty="No profiles given.")


def _transitions_section(entries: list[Mapping]) -> list[str]:
    counts = sorted({c["transitions"] for e in entries for s in e["strata"] for c in s["by_transitions"]})
    rows = []
    for e in entries:
        for stratum in e["strata"]:
            cells = {c["transitions"]: f"{c['mean_loss_pct']:.1f} ({c['plans']})" for c in stratum["by_transitions"]}
            rows.append([e["pair"], e["task"], f"{e['k']}/{e['num_layers']}", stratum["stratum"]]
                        + [cells.get(t, "–") for t in counts])
    header = ["pair", "task", "k/L", "stratum"] + [f"{t} transition{'s' * (t != 1)}" for t in counts]
    return table(header, rows, empty="No profile holds a transition study (2+ transition counts at one layer count).")


def _proxy_section(rows: list[Mapping]) -> list[str]:
    out = []
    for r in rows:
        out.append(
            [
                r["pair"],
                r["task"],
                f"{fmt(r.get('samples'))} / {fmt(r.get('proxy_contexts'))}",
                f"{fmt(r.get('task_samples'))} / {fmt(r.get('task_contexts'))}",
                f"{fmt(r.get('spearman_top1'), 2)} / {fmt(r.get('spearman_kl'), 2)}",
                f"{_plan(r.get('proxy_plan'), r.get('proxy_layers'), r['num_layers'])} ({fmt(r.get('proxy_quality'))})",
                f"{_plan(r.get('exhaustive_plan'), r.get('exhaustive_layers'), r['num_layers'])} "
                f"({fmt(r.get('exhaustive_quality'))})",
                _yes_no(r.get("proxy_within_tolerance")),
                f"{fmt(r.get('budgets_same_quality'))}/{fmt(r.get('budgets'))} ({_pct(r.get('budget_regret_mean'))})",
                f"{fmt(r.get('task_seconds'), 2)} ({fmt(r.get('task_group_prefill_seconds'), 2)})",
                f"{_plan(r.get('equal_samples_plan'), r.get('equal_samples_layers'), r['num_layers'])} "
                f"({fmt(r.get('equal_samples_quality'))}), {_yes_no(r.get('equal_samples_within_tolerance'))}",
                ranged_text(r.get("proxy_seconds"), r.get("proxy_seconds_range"), unit=" s"),
                ranged_text(r.get("task_seconds_equal_samples"), r.get("task_seconds_equal_samples_range"), unit=" s"),
                f"{ranged_text(r.get('cost_ratio_equal_samples'), r.get('cost_ratio_equal_samples_range'), unit='×')}"
                f" ({fmt(r.get('search_repeats'))})",
            ]
        )
    header = [
        "pair",
        "task",
        "proxy samples / contexts",
        "task questions / contexts",
        "Spearman top-1 / KL",
        "proxy's plan (quality)",
        "exhaustive plan (quality)",
        "within tol.",
        "budgets: proxy's best = task's best (mean loss)",
        "whole task search s, one run (its group prefills)",
        "task search on the proxy's samples: plan (quality), within tol.",
        "proxy s",
        "task s at equal samples",
        "cost ratio at equal samples (runs)",
    ]
    return table(header, out, empty="No proxy comparison in these profiles.")


def _pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.1f}%"


def _multigroup_section(rows: list[Mapping]) -> list[str]:
    """One line per (pair, task, search): where the DP chose several groups, and where it beat or lost to the best
    single group (the per-budget rows stay in profiles.json)."""
    by_search: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in rows:
        by_search[(r["pair"], r["task"], r.get("search"))].append(r)
    out = []
    for (pair, task, search), runs in by_search.items():
        runs = sorted(runs, key=lambda r: r["recomputed_layers"])
        deltas = [r["delta_vs_best_single"] for r in runs if r.get("delta_vs_best_single") is not None]
        out.append([
            pair, task, fmt(search), str(len(runs)),
            ", ".join(str(r["recomputed_layers"]) for r in runs if (r.get("groups") or 1) > 1) or "–",
            _deltas(r for r in runs if (r.get("delta_vs_best_single") or 0) > 0),
            _deltas(r for r in runs if (r.get("delta_vs_best_single") or 0) < 0),
            f"{statistics.fmean(deltas):+.3f}" if deltas else "–",
        ])
    header = [
        "pair",
        "task",
        "search",
        "budgets",
        "k with a multi-group DP plan",
        "DP beats best single group (k: plan, Δ)",
        "DP loses (k: plan, Δ)",
        "mean Δ",
    ]
    return table(header, out, empty="No multi-group comparison in these profiles.")


def _deltas(runs: Iterable[Mapping]) -> str:
    return ", ".join(f"{r['recomputed_layers']}: `{r['plan']}` ({r['delta_vs_best_single']:+.3f})" for r in runs) or "–"


def _hybrid_section(entries: list[Mapping]) -> list[str]:
    out = []
    for e in entries:
        budget = e["budget_fraction"]
        k = "–" if budget is None else round(budget * e["num_layers"])
        cells = [e["pair"], e["task"], f"{fmt(budget)} ({k}/{e['num_layers']})"]
        for method in HYBRID_METHODS:
            m = e["methods"].get(method)
            cells += ["–", "–", "–"] if m is None else [_code(m["plan"]), fmt(m["quality"]), _ms(m["prefill_seconds"])]
        out.append(cells)
    header = ["pair", "task", "budget (k/L)"] + [f"{m} {c}" for m in HYBRID_METHODS for c in ("plan", "quality", "ms")]
    return table(header, out, empty="No hybrid comparison in these profiles.")


def write_profiles_summary(summary: Mapping, out_dir: str | Path, *, source: str = "") -> tuple[Path, Path]:
    """profiles.json (machine-readable) and profiles.md (the profiling and beyond-the-paper tables)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "profiles.json"
    json_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tol = summary["tolerance"]
    lines = [
        "# Profiles summary",
        "",
        f"Rebuilt by `experiments/figures.py` from {source or 'the profile files'} "
        "and the `.comparisons.jsonl` beside each.",
        f"Quality is the task's own metric; tolerance {tol:g} (relative to the receiver's own full-prefill quality).",
        "",
        "## Profiles",
        "",
        "*fewest layers* is the profile's choice at the tolerance; *critical layers* lose over 10% when reused alone.",
        "",
        *_profiles_section(summary["profiles"]),
        "",
        "## Transitions (Fig. 10)",
        "",
        "Mean relative quality loss in % (plans) at k recomputed layers, by the number of transitions.",
        "",
        *_transitions_section(summary["transitions"]),
        "",
        "## Proxy vs task metric",
        "",
        "Rank agreement (Spearman) of the output-level proxies with the task metric over every profiled plan; "
        "the plan",
        "each search picks at the tolerance (the proxy's: fewest layers whose top-1 disagreements are not "
        "significantly",
        "above the tolerance, exact binomial test at 0.05); per budget (recomputed layers), "
        "how often the proxy's best plan has the task",
        "metric's best quality and the mean relative loss when it does not. The whole task search's seconds are the",
        "profile's own run (one timing, more samples than the proxy's: not a comparison), with the part its group",
        "prefills took. The task search is then run again on the proxy's own samples (the same contexts and",
        "questions): the plan it picks there, with that plan's quality on the whole profile split; and the two",
        "searches' costs at equal samples, each from scratch (sender prefill included), timed in alternating order:",
        "median [smallest–largest] over the runs, and the cost ratio (task seconds over proxy seconds, run by run).",
        "The proxy shares one receiver pass among the groups that start at the same layer; so does the task search",
        "(each plan's prefill is its layers' share of the passes it reads); what the proxy skips is generating and",
        "scoring answers.",
        "",
        *_proxy_section(summary["proxy"]),
        "",
        "## Multi-group DP vs best single group",
        "",
        "Each DP plan measured; Δ is its quality minus the best measured single group at the same k "
        "(recomputed layers).",
        "",
        *_multigroup_section(summary["multigroup"]),
        "",
        "## Hybrid at equal compute",
        "",
        "Best single group, CacheBlend cross-model, and a smaller group plus token recompute, at one compute budget.",
        "",
        *_hybrid_section(summary["hybrid"]),
    ]
    md_path = out / "profiles.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
