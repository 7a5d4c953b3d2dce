"""The held-out table: each pair's plan chosen on the profile split, scored on the test split beside the baselines,
every quality with a bootstrap confidence interval over questions.

Why intervals: a 5% tolerance on 64 questions is three answers, so a plan "within 5%" on one draw of questions
may not be on another. Each interval resamples the questions (percentile bootstrap, 10,000 resamples), or, where the
study knows each question's context (its facts' ``question_contexts``), whole contexts: a context's questions are
read over one document and are not independent draws. The difference to the receiver resamples the same questions
for both (paired), which is what "is this plan as good" asks. A difference is called significant only when a paired
sign-flip test (a context's questions flipped together) gives p < 0.05 and the paired interval excludes zero under
each of ten resampling seeds.

CacheBlend gets the same treatment as DroidSpeak's plans: where the sweep also scored CacheBlend plans on the
profile split (check layers at one compute), the best of them there is marked on the test split and compared,
paired, with DroidSpeak's plan.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from droidspeak.figures.intervals import (
    bootstrap_interval,
    interval_text,
    meets_target,
    paired_delta,
    paired_test_text,
    speedup_text,
    timing_fields,
    timing_text,
)
from droidspeak.figures.result_plots import eval_rows
from droidspeak.figures.style import FigureDataError
from droidspeak.track.records import ResultRow
from droidspeak.zoo.tasks import WIDE_TEST

BASELINES = ("full_prefill", "sender", "full_reuse")


def plan_outcomes(heldout: Sequence[ResultRow], tolerance: float,
                  contexts: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> dict[tuple[str, str], dict]:
    """(pair, plan that ran) -> the plan on the test split: quality, paired difference with the receiver, whether
    it holds (intervals.meets_target), speedup and its spread where timed. With ``contexts`` (a family's
    ``question_contexts``) the intervals resample contexts whole, as the study pages' do; a row without the
    receiver's questions' scores is refused, not called a miss."""
    receivers = {r.pair: r for r in heldout if r.method == "full_prefill"}
    outcomes = {}
    for row in heldout:
        receiver = receivers[row.pair]
        if not row.per_sample or len(row.per_sample) != len(receiver.per_sample or ()):
            raise FigureDataError(f"{row.pair} {row.resolved_plan} on {row.split}: no per-question scores of the "
                                  "receiver's questions; score it again")
        clusters = _question_contexts([receiver.to_dict()], contexts, row.pair, row.task, row.split)
        entry = {"quality": row.quality, "tolerance": tolerance,
                 **paired_delta(row.per_sample, receiver.per_sample, clusters)}
        outcomes[(row.pair, row.resolved_plan)] = {
            "quality": row.quality, "delta": entry["delta"], "delta_ci": entry["delta_ci"],
            "holds": bool(meets_target(entry, receiver.quality)), "speedup": row.speedup,
            "speedup_spread": row.speedup_spread, "timed_contexts": row.timed_contexts,
            "timed_repeats": row.timed_repeats, "num_layers": row.num_layers, **_resampling(clusters),
        }
    return outcomes


def _plan_of(row: Mapping) -> str:
    return row.get("resolved_plan") or row["plan"]


def _entry(row: Mapping, reference: Sequence[float] | None, clusters: Sequence[str] | None) -> dict:
    scores, choice = row.get("per_sample"), row.get("profile") or {}
    return {"method": row["method"], "plan": _plan_of(row), "quality": row["quality"], "n": row.get("n_samples"),
            "recomputed_fraction": row.get("recomputed_fraction"), **timing_fields(row),
            "tolerance": choice.get("tolerance"), "rule": choice.get("rule"), "rule_questions": choice.get("questions"),
            "ci": bootstrap_interval(scores, clusters=clusters) if scores else None,
            **paired_delta(scores, reference, clusters)}


def facts_contexts(facts: str | Path | None) -> dict | None:
    """Each question's context per task and split, from a study's ``rows/family.json`` (None: no facts, or facts from
    before they recorded it), for :func:`heldout`."""
    return json.loads(Path(facts).read_text()).get("question_contexts") if facts else None


def _question_contexts(panel: Sequence[Mapping], contexts: Mapping[str, Mapping[str, Sequence[str]]] | None,
                       pair: str, task: str, split: str) -> list[str] | None:
    """The contexts of a panel's questions: the split's layout in ``contexts`` (each question's context, in document
    order, the order of ``per_sample``), or its first n where the rows were scored on the first n questions (lm-eval's
    ``limit``, as a cheap rehearsal runs); scores of more questions than the split has, or of different counts, are
    refused."""
    layout = ((contexts or {}).get(task) or {}).get(split)
    counts = {len(row["per_sample"]) for row in panel if row.get("per_sample")}
    if layout is None or not counts:
        return None
    if len(counts) > 1 or max(counts) > len(layout):
        raise FigureDataError(f"{pair} on {task}/{split}: per-question scores of {sorted(counts)} questions, but the "
                              f"family's split has {len(layout)}: scored on other questions")
    return list(layout[: counts.pop()])


def _resampling(clusters: Sequence[str] | None) -> dict:
    """A panel's note of what its intervals resample: questions, or its contexts whole (and how many)."""
    return {"resampled": "questions" if clusters is None else "contexts",
            "contexts": None if clusters is None else len(set(clusters))}


