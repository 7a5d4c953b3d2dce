"""The proxy's page (reports/smollm2_proxy/): the decision rule chosen on the toy family, then on each real pair the
proxy's plan and the task search's plan — both found on the same profile-split questions — scored on the test split,
with their search costs at equal samples.

Reads the three files experiments/proxy_study.py writes beside the page: ``toy_rules.jsonl`` (every rule's
outcome on every toy pair), ``comparisons.jsonl`` (each real profile's proxy comparison: plans, seconds) and
``heldout.jsonl`` (ResultRow rows of the receiver and both plans on the test split).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from droidspeak.figures.intervals import bootstrap_interval, interval_text, paired_delta, ranged_text
from droidspeak.figures.style import OKABE_ITO, new_figure, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile.choice import quality_target
from droidspeak.track.results import read_rows

METHODS = {"full_prefill": ("receiver (full prefill)", OKABE_ITO["black"]),
           "task_search": ("task search's plan", OKABE_ITO["blue"]),
           "proxy": ("proxy's plan", OKABE_ITO["orange"])}
GOAL_RATIO = 10.0


def proxy_summary(heldout: Sequence[Mapping], comparisons: Sequence[Mapping], tolerance: float) -> list[dict]:
    """Per real pair: both plans on the test split (quality, CI, paired Δ vs the receiver, within the tolerance) and
    the two searches' seconds at equal samples."""
    summary = []
    for comparison in comparisons:
        rows = {r["method"]: r for r in heldout if r["pair"] == comparison["pair"]}
        receiver = rows["full_prefill"]
        reference = receiver["per_sample"]
        target = quality_target(receiver["quality"], tolerance)
        entries = []
        for method in METHODS:
            row = rows[method]
            entries.append(
                {
                    "method": method,
                    "plan": row["plan"],
                    "quality": row["quality"],
                    "ci": list(bootstrap_interval(row["per_sample"])),
                    **paired_delta(row["per_sample"], reference),
                    "within": row["quality"] >= target - 1e-12,
                    "recomputed_fraction": row["recomputed_fraction"],
                }
            )
        summary.append(
            {
                "pair": comparison["pair"],
                "task": comparison["task"],
                "metric": receiver["metric"],
                "n": receiver["n_samples"],
                "samples": comparison["samples"],
                "contexts": comparison["proxy_contexts"],
                "plans": comparison["plans"],
                "search_repeats": comparison["search_repeats"],
                "proxy_seconds": comparison["proxy_seconds"],
                "proxy_seconds_range": comparison["proxy_seconds_range"],
                "task_seconds": comparison["task_seconds_equal_samples"],
                "task_seconds_range": comparison["task_seconds_equal_samples_range"],
                "ratio": comparison["cost_ratio_equal_samples"],
                "ratio_range": comparison["cost_ratio_equal_samples_range"],
                "entries": entries,
                "task_prefill_seconds": comparison["task_group_prefill_seconds"],  # of the profile's own run:
                "task_run_seconds": comparison["task_seconds"],
                "spearman_top1": comparison["spearman_top1"],
            }
        )
    return summary


