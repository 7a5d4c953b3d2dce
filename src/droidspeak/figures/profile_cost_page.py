"""The profiling-cost page (reports/smollm2_profile_cost/): each scoring path's cost per (plan × question) against
today's path, run by run, and what the cheaper path changes — its answers, its plans' qualities, the plan each
choice rule picks. Reads ``profile_cost.jsonl`` (bench.profile_cost.ProfileCostRun lines) beside the page."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from droidspeak.figures.intervals import ranged_text
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile.choice import choose_plan
from droidspeak.profile.points import ProfilePoint
from droidspeak.stats import median_range
from droidspeak.track.records import ProfileCostRun
from droidspeak.track.results import read_rows

GOAL_RATIO = 5.0  # issue 34: at least 5x cheaper per (plan x question) than today's float32 path
RULES = ("point", "bootstrap95")
RUNS_FILE = "profile_cost.jsonl"


def _chosen(run: ProfileCostRun, tolerance: float, rule: str) -> str:
    reference = run.scores["full_prefill"]
    points = [ProfilePoint.from_plan(plan, statistics.fmean(scores), num_layers=run.num_layers, per_input=scores)
              for plan, scores in run.scores.items() if plan != "full_prefill"]
    return choose_plan(points, statistics.fmean(reference), tolerance, rule=rule, reference_per_input=reference)


def _decoded_share(runs: Sequence[ProfileCostRun]) -> float | None:
    """Of the layer plans' answers over a path's rounds, the share decoded token by token (None: not counted)."""
    counted = [r for r in runs if r.answered]
    return sum(r.decoded for r in counted) / sum(r.answered for r in counted) if counted else None


def _agreement(run: ProfileCostRun, other: ProfileCostRun) -> tuple[float, int]:
    """The share of every plan's answer to every question that two first rounds give alike, and how many they are."""
    pairs = [(a, b) for plan in run.plans for a, b in zip(run.answers[plan], other.answers[plan])]
    return sum(a == b for a, b in pairs) / len(pairs), len(pairs)


def _same_as_undrafted(run: ProfileCostRun, firsts) -> float | None:
    """A drafted path's answers against the same dtype and batching without drafts (first rounds): what the drafts
    change, apart from the dtype. None: not drafted, or no such path ran."""
    plain = next((r for r in firsts if not r.drafts and r.dtype == run.dtype
                  and r.plans_per_batch == run.plans_per_batch), None) if run.drafts else None
    return None if plain is None else _agreement(run, plain)[0]


def cost_summary(runs: Sequence[ProfileCostRun], tolerance: float) -> list[dict]:
    """One entry per path, today's (the first path of the first round) first."""
    baseline = next(r for r in runs if r.round == 0 and r.order == 0)
    by_round = {r.round: r.seconds for r in runs if r.path == baseline.path}
    firsts = {r.path: r for r in runs if r.round == 0}
    summary = []
    for name in dict.fromkeys(r.path for r in sorted(runs, key=lambda r: r.path != baseline.path)):
        mine = [r for r in runs if r.path == name]
        first = next(r for r in mine if r.round == 0)
        per_answer, per_answer_range = median_range([1000 * r.seconds_per_answer for r in mine])
        prefill_share = statistics.median(r.prefill_seconds / r.seconds for r in mine)
        ratio, ratio_range = median_range([by_round[r.round] / r.seconds for r in mine])
        same, answered = _agreement(first, baseline)
        quality_gap = max(abs(statistics.fmean(first.scores[p]) - statistics.fmean(baseline.scores[p]))
                          for p in first.plans)
        summary.append({
            "path": name, "dtype": first.dtype, "plans_per_batch": first.plans_per_batch, "runs": len(mine),
            "ms_per_answer": per_answer, "ms_per_answer_range": per_answer_range, "prefill_share": prefill_share,
            "prefill_ms": per_answer * prefill_share, "answer_ms": per_answer * (1 - prefill_share),
            "ratio": ratio, "ratio_range": ratio_range,
            "same_answers": same, "answers": answered,
            "decoded": _decoded_share(mine), "same_as_undrafted": _same_as_undrafted(first, firsts.values()),
            "max_quality_gap": quality_gap,
            "chosen": {rule: _chosen(first, tolerance, rule) for rule in RULES},
        })
    return summary


def cost_markdown(runs: Sequence[ProfileCostRun], summary: Sequence[dict], *, tolerance: float, command: str,
                  template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/profile_cost.md.j2) over ``summary``."""
    first = runs[0]
    rows = [[f"`{s['path']}`", ranged_text(s["ms_per_answer"], s["ms_per_answer_range"], digits=0, unit=" ms"),
             f"{100 * s['prefill_share']:.0f}%", "–" if s["decoded"] is None else f"{100 * s['decoded']:.0f}%",
             ranged_text(s["ratio"], s["ratio_range"], unit="×"),
             f"{100 * s['same_answers']:.1f}% of {s['answers']}",
             f"{s['max_quality_gap']:.3f}", *(f"`{s['chosen'][rule]}`" for rule in RULES)] for s in summary]
    cheapest = max(summary[1:], key=lambda s: s["ratio"]) if len(summary) > 1 else summary[0]
    context = {
        "command": command, "tolerance": tolerance, "pair": first.pair, "task": first.task,
        "plans": len(first.plans), "questions": first.questions, "batch_size": first.batch_size,
        "threads": first.threads, "rounds": max(r.round for r in runs) + 1, "baseline": summary[0],
        "devices": sorted({r.device for r in runs}), "amx": any("amx_bf16" in r.device for r in runs),
        "cheapest": cheapest, "goal_ratio": GOAL_RATIO, "met": cheapest["ratio_range"][0] >= GOAL_RATIO,
        "same_choice": all(cheapest["chosen"][rule] == summary[0]["chosen"][rule] for rule in RULES),
        "rules": RULES, "paths": summary, "prefill_bound": 1 / summary[0]["prefill_share"],
        "cheapest_prefill": min(summary, key=lambda s: s["prefill_ms"]),
        "drafted": [s for s in summary if s["same_as_undrafted"] is not None],
        "table": "\n".join(table(["path (dtype × plans per decode)", "ms per (plan × question) [range]",
                                  "of it prefill", "layer plans' answers decoded token by token",
                                  "cheaper than today's, run by run [range]", "answers as today's",
                                  "largest plan-quality change", *(f"chosen by `{r}`" for r in RULES)], rows)),
    }
    return render_page(template, context)


def write_cost_page(out_dir: str | Path, *, tolerance: float, command: str, template: str | Path) -> Path:
    out = Path(out_dir)
    runs = [ProfileCostRun.from_dict(row) for row in read_rows(out / RUNS_FILE)]
    summary = cost_summary(runs, tolerance)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    page = out / "README.md"
    page.write_text(cost_markdown(runs, summary, tolerance=tolerance, command=command, template=template))
    return page