def _best_on_profile(rows: Iterable[Mapping]) -> str | None:
    """The CacheBlend plan with the best quality on the profile split (ties: the cheaper one)."""
    blends = [r for r in rows if r["method"] == "cacheblend"]
    if not blends:
        return None
    return _plan_of(max(blends, key=lambda r: (r["quality"], -(r.get("recomputed_fraction") or 0.0))))


def _versus(blend: Mapping, droidspeak: Mapping, clusters: Sequence[str] | None) -> dict:
    """CacheBlend's chosen plan against DroidSpeak's on the same questions: paired difference and both costs."""
    return {"cacheblend": _plan_of(blend), "droidspeak": _plan_of(droidspeak),
            "fractions": (blend.get("recomputed_fraction"), droidspeak.get("recomputed_fraction")),
            **paired_delta(blend.get("per_sample"), droidspeak.get("per_sample"), clusters)}


HELD_OUT_SPLITS = ("test", WIDE_TEST)  # what a page reports (dev tunes recipes; profile chooses plans)


def one_held_out_split(rows: Iterable[Mapping]) -> list[dict]:
    """The rows a page summarizes: the held-out split's, and where a (pair, task) has rows on both the test split and
    the wide one that extends it, the wide one's only (never an average over two question sets)."""
    tested = [row for row in rows if row.get("split", "test") in HELD_OUT_SPLITS]
    widened = {(row["pair"], row["task"]) for row in tested if row.get("split") == WIDE_TEST}
    return [row for row in tested if row.get("split") == WIDE_TEST or (row["pair"], row["task"]) not in widened]


