"""The search-granularity page: one pair's exhaustive profile over groups aligned to a fine granularity, beside the
study's coarser profile on the same questions and the coarse-to-fine search replayed from the fine profile's stored
scores (profile.coarse_to_fine.replay), and the exhaustive search chosen by bounds that hold for all its plans at
once (the simultaneous rule at the profile's level): which plan each search chooses, how many plans it scored, whether
the coarse-to-fine search's premise holds, and how the chosen plans do on the test split.

Reads the two profiles, the test-split rows (ResultRow: the receiver and the chosen plans, re-timed by bench.retime
where timings.jsonl sits beside them) and the family's question layout (its contexts: what the intervals resample).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from droidspeak.figures.heldout import plan_outcomes
from droidspeak.figures.intervals import speedup_text, timing_text
from droidspeak.figures.style import OKABE_ITO, FigureDataError, new_figure, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile.candidates import single_group_plans
from droidspeak.profile.choice import (
    ChoiceRule,
    choice_rule,
    choose_plan,
    quality_target,
    simultaneous_rule,
)
from droidspeak.profile.coarse_to_fine import check_rule, hull_misses, nested_inversions, replay
from droidspeak.profile.points import ProfilePoint, plan_layers
from droidspeak.profile.profile_file import Profile, ProfileError
from droidspeak.track.records import ResultRow
from droidspeak.zoo.tasks import WIDE_TEST

# the searches the page compares, in order
PAGE_ROWS = ("study", "coarse stage alone", "coarse-to-fine", "exhaustive", "exhaustive, bounds together")


def check_profiles(fine: Profile, study: Profile) -> None:
    """The fine profile must be exhaustive (replay reads every plan from it) and both must be one pair's, on the
    same questions, chosen by the same rule; otherwise their choices are not comparable."""
    if (fine.extra.get("search") or {}).get("kind", "exhaustive") != "exhaustive":
        raise ProfileError(f"the fine profile of {fine.pair} was searched {fine.extra['search']['kind']}: replaying "
                           "another search and setting it beside the study's needs an exhaustive one")
    missing = set(single_group_plans(fine.num_layers, fine.granularity)) - {p.plan for p in fine.points}
    if missing:
        raise ProfileError(f"the fine profile of {fine.pair} lacks {len(missing)} of the groups aligned to "
                           f"{fine.granularity} (e.g. {sorted(missing)[0]!r}): profile it with search=exhaustive")
    if (fine.pair, fine.task) != (study.pair, study.task):
        raise ProfileError(f"the profiles are of {fine.pair} on {fine.task} and {study.pair} on {study.task}: "
                           "compare one pair's profiles on one task")
    if not fine.inputs or fine.inputs != study.inputs or fine.reference_per_input != study.reference_per_input:
        raise ProfileError(f"the two profiles of {fine.pair} read different (or unrecorded) questions, or the "
                           "receiver answered them differently: profile both on the same split with the same code")
    check_rule(fine.rule())  # the page replays the coarse-to-fine search, steered by the profiles' rule
    if fine.rule().name != study.rule().name:
        raise ProfileError(f"the profiles of {fine.pair} choose by {fine.rule().name} and {study.rule().name}: "
                           "profile both with one rule")


def repeat_agreement(fine: Profile, study: Profile) -> dict:
    """How alike the two runs scored what both scored (the single layers and the shared groups): the share of
    (plan, question)s with the same score. Two runs differ only by their threads, answer path and arithmetic."""
    def scores(profile: Profile) -> dict[str, Sequence[float]]:
        return {**{p.plan: p.per_input for p in profile.points if p.per_input is not None},
                **{f"layer {s.layer}": s.per_input for s in profile.single_layer if s.per_input is not None}}

    mine, theirs = scores(fine), scores(study)
    shared = sorted(set(mine) & set(theirs))
    pairs = [(a, b) for plan in shared for a, b in zip(mine[plan], theirs[plan], strict=True)]
    return {"plans": len(shared), "scores": len(pairs), "same": sum(a == b for a, b in pairs)}


class _Chooser:
    """One rule at one tolerance against one profile's receiver: accepts a point, chooses among points."""

    def __init__(self, profile: Profile, rule: ChoiceRule, tolerance: float):
        self.profile, self.rule, self.tolerance = profile, rule, tolerance

    def accepts(self, point: ProfilePoint) -> bool:
        return self.rule.passes(point, self.profile.reference_quality, self.profile.reference_per_input,
                                self.tolerance)

    def choose(self, points: Sequence[ProfilePoint]) -> str:
        return choose_plan(points, self.profile.reference_quality, self.tolerance, rule=self.rule,
                           reference_per_input=self.profile.reference_per_input)