def plot_proxy(summary: Sequence[Mapping], out_dir: Path) -> list[Path]:
    """Test-split quality of the receiver and of each search's plan per pair; the two searches' seconds."""
    fig, (quality, cost) = new_figure(2, panel_size=(4.6, 2.8), max_cols=2)
    width = 0.26
    for i, pair in enumerate(summary):
        for j, e in enumerate(pair["entries"]):
            label, colour = METHODS[e["method"]]
            low, high = e["ci"]
            quality.bar(i + (j - 1) * width, e["quality"], width, color=colour, label=label,
                        yerr=[[e["quality"] - low], [high - e["quality"]]], error_kw={"elinewidth": 0.7})
        for offset, method in ((-width / 2, "task"), (width / 2, "proxy")):  # in the colours of the searches' plans
            seconds, (low, high) = pair[f"{method}_seconds"], pair[f"{method}_seconds_range"]
            cost.bar(i + offset, seconds, width, color=METHODS["task_search" if method == "task" else "proxy"][1],
                     yerr=[[seconds - low], [high - seconds]], error_kw={"elinewidth": 0.7})
    names = [p["pair"].replace("smol-", "") for p in summary]
    for ax in (quality, cost):
        ax.set_xticks(range(len(summary)), names, rotation=20, ha="right")
    quality.set_ylabel("test quality")
    cost.set_ylabel(f"search seconds (median, range of {summary[0]['search_repeats']} runs)")
    handles = dict(zip(*reversed(quality.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", frameon=False, ncol=len(handles))
    return save_figure(fig, out_dir, "fig_proxy_heldout")


def proxy_markdown(summary: Sequence[Mapping], toy: Sequence[Mapping], *, rule: str, command: str, tolerance: float,
                   template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/proxy.md.j2) over the numbers of ``summary`` and the toy rules."""
    rules = list(dict.fromkeys(o["rule"] for o in toy))
    toy_pairs = list(dict.fromkeys(o["pair"] for o in toy))
    by = {(o["rule"], o["pair"]): o for o in toy}
    toy_rows = [[f"`{r}`" + (" (chosen)" if r == rule else ""),
                 *(f"`{by[(r, p)]['plan']}` {'✓' if by[(r, p)]['within'] else '✗'}" for p in toy_pairs),
                 f"{sum(by[(r, p)]['within'] for p in toy_pairs)}/{len(toy_pairs)}",
                 sum(by[(r, p)]["layers"] for p in toy_pairs)] for r in rules]
    rows = []
    for pair in summary:
        for e in pair["entries"]:
            search = {"task_search": "task", "proxy": "proxy"}.get(e["method"])
            rows.append([pair["pair"], METHODS[e["method"]][0], f"`{e['plan']}`",
                         f"{e['quality']:.3f} {interval_text(e['ci'])}",
                         f"{e['delta']:+.3f} {interval_text(e['delta_ci'])}", "yes" if e["within"] else "no",
                         "–" if search is None else ranged_text(pair[f"{search}_seconds"],
                                                                 pair[f"{search}_seconds_range"], digits=1, unit=" s")])
    within = lambda method: sum(next(e for e in p["entries"] if e["method"] == method)["within"]  # noqa: E731
                                for p in summary)
    ratios = [p["ratio"] for p in summary]
    ratio_lows = [p["ratio_range"][0] for p in summary]
    context = {
        "command": command, "tolerance": tolerance, "first": summary[0], "pairs": len(summary),
        "toy_table": "\n".join(table(["rule", *toy_pairs, "within tol.", "layers in all"], toy_rows)),
        "heldout_table": "\n".join(table(["pair", "plan from", "plan", "test quality [95% CI]",
                                           "Δ vs receiver [paired 95% CI]", "within tol.",
                                           "search seconds [range]"], rows)),
        "proxy_ok": within("proxy"), "task_ok": within("task_search"), "ratios": ratios,
        "ratio_texts": [f"{p['pair']} {ranged_text(p['ratio'], p['ratio_range'], unit='×')}" for p in summary],
        "cheaper_everywhere": min(ratio_lows) > 1, "cheaper_nowhere": max(ratio_lows) <= 1,
        "prefill_seconds": [p["task_prefill_seconds"] for p in summary],
        "task_run_seconds": [p["task_run_seconds"] for p in summary], "spearman": [p["spearman_top1"] for p in summary],
        "goal_ratio": GOAL_RATIO, "met": within("proxy") == len(summary) and min(ratio_lows) >= GOAL_RATIO,
    }
    return render_page(template, context)


def write_proxy_page(out_dir: str | Path, *, command: str, tolerance: float, rule: str, template: str | Path) -> Path:
    out = Path(out_dir)
    summary = proxy_summary(read_rows(out / "heldout.jsonl"), read_rows(out / "comparisons.jsonl"), tolerance)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_proxy(summary, out)
    page = out / "README.md"
    page.write_text(proxy_markdown(summary, read_rows(out / "toy_rules.jsonl"), rule=rule, command=command,
                                   tolerance=tolerance, template=template))
    return page
