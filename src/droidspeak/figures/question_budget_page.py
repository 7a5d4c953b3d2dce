"""The question-budget page: per pair, budget and choice rule, how often the plan chosen from a draw of that many
profile questions holds on the test split, how many layers it recomputes, and its test quality and speed.

Reads ``choices.jsonl`` (profile.question_budget.BudgetChoice lines) and ``heldout.jsonl`` (ResultRow rows of the
receiver and every distinct chosen plan on the test split, re-timed by bench.retime where timings.jsonl sits beside
them) from the page's folder.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from droidspeak.figures.heldout import plan_outcomes
from droidspeak.figures.intervals import ranged_text, timing_text
from droidspeak.figures.style import OKABE_ITO, new_figure, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile.points import plan_layers
from droidspeak.profile.question_budget import BudgetChoice
from droidspeak.stats import median_range
from droidspeak.track.records import ResultRow, read_results
from droidspeak.track.results import read_rows

CHOICES_FILE = "choices.jsonl"
HELDOUT_FILE = "heldout.jsonl"
RULE_STYLE = {"point": (OKABE_ITO["orange"], "o"), "bootstrap95": (OKABE_ITO["blue"], "s")}


def budget_summary(choices: Sequence[BudgetChoice], outcomes: Mapping[tuple[str, str], dict]) -> list[dict]:
    """One entry per (pair, budget, rule), in file order."""
    groups: dict[tuple[str, int, str], list[BudgetChoice]] = defaultdict(list)
    for choice in choices:
        groups[(choice.pair, choice.budget, choice.rule)].append(choice)
    summary = []
    for (pair, budget, rule), drawn in groups.items():
        results = [outcomes[(pair, c.plan)] for c in drawn]
        layers = [plan_layers(c.plan, results[0]["num_layers"])[0] for c in drawn]
        held = [r for r in results if r["holds"]]
        quality, quality_range = median_range([r["quality"] for r in results])
        speedup, speedup_range = median_range([r["speedup"] for r in held if r["speedup"] is not None])
        summary.append({
            "pair": pair, "budget": budget, "rule": rule, "draws": len(drawn),
            "distinct_plans": len({c.plan for c in drawn}), "plans": sorted({c.plan for c in drawn}),
            "layers": statistics.median_low(layers), "layers_range": [min(layers), max(layers)],
            "holds": len(held) / len(drawn), "quality": quality, "quality_range": quality_range,
            "speedup_of_holding": speedup, "speedup_of_holding_range": speedup_range,
        })
    return summary


def plot_budget(summary: Sequence[Mapping], out_dir: Path) -> list[Path]:
    """Per pair and rule: the share of draws whose plan holds on the test split, and the layers it recomputes."""
    fig, (holds, layers) = new_figure(2, panel_size=(4.2, 2.8), max_cols=2)
    pairs = list(dict.fromkeys(s["pair"] for s in summary))
    for rule, (colour, marker) in RULE_STYLE.items():
        for index, pair in enumerate(pairs):
            line = sorted((s for s in summary if s["pair"] == pair and s["rule"] == rule), key=lambda s: s["budget"])
            if not line:
                continue
            budgets = [s["budget"] for s in line]
            label = rule if index == 0 else None
            holds.plot(budgets, [s["holds"] for s in line], color=colour, marker=marker, lw=0.9, ms=3, alpha=0.8,
                       label=label)
            layers.plot(budgets, [s["layers"] for s in line], color=colour, marker=marker, lw=0.9, ms=3, alpha=0.8)
    for ax in (holds, layers):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("profile questions the choice read")
    holds.set_ylabel("draws whose plan holds on test")
    holds.set_ylim(-0.03, 1.03)
    layers.set_ylabel("layers recomputed (median draw)")
    holds.legend(frameon=False, fontsize=7, title="choice rule", title_fontsize=7)
    return save_figure(fig, out_dir, "fig_question_budget")


def budget_markdown(summary: Sequence[Mapping], heldout: Sequence[ResultRow], *, tolerance: float, command: str,
                    template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/question_budget.md.j2) over ``summary``."""
    rows = [[s["pair"], s["budget"], f"`{s['rule']}`", f"{s['distinct_plans']} of {s['draws']}",
             ranged_text(s["layers"], s["layers_range"], digits=0), f"{100 * s['holds']:.0f}%",
             ranged_text(s["quality"], s["quality_range"], digits=3),
             ranged_text(s["speedup_of_holding"], s["speedup_of_holding_range"], unit="×")] for s in summary]
    timed = next((r for r in heldout if r.timed_contexts), None)
    largest = {pair: max(s["budget"] for s in summary if s["pair"] == pair) for pair in {s["pair"] for s in summary}}
    label = lambda s: "all" if s["budget"] == largest[s["pair"]] else s["budget"]  # noqa: E731
    pooled = []  # over the pairs: how often a draw's plan holds, per budget and rule
    for budget in dict.fromkeys(label(s) for s in sorted(summary, key=lambda s: s["budget"])):
        cells = []
        for rule in RULE_STYLE:
            mine = [s for s in summary if label(s) == budget and s["rule"] == rule]
            draws = sum(s["draws"] for s in mine)
            cells.append({"rule": rule, "draws": draws, "holds": sum(s["holds"] * s["draws"] for s in mine) / draws,
                          "layers": sum(s["layers"] * s["draws"] for s in mine) / draws})
        pooled.append({"budget": budget, "cells": cells})
    pooled_rows = [[p["budget"], *(f"{100 * c['holds']:.0f}% of {c['draws']} ({c['layers']:.1f} layers)"
                                   for c in p["cells"])] for p in pooled]
    context = {
        "command": command, "tolerance": tolerance, "pairs": len(largest),
        "budgets": [p["budget"] for p in pooled if p["budget"] != "all"],
        "draws": max(s["draws"] for s in summary), "test_questions": heldout[0].n_samples,
        "timing": timing_text(timed.timed_contexts, timed.timed_repeats) if timed else timing_text(None, None),
        "table": "\n".join(table(["pair", "questions", "rule", "distinct plans (of draws)",
                                  "layers recomputed, median [range]", "draws whose plan holds on test",
                                  "test quality, median [range]",
                                  "speedup of the holding draws' plans, median [range over those draws]"], rows)),
        "pooled_table": "\n".join(table(["questions", *(f"`{rule}`: draws that hold (mean layers)"
                                                        for rule in RULE_STYLE)], pooled_rows)),
        "pooled": {p["budget"]: {c["rule"]: c for c in p["cells"]} for p in pooled},
        "at_all": {rule: [s for s in summary if label(s) == "all" and s["rule"] == rule] for rule in RULE_STYLE},
        "noise": [f"{r.pair} {ranged_text(r.speedup, r.speedup_spread, unit='×')}" for r in heldout
                  if r.method == "full_prefill" and r.speedup is not None],
    }
    return render_page(template, context)


def write_budget_page(out_dir: str | Path, *, tolerance: float, command: str, template: str | Path) -> Path:
    out = Path(out_dir)
    choices = [BudgetChoice.from_dict(row) for row in read_rows(out / CHOICES_FILE)]
    heldout = read_results(out / HELDOUT_FILE)
    summary = budget_summary(choices, plan_outcomes(heldout, tolerance))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_budget(summary, out)
    page = out / "README.md"
    page.write_text(budget_markdown(summary, heldout, tolerance=tolerance, command=command, template=template))
    return page