def _entry(search: str, alignment: str, points: Sequence[ProfilePoint], chooser: _Chooser) -> dict:
    """A search's row: what it scored and chose, the choice's profile quality and its 95% lower bound (its own
    alone, or, for a simultaneous rule, the one that holds with every other plan's)."""
    profile = chooser.profile
    plan = chooser.choose(points)
    point = next((p for p in points if p.plan == plan), None)
    bound = None
    if point is not None and point.per_input is not None:
        rule = chooser.rule if chooser.rule.level is not None else choice_rule()  # a point-rule page: the default's
        judged = list(points) if rule.simultaneous else [point]  # a simultaneous bound holds beside every plan's
        bound = rule.lower_bounds(judged, profile.reference_per_input)[judged.index(point)]
    return {"search": search, "alignment": alignment, "plans": len(points), "plan": plan,
            "layers": plan_layers(plan, profile.num_layers)[0],
            "quality": point.quality if point else profile.reference_quality, "lower_bound": bound}


def search_choices(fine: Profile, study: Profile, *, coarse: int, tolerance: float) -> list[dict]:
    """Per search, in PAGE_ROWS' order: the study's exhaustive profile, the coarse stage alone, the coarse-to-fine
    search and the exhaustive fine one, each with its plan count and choice by the profiles' rule; then the exhaustive
    fine one chosen by the simultaneous rule at that rule's level."""
    chooser = _Chooser(fine, fine.rule(), tolerance)
    together = _Chooser(fine, simultaneous_rule(fine.rule()), tolerance)
    layers, g = fine.num_layers, fine.granularity
    coarse_plans = set(single_group_plans(layers, coarse))
    searched = replay(fine.points, chooser.accepts, layers, coarse=coarse, fine=g)
    return [
        _entry(PAGE_ROWS[0], str(study.granularity), study.points, chooser),
        _entry(PAGE_ROWS[1], str(coarse), [p for p in fine.points if p.plan in coarse_plans], chooser),
        _entry(PAGE_ROWS[2], f"{coarse} → {g}", searched, chooser),
        _entry(PAGE_ROWS[3], str(g), fine.points, chooser),
        {**_entry(PAGE_ROWS[4], str(g), fine.points, together), "rule": together.rule.name,
         "level": together.rule.level},
    ]


def agreement(fine: Profile, *, coarse: int, tolerances: Sequence[float]) -> list[dict]:
    """Per rule (the profile's, then the point rule) and tolerance: the exhaustive fine choice, the coarse-to-fine
    one, the plans each scored, and the (group, hull) pairs that break the coarse-to-fine search's premise."""
    if not tolerances:
        raise ValueError("agreement needs at least one tolerance to compare the searches at")
    rows = []
    for name in dict.fromkeys((fine.rule().name, "point")):
        for tolerance in tolerances:
            chooser = _Chooser(fine, choice_rule(name), tolerance)
            searched = replay(fine.points, chooser.accepts, fine.num_layers, coarse=coarse, fine=fine.granularity)
            exhaustive, fast = chooser.choose(fine.points), chooser.choose(searched)
            extra = plan_layers(fast, fine.num_layers)[0] - plan_layers(exhaustive, fine.num_layers)[0]
            rows.append({"rule": name, "tolerance": tolerance, "exhaustive": exhaustive, "coarse_to_fine": fast,
                         "same": exhaustive == fast, "extra_layers": extra, "plans": len(searched),
                         "exhaustive_plans": len(fine.points),
                         "hull_misses": len(hull_misses(fine.points, chooser.accepts, fine.num_layers, coarse))})
    return rows