def heldout(rows: Iterable[Mapping], contexts: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> list[dict]:
    """Per (pair, task, held-out split: ``test`` or the wide ``test_wide``) with a receiver result and a plan chosen
    elsewhere: the baselines, the
    DroidSpeak plan (method ``profile``; or, where CacheBlend was chosen on the profile split, the ``recompute``
    plan it is compared with) and every CacheBlend point, each with its interval and its paired difference to the
    receiver; the CacheBlend plan best on the profile split is marked ``chosen`` and compared with the DroidSpeak
    plan (``versus``). ``contexts``: task → split → each question's context (a study's facts' ``question_contexts``),
    where known: every interval and paired test of that split then resamples whole contexts (``resampled``)."""
    panels: dict[tuple[str, str, str], list[Mapping]] = defaultdict(list)
    profile_split: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in eval_rows(rows):
        if row.get("source", "sweep") != "sweep":
            continue
        if row.get("split", "test") == "profile":
            profile_split[(row["pair"], row["task"])].append(row)
        elif row.get("split", "test") in HELD_OUT_SPLITS:
            panels[(row["pair"], row["task"], row.get("split", "test"))].append(row)
    table = []
    for (pair, task, split), panel in sorted(panels.items()):
        by_method = defaultdict(list)
        for row in panel:
            by_method[row["method"]].append(row)
        chosen = _best_on_profile(profile_split[(pair, task)])
        # held out means: a plan chosen elsewhere (by a profile file, or CacheBlend's on the profile split), scored
        # here beside the receiver; a named recompute plan is DroidSpeak's side only of that CacheBlend comparison
        droidspeak_rows = by_method["profile"] or (by_method["recompute"] if chosen else [])
        if not by_method["full_prefill"] or not droidspeak_rows:
            continue
        receiver = by_method["full_prefill"][0]
        reference = receiver.get("per_sample")
        clusters = _question_contexts(panel, contexts, pair, task, split)
        ordered = [r for m in BASELINES for r in by_method[m]] + droidspeak_rows
        ordered += sorted(by_method["cacheblend"], key=lambda r: (r.get("recomputed_fraction") or 0.0, r["plan"]))
        entries = [_entry(r, reference, clusters) for r in ordered]
        profile_quality = {_plan_of(r): r["quality"] for r in profile_split[(pair, task)]}
        for e in entries:
            e["meets_target"] = meets_target(e, receiver["quality"])
            e["profile_quality"] = profile_quality.get(e["plan"]) if e["method"] == "cacheblend" else None
            e["chosen"] = e["method"] == "cacheblend" and e["plan"] == chosen
        blend = next((r for r, e in zip(ordered, entries) if e["chosen"]), None)
        table.append({"pair": pair, "task": task, "metric": receiver["metric"], "num_layers": receiver["num_layers"],
                      "split": split, **_resampling(clusters),
                      "versus": None if blend is None else _versus(blend, droidspeak_rows[0], clusters),
                      "rows": entries})
    return table


def baselines_on(rows: Iterable[Mapping], split: str,
                 contexts: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> list[dict]:
    """Per (pair, task) scored on ``split`` (the dev split, where a receiver's recipe is tuned): the receiver, the
    sender answering and full reuse, each with its interval and its paired difference to the receiver, in the shape
    of :func:`heldout`'s panels: whether a recipe makes its receiver fit to study, read on questions that no plan is
    chosen or judged on."""
    panels: dict[tuple[str, str], dict[str, Mapping]] = defaultdict(dict)
    for row in eval_rows(rows):
        if row.get("source", "sweep") == "sweep" and row.get("split") == split and row["method"] in BASELINES:
            panels[(row["pair"], row["task"])].setdefault(row["method"], row)
    table = []
    for (pair, task), by_method in sorted(panels.items()):
        receiver = by_method.get("full_prefill")
        if receiver is None:
            continue
        clusters = _question_contexts(list(by_method.values()), contexts, pair, task, split)
        table.append({"pair": pair, "task": task, "metric": receiver["metric"], "split": split, **_resampling(clusters),
                      "rows": [_entry(by_method[m], receiver.get("per_sample"), clusters)
                               for m in BASELINES if m in by_method]})
    return table


def withheld_plans(table: list[dict]) -> frozenset[tuple[str, str, str]]:
    """(pair, task, plan) of every plan in ``table`` chosen at a tolerance that its questions do not show it within:
    the plans whose speedup the tables withhold (speedup_cell), for the figures to mark alike."""
    return frozenset((panel["pair"], panel["task"], e["plan"]) for panel in table for e in panel["rows"]
                     if e["meets_target"] is False)


def check_layer(plan: str) -> int:
    """The check layer of a ``cacheblend:R[@L]`` plan (0 where it names none)."""
    return int(plan.partition("@")[2] or 0)


def _method_name(e: Mapping) -> str:
    names = {"full_prefill": "receiver (full prefill)", "sender": "sender answers", "full_reuse": "full KV reuse",
             "profile": "plan chosen on the profile split", "recompute": "DroidSpeak plan", "cacheblend": "CacheBlend"}
    name = names.get(e["method"], e["method"])
    if e["method"] == "cacheblend":  # a CacheBlend is named by the layer its tokens are ranked at (LMCache's is 1)
        name = f"CacheBlend, check layer {check_layer(e['plan'])}"
    if e.get("rule"):  # rows since the choice rule is recorded say which rule chose, on how many questions
        name += f" (rule `{e['rule']}`, {e['rule_questions']} questions)"
    if e.get("profile_quality") is not None:
        name += f" ({e['profile_quality']:.3f} on the profile split{', chosen there' if e.get('chosen') else ''})"
    return name


def speedup_cell(e: Mapping) -> str:
    """A table's speedup: the receiver's own is the noise floor (full prefill timed against itself); a plan chosen at
    a tolerance that these questions do not show it within (its interval's lower end below the floor) is not quoted;
    the sender answering alone has none."""
    if e["method"] == "sender" or e["speedup"] is None:
        return "–"
    if e.get("meets_target") is False:
        return "not quoted: not shown within its target"
    text = speedup_text(e["speedup"], e.get("speedup_spread"))
    return f"{text} (noise floor)" if e["method"] == "full_prefill" else text


def markdown(table: list[dict]) -> list[str]:
    """The held-out tables (one per pair) as markdown lines."""
    lines = []
    for panel in table:
        timed = next((e["timed"] for e in panel["rows"] if e["method"] == "full_prefill"), [None, None])
        unit = (f"intervals resample its {panel['contexts']} contexts whole"
                if panel.get("resampled") == "contexts" else "intervals resample questions")
        lines += [f"**{panel['pair']}** on {panel['task']} ({panel['metric']}, {panel['split']} split, "
                  f"{panel['rows'][0]['n']} questions; {unit}; speedups: {timing_text(*timed)})", "",
                  "| method | plan | quality | 95% CI | Δ vs receiver | paired 95% CI of Δ | paired test | "
                  "recomputed | speedup |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in panel["rows"]:
            delta = "–" if e["delta"] is None else f"{e['delta']:+.3f}"
            fraction = "–" if e["recomputed_fraction"] is None else f"{e['recomputed_fraction']:.0%}"
            speedup = speedup_cell(e)
            lines.append(
                f"| {_method_name(e)} | `{e['plan']}` | {e['quality']:.3f} | "
                f"{interval_text(e['ci'])} | {delta} | {interval_text(e['delta_ci'])} | "
                f"{paired_test_text(e) if e['method'] != 'full_prefill' else '–'} | {fraction} | {speedup} |"
            )
        versus = panel.get("versus")
        if versus and versus["delta"] is not None:
            blend, droidspeak = versus["fractions"]
            lines += ["", f"CacheBlend chosen on the profile split (check layer {check_layer(versus['cacheblend'])}, "
                      f"`{versus['cacheblend']}`, {blend:.0%} recomputed) "
                      f"minus DroidSpeak's `{versus['droidspeak']}` ({droidspeak:.0%}): {versus['delta']:+.3f}, "
                      f"paired 95% CI {interval_text(versus['delta_ci'])}; {paired_test_text(versus)}."]
        lines.append("")
    return lines