def heldout_table(fine: Profile, choices: Sequence[Mapping], rows: Sequence[ResultRow], tolerance: float,
                  contexts: Mapping | None) -> dict:
    """The receiver and each distinct chosen plan on the wide test split (``quality`` None where the plan was not
    scored there); the rows must be this pair's and task's, and a profile's plan must be the one its rule chose at
    ``tolerance``."""
    found = sorted({(r.pair, r.task, r.split) for r in rows})
    if len(found) != 1 or found[0][1:] != (fine.task, WIDE_TEST) or not found[0][0].endswith(fine.pair):
        raise FigureDataError(f"the test rows must be {fine.pair}'s on {fine.task}/{WIDE_TEST}, not {found}")
    receiver = next((r for r in rows if r.method == "full_prefill"), None)
    if receiver is None:
        raise FigureDataError(f"no full_prefill row of {fine.pair} on {WIDE_TEST}: every plan is set against the "
                              "receiver")
    for row in rows:
        chosen_by = row.profile or {}
        if row.method == "profile" and (chosen_by.get("rule"), chosen_by.get("tolerance")) != (fine.rule().name,
                                                                                               tolerance):
            raise FigureDataError(f"{row.resolved_plan} was chosen by {chosen_by.get('rule')} at tolerance "
                                  f"{chosen_by.get('tolerance')}, the page by {fine.rule().name} at {tolerance}")
    outcomes = plan_outcomes(rows, tolerance, contexts)
    plans = {}
    for c in choices:
        plans.setdefault(c["plan"], {"plan": c["plan"], "layers": c["layers"],
                                     **(outcomes.get((receiver.pair, c["plan"])) or {"quality": None})})
    return {"receiver": receiver.quality, "questions": receiver.n_samples, "plans": list(plans.values()),
            "resampled": outcomes[(receiver.pair, receiver.resolved_plan)]["resampled"],
            "noise": speedup_text(receiver.speedup, receiver.speedup_spread),
            "timing": timing_text(receiver.timed_contexts, receiver.timed_repeats)}


def plot_groups(fine: Profile, study: Profile, choices: Sequence[Mapping], tolerance: float,
                out_dir: Path) -> list[Path]:
    """Every single-group plan's profile quality against the layers it recomputes, both alignments, the target and
    each plan a search chose (ringed, named in the legend with the searches that chose it)."""
    fig, (ax,) = new_figure(1, panel_size=(5.2, 3.4))
    for profile, colour, marker, size in ((fine, OKABE_ITO["sky"], "o", 14), (study, OKABE_ITO["orange"], "s", 22)):
        ax.scatter([p.recomputed_layers for p in profile.points], [p.quality for p in profile.points], s=size,
                   color=colour, marker=marker, alpha=0.75, lw=0, label=f"groups aligned to {profile.granularity}")
    ax.axhline(quality_target(fine.reference_quality, tolerance), color=OKABE_ITO["black"], lw=0.8, ls="--",
               label=f"receiver − {tolerance:.0%}")
    chosen_by: dict[str, list[Mapping]] = {}
    for choice in choices:
        chosen_by.setdefault(choice["plan"], []).append(choice)
    colours = [OKABE_ITO[c] for c in ("vermillion", "black", "green", "purple", "blue")]
    for (plan, by), colour in zip(chosen_by.items(), colours):
        ax.scatter([by[0]["layers"]], [by[0]["quality"]], s=80, facecolors="none", edgecolors=colour, lw=1.2,
                   label=f"{plan}: {', '.join(c['search'] for c in by)}")
    ax.set_xlabel(f"layers recomputed (of {fine.num_layers})")
    ax.set_ylabel(f"{fine.metric} on the profile split ({fine.questions} questions)")
    ax.set_title(fine.pair, fontsize=8)
    ax.legend(frameon=False, fontsize=6, loc="lower right")
    return save_figure(fig, out_dir, "fig_granularity")


def granularity_summary(fine: Profile, study: Profile, rows: Sequence[ResultRow], *, coarse: int, tolerance: float,
                        tolerances: Sequence[float], contexts: Mapping | None = None) -> dict:
    """Everything the page says, from the two profiles and the test rows (summary.json)."""
    check_profiles(fine, study)
    rule = fine.rule()
    choices = search_choices(fine, study, coarse=coarse, tolerance=tolerance)
    inverted, nested = nested_inversions(fine.points, fine.num_layers)
    return {
        "pair": fine.pair, "task": fine.task, "metric": fine.metric, "questions": fine.questions,
        "num_layers": fine.num_layers, "rule": rule.name, "rule_level": rule.level, "tolerance": tolerance,
        "coarse": coarse, "fine": fine.granularity, "receiver": fine.reference_quality, "choices": choices,
        "agreement": agreement(fine, coarse=coarse, tolerances=tolerances),
        "nested_pairs": nested, "inversions": inverted, "repeat": repeat_agreement(fine, study),
        "single_layers": len(fine.single_layer),
        "runs": {name: {"seconds": p.timing.get("total_seconds"), "dtype": (p.extra.get("job") or {}).get("dtype"),
                        "drafts": (p.extra.get("job") or {}).get("drafts")}  # None: not recorded
                 for name, p in (("fine", fine), ("study", study))},
        "test": heldout_table(fine, choices, rows, tolerance, contexts),
    }


def _delta(test: Mapping) -> str:
    low, high = test["delta_ci"]
    return f"{test['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"


def granularity_markdown(summary: Mapping, *, command: str, study_link: str, template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/granularity.md.j2) over ``summary``."""
    layers = summary["num_layers"]
    tested = {t["plan"]: t for t in summary["test"]["plans"]}
    choice_rows = []
    for c in summary["choices"]:
        test, scored = tested[c["plan"]], tested[c["plan"]]["quality"] is not None
        choice_rows.append([
            c["search"], c["alignment"], c["plans"], f"{c['layers']}/{layers} `{c['plan']}`", f"{c['quality']:.3f}",
            "–" if c["lower_bound"] is None else f"{c['lower_bound']:+.3f}",
            f"{test['quality']:.3f}" if scored else "not scored", _delta(test) if scored else "–",
            ("**yes**" if test["holds"] else "no") if scored else "–",
            (speedup_text(test.get("speedup"), test.get("speedup_spread")) if test["holds"] else "not quoted: misses")
            if scored else "–",
            f"{layers / c['layers']:.2f}×" if c["layers"] else "–"])
    agreement_rows = [[f"`{a['rule']}`", f"{a['tolerance']:.0%}", f"`{a['exhaustive']}`", f"`{a['coarse_to_fine']}`",
                       "yes" if a["same"] else "**no**", f"{a['extra_layers']:+d}",
                       f"{a['plans']} of {a['exhaustive_plans']}", a["hull_misses"]] for a in summary["agreement"]]
    context = {
        **summary, "command": command, "study_link": study_link, "tested": tested,
        "all_agree": all(a["same"] for a in summary["agreement"]),
        "choices_table": "\n".join(table([
            "search", "aligned to", "plans scored", "chosen (layers recomputed)", "profile quality",
            f"profile Δ, one-sided {100 * (summary['rule_level'] or 0.95):.0f}% lower bound", "test quality",
            "test Δ [95% CI]", "holds on test",
            "speedup [range]", "compute-only limit"], choice_rows)),
        "agreement_table": "\n".join(table([
            "rule", "tolerance", "exhaustive choice", "coarse-to-fine choice", "same", "layers more",
            "plans scored", "hull misses"], agreement_rows)),
        "missed": [a for a in summary["agreement"] if not a["same"]],
    }
    return render_page(template, context)


def write_granularity_page(fine: Profile, study: Profile, rows: Sequence[ResultRow], out_dir: str | Path, *,
                           study_profile: str | Path, coarse: int, tolerance: float, tolerances: Sequence[float],
                           command: str, template: str | Path, contexts: Mapping | None = None) -> Path:
    """summary.json, the figure and README.md in ``out_dir``; ``study_profile`` is linked from the page."""
    out = Path(out_dir)
    summary = granularity_summary(fine, study, rows, coarse=coarse, tolerance=tolerance, tolerances=tolerances,
                                  contexts=contexts)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_groups(fine, study, summary["choices"], tolerance, out)
    page = out / "README.md"
    page.write_text(granularity_markdown(summary, command=command, template=template,
                                         study_link=os.path.relpath(study_profile, out)))
    return page
