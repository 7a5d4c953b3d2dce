"""The real-model study's page (``reports/<study>/README.md``), assembled from what the study wrote: the family's
facts (:func:`study_facts`: its report, its contexts' lengths in the model's own tokens, the base's size, kept as
``rows/family.json`` while the family is at hand), ``summary.json`` (held out, speedups re-timed beside the rows),
``profiles.json`` and the profile files (for the transfer). Rendering reads files only, no model. Nothing on it is
typed by hand except the paper's side of how the setting differs from it."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path

from droidspeak.figures.heldout import markdown as heldout_markdown
from droidspeak.figures.intervals import (
    RESAMPLES,
    SEEDS,
    interval_text,
    meets_target,
    paired_delta,
    paired_test_text,
    speedup_text,
    timing_text,
)
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile import critical_sets
from droidspeak.profile.points import plan_layers
from droidspeak.profile.profile_file import Profile
from droidspeak.profile.ranks import frontier_difference
from droidspeak.track.records import read_results
from droidspeak.track.results import read_rows
from droidspeak.zoo.recipe import BASE
from droidspeak.zoo.tasks import DEV, WIDE_TEST
from droidspeak.zoo.train import LORA_TARGETS

FIGURES = (
    ("fig06_quality_bars", "Fig. 6: receiver / sender / full reuse per pair (held-out split)"),
    (
        "fig07_layer_sensitivity",
        "Fig. 7: quality when only that layer's K/V is reused, every other layer recomputed (profile split)",
    ),
    ("fig08_input_spread", "Fig. 8: per-question spread of that sensitivity"),
    ("fig11_profile_pareto", "Fig. 11: every profiled group, its Pareto frontier and the plan chosen at the tolerance"),
    ("fig17_profile_transfer", "Fig. 17: one pair's profile on its own task and on a second task"),
    ("fig14_quality_vs_speedup", "Fig. 14: quality vs measured prefill speedup (held-out split, every plan scored "
                                 "there; a chosen plan not shown within its target is hollow, its speedup not "
                                 "quoted in the tables; bars: the quality's 95% CI over questions, the speedup's "
                                 "smallest to largest timed ratio)"),
)

def _base_facts(base: Path) -> dict:
    """The base model's size and attention layout, read from its config and weights' headers."""
    from safetensors import safe_open

    config = json.loads((base / "config.json").read_text())
    with safe_open(str(base / "model.safetensors"), "pt") as weights:
        params = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    sliding = sum(kind == "sliding_attention" for kind in config.get("layer_types") or [])
    return {"params": params, "layers": config["num_hidden_layers"], "window": config.get("sliding_window"),
            "sliding_layers": sliding, "layer_types": config.get("layer_types")}


def study_facts(family, tokenizer) -> dict:
    """What the page needs from the family, computed while it is at hand: its report, which task each model was
    tuned on, its contexts' lengths in the model's own tokens, the base's size, and each question's context."""
    return {"report": family.report, "own_task": family.own_task,
            "token_rows": _token_lengths(family.task_files, tokenizer), "base": _base_facts(family.models[BASE]),
            "question_contexts": question_contexts(family.task_files)}


def question_contexts(task_files: dict) -> dict[str, dict[str, list[str]]]:
    """Per task and split scored (the dev split too), each question's context, in document order (the order of a
    row's per-question scores): what an interval resamples whole."""
    return {task: {split: [r["context_id"] for r in read_rows(files[split])]
                   for split in ("profile", "test", WIDE_TEST, DEV) if split in files}
            for task, files in task_files.items()}


def _token_lengths(task_files: dict, tokenizer) -> list[list]:
    """Per task and evaluation split (the wide test split too, where the family draws one): contexts, questions and
    the contexts' lengths in tokens."""
    rows = []
    for task, files in task_files.items():
        for split in [s for s in ("profile", "test", WIDE_TEST) if s in files]:
            records = read_rows(files[split])
            contexts = {r["context_id"]: r["context"] for r in records}
            lengths = sorted(len(tokenizer(c)["input_ids"]) for c in contexts.values())
            rows.append([task, split, len(contexts), len(records), int(statistics.median(lengths)),
                         lengths[0], lengths[-1], sum(n >= 2000 for n in lengths)])
    return rows


def _family_section(report: dict) -> list[str]:
    source = report["base_source"]
    lines = [f"Base: `{source['file']}` from the pip package `{source['package']}` {source['version']} "
             f"(GGUF sha256 `{source['sha256'][:16]}…`), converted to float32 safetensors "
             f"({report['timings_s'].get('convert_base')} s). Recipe hash `{report['recipe_hash'][:16]}`.", ""]
    family_seed = report["recipe"]["seed"]
    trained = [(name, variant, report.get("curves", {}).get(f"finetune-{name}"),
                report["timings_s"].get(f"finetune-{name}"), "")
               for name, variant in report["recipe"]["variants"].items()]
    trained += [(name, e["recipe"], e.get("curve"), e["timings_s"].get(f"finetune-{name}"), " (extension)")
                for name, e in report.get("extensions", {}).items()]
    rows = []
    for name, variant, curve, seconds, note in trained:
        final_loss = (curve or [[None, None]])[-1][1]
        task = report["recipe"]["tasks"][variant["tasks"][0]]
        source = report["recipe"]["variants"].get(variant.get("examples_of")) or variant  # whose examples it reads
        low, high = source.get("train_size") or task.get("train_size") or (task["size_min"], task["size_max"])
        rows.append([name + note, variant["kind"],
                     f"r={variant['rank']}, α={variant['alpha']}" if variant["kind"] in ("lora", "alora") else "–",
                     variant["tasks"][0], f"{low}–{high} (eval {task['size_min']}–{task['size_max']})",
                     str(variant["steps"]), f"{variant['lr']:g}",
                     str(family_seed if variant.get("seed") is None else variant["seed"]),
                     "–" if final_loss is None else f"{final_loss:.3f}", str(seconds)])
    lines += table(["receiver", "kind", "adapter", "trained on", "training contexts' size (evaluated), in the task's "
                    "passages / sections / functions", "steps", "lr", "seed", "final loss", "train s"], rows)
    accuracy = report["accuracy"]
    tasks = list(next(iter(accuracy.values())))
    lines += ["", f"Quality of every model on every task (test split, greedy, first "
              f"{report['recipe']['measure']['max_questions']} questions; built with the family):", ""]
    lines += table(["model", *tasks], [[m, *(f"{accuracy[m][t]:.3f}" for t in tasks)] for m in accuracy])
    unmeasured = [name for name in report.get("extensions", {}) if name not in accuracy]
    if unmeasured:  # an extension is trained after the family's measure ran: its quality is its pairs' receiver rows
        lines += ["", "Not in this table (extensions, trained after it was measured): "
                  + ", ".join(f"`{name}`" for name in unmeasured)
                  + ". Where a pair below has one as its receiver, the held-out tables score it on its own task."]
    return lines


def _own_task(pair: str, own_task: dict) -> str | None:
    """The task a profile's receiver (``pair``: ``receiver<-sender``, model names) was tuned on."""
    return own_task.get(pair.split("<-")[0])


def _profile_section(profiles: dict, own_task: dict) -> list[str]:
    """Each pair's profile on its receiver's own task; one on a second task is named after the table (the transfer
    section shows it beside its own)."""
    entries = profiles.get("profiles", [])
    own = [e for e in entries if e["task"] == _own_task(e["pair"], own_task)]
    rows = []
    for e in own:
        loss = None if not e["receiver"] or e["full_reuse"] is None else 1 - e["full_reuse"] / e["receiver"]
        rows.append([e["pair"], e["task"], f"{e['receiver']:.3f}", f"{e['full_reuse']:.3f}",
                     "–" if loss is None else f"{loss:.0%}",
                     ", ".join(map(str, e["critical_layers"] or [])) or "none",
                     f"`{e['chosen_plan']}` ({e['chosen_layers']}/{e['num_layers']})", f"{e['chosen_quality']:.3f}",
                     _together_cell(e), "yes" if e.get("uses_e_cache") else "no", str(e["questions"])])
    rules = sorted({e["rule"] for e in own if e.get("rule")}) or ["its rule"]
    together = sorted({e["together_rule"] for e in own if e.get("together_rule")}) or ["a simultaneous rule"]
    header = ["pair", "task", "receiver", "full reuse", "full reuse loses", "critical layers (>10%)",
              f"plan chosen at {profiles.get('tolerance', 0.05):.0%} ({', '.join(rules)})", "its quality",
              f"chosen by {', '.join(together)} (bounds holding for all the profile's plans at once)",
              "fed by the E cache", "questions"]
    used = sum(1 for e in own if e.get("uses_e_cache"))
    lines = [*table(header, rows), "", f"Chosen plans fed by the sender's E cache (a group starting above layer 0): "
             f"{used} of {len(rows)}."]
    others = [f"{e['pair']} on {e['task']}" for e in entries if e not in own]
    if others:
        lines[-1] += (" Not in this table, profiled on a task other than its receiver's own (the transfer section "
                      f"below): {'; '.join(others)}.")
    return lines


def _together_cell(entry: Mapping) -> str:
    """The plan the profile's simultaneous rule chooses: "same" where it is the chosen plan, "–" where none applies."""
    plan = entry.get("chosen_together")
    if plan is None:
        return "–"
    return "same" if plan == entry["chosen_plan"] else f"`{plan}` ({plan_layers(plan, entry['num_layers'])[0]}/" \
                                                        f"{entry['num_layers']})"


def _layer_ranges(layers: list[int]) -> str:
    """``[6, 7, 8, 10]`` → ``6–8, 10``."""
    ranges, start = [], None
    for i, layer in enumerate(layers):
        start = layer if start is None else start
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            ranges.append(f"{start}–{layer}" if layer > start else str(start))
            start = None
    return ", ".join(ranges)


def _where(layers: list[int], num_layers: int) -> str:
    thirds = sorted({("early", "middle", "late")[min(2, 3 * layer // num_layers)] for layer in layers},
                    key=("early", "middle", "late").index)
    return " and ".join(thirds)


def _same_pair(held: str, profiled: str) -> bool:
    """A held-out pair (config names, e.g. ``smol-lora-code<-base``) and a profile's (model names)."""
    (h_receiver, h_sender), (p_receiver, p_sender) = held.split("<-"), profiled.split("<-")
    return h_receiver.endswith(p_receiver) and h_sender.endswith(p_sender)


def _bound_verdict(median: float, low: float, high: float, bound: float) -> str:
    """A measured speedup (median, smallest, largest) against the layer-count bound, which counts every layer as equal
    cost: layers that differ in cost (a sliding window's) can put a timing above it, a whole range above it cannot."""
    if median <= bound:
        return "within the bound" if high <= bound else \
            "median within the layer-count bound, range reaching above it (layers differ in cost)"
    if low <= bound:
        return "median above the layer-count bound, range straddling it (layers differ in cost)"
    return "above the bound: the timing is off"


def _paper_comparison(summary: dict, profiles: dict, results: Path, tolerance: float) -> list[str]:
    """Per held-out pair, the paper's findings beside ours: how much full reuse loses and whether it beats the sender
    (test split, paired), how many layers are critical and where (profile split), whether the chosen plan holds on
    the test split, and its measured speed-up against the compute bound L/k."""
    scores = {(r.pair, r.split, r.method): r.per_sample for r in read_results(results)} if results.exists() else {}
    rows = []
    for panel in summary.get("held_out", []):
        by = {e["method"]: e for e in panel["rows"]}
        receiver, reuse, sender, chosen = (by.get(m) for m in ("full_prefill", "full_reuse", "sender", "profile"))
        profile = next((p for p in profiles.get("profiles", []) if p["task"] == panel["task"]
                        and _same_pair(panel["pair"], p["pair"])), None)
        if receiver is None or reuse is None or profile is None:
            continue
        pair, layers = panel["pair"], panel["num_layers"]
        loss = 1 - reuse["quality"] / receiver["quality"] if receiver["quality"] else 0.0
        rows.append([pair, "full KV reuse loses a lot (> 50% of F1 on most pairs)",
                     f"loses {loss:.0%} of the receiver's {receiver['quality']:.3f} (n = {receiver['n']})",
                     "yes" if loss > 0.5 else "it loses less"])
        if sender is not None:
            versus = paired_delta(scores.get((pair, panel["split"], "full_reuse")),
                                  scores.get((pair, panel["split"], "sender")))
            beats = ("–" if versus["significant"] is None else "yes" if versus["significant"] and versus["delta"] > 0
                     else "no: below the sender" if versus["significant"] else "not significant either way")
            rows.append([pair, "full reuse still beats the sender answering alone",
                         f"{reuse['quality']:.3f} vs the sender's {sender['quality']:.3f}"
                         + ("" if versus["delta"] is None else f" ({paired_test_text(versus).split(',')[0]})"),
                         beats])
        critical = profile["critical_layers"] or []
        share = len(critical) / layers
        rows.append([pair, "about 10% of layers are critical (> 10% drop); which ones depends on the pair",
                     f"{len(critical)} of {layers} ({share:.0%})"
                     + (f": {_layer_ranges(critical)}, {_where(critical, layers)}" if critical else ""),
                     "yes" if share <= 0.15 else "more of them"])
        if chosen is not None:
            floor = -tolerance * receiver["quality"]
            holds = meets_target({**chosen, "tolerance": tolerance}, receiver["quality"])
            rows.append([pair, f"the fewest layers within {tolerance:.0%} of the receiver, chosen offline, hold",
                         f"`{chosen['plan']}` ({profile['chosen_layers']} of {layers} layers): Δ {chosen['delta']:+.3f}"
                         f" [{chosen['delta_ci'][0]:+.3f}, {chosen['delta_ci'][1]:+.3f}] on the {panel['split']} "
                         f"split, floor {floor:+.3f}", "yes" if holds else
                         f"not shown: the interval's lower end is below the floor on the {panel['split']} split"])
            if not holds:  # a speed-up is quoted only for a plan that meets its target
                rows.append([pair, "prefill 1.7–3.1× faster (GPU, 7.5K–14K tokens)",
                             f"not quoted: the plan is not shown within its target on the {panel['split']} split",
                             "–"])
            elif chosen.get("speedup") and profile["chosen_layers"]:
                bound = layers / profile["chosen_layers"]
                low, high = chosen.get("speedup_spread") or (chosen["speedup"], chosen["speedup"])
                rows.append([pair, "prefill 1.7–3.1× faster (GPU, 7.5K–14K tokens)",
                             f"{speedup_text(chosen['speedup'], chosen.get('speedup_spread'))} "
                             f"({timing_text(*chosen.get('timed', [None, None]))}, 2-core CPU) of a layer-count "
                             f"bound of {layers}/{profile['chosen_layers']} = {bound:.2f}× (every layer counted as "
                             "equal cost)",
                             _bound_verdict(chosen["speedup"], low, high, bound)])
    return table(["pair", "the paper's finding", "here", "agrees?"], rows) if rows else []


def _transfer_table(profiles: list[Profile], own_task: dict, tolerance: float) -> list[str]:
    """Each pair profiled on a second task: does the plan its own task chose hold there, and how far apart are
    the two frontiers (Fig. 17)?"""
    rows = []
    for own in profiles:
        if own.task != own_task.get(own.receiver):
            continue
        plan = own.choose(tolerance)
        for other in profiles:
            if other.pair != own.pair or other.task == own.task:
                continue
            there = next((p.quality for p in other.points if p.plan == plan), None)
            gap = frontier_difference(own.frontier, other.frontier, own.num_layers,
                                      reference_a=own.reference_quality, reference_b=other.reference_quality)
            rows.append([own.pair, f"{own.task} → {other.task}", f"`{plan}`", f"{other.reference_quality:.3f}",
                         "–" if there is None else f"{there:.3f} ({there / other.reference_quality:.0%})"
                         if other.reference_quality else f"{there:.3f}",
                         f"`{other.choose(tolerance)}`", f"{100 * gap['max']:.1f} / {100 * gap['mean']:.1f}"])
    if not rows:
        return []
    header = ["pair", "profiled on → applied to", f"plan chosen on its own task at {tolerance:.0%}",
              "receiver there", "that plan there (% of receiver)", "plan the second task's own profile chooses",
              "frontier gap, max / mean (points of receiver quality)"]
    return table(header, rows)


def _training_recipes(report: dict) -> dict[str, dict]:
    """Each fine-tune's recipe (the family's variants and its extensions), its seed filled in (the family's unless
    its own), so seed twins can be told apart from other receivers."""
    family_seed = report["recipe"]["seed"]
    recipes = {**report["recipe"]["variants"],
               **{name: e["recipe"] for name, e in report.get("extensions", {}).items()}}
    return {name: {**recipe, "seed": family_seed if recipe.get("seed") is None else recipe["seed"]}
            for name, recipe in recipes.items()}


def _critical_sets_table(profiles: list[Profile], report: dict, own_task: dict) -> list[str]:
    """Whose critical layers: every profile on its receiver's own task beside the related ones (same receiver, same
    sender, seed twins), with how much of their agreement survives resampling the profile questions."""
    own = [p for p in profiles if p.task == own_task.get(p.receiver)]
    rows = []

    def share(value: float) -> str:
        return "– (no critical layer)" if math.isnan(value) else f"{value:.2f}"

    for c in critical_sets.side_by_side(own, _training_recipes(report)):
        differs = "; ".join(f"{_layer_ranges(list(layers))} only for {pair}"
                            for layers, pair in ((c.differs_first, c.first), (c.differs_second, c.second)) if layers)
        rows.append([f"{c.first} / {c.second}", c.relation,
                     _layer_ranges(list(c.critical_first)) or "none", _layer_ranges(list(c.critical_second)) or "none",
                     share(c.jaccard), share(c.jaccard_resampled),
                     f"{share(c.self_agreement[0])} / {share(c.self_agreement[1])}",
                     f"{c.rank_correlation:.2f} [{c.rank_range[0]:.2f}, {c.rank_range[1]:.2f}]",
                     differs or "none", "the same, together" if c.paired else "other, apart"]
                    + ([f"{c.undefined} undefined"] if c.undefined else []))
    if not rows:
        return []
    level = f"{critical_sets.LEVEL:.0%}"
    header = ["profiles (first / second)", "relation", "critical layers, first", "critical layers, second",
              "overlap (Jaccard), all questions", "overlap, independent resamples of each (mean)",
              "each with a resample of itself (mean)", f"rank correlation of per-layer drops [middle {level} of "
              "resamples]", f"critical for one only, in ≥ {level} of resamples", "questions, resampled"]
    return table(header + (["resamples undefined"] if any(len(r) > len(header) for r in rows) else []), rows)


def _share(x: float) -> str:
    """A share as the page shows it, rounded to a whole percent (never "-0%")."""
    return f"{0.0 if round(x, 2) == 0 else x:.0%}"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else "yes" if ok else "**no**"


def _range_verdict(quality: float, low: float, high: float) -> str:
    """Where a receiver's quality falls against the range, at the precision the page prints it: below, in, above."""
    shown = round(quality, 3)
    return "below" if shown < low else "above" if shown > high else "in"


def _criteria_rows(panel: dict) -> tuple[dict, dict, dict] | None:
    """A panel's receiver, sender and full-reuse rows (the first of each, as heldout() takes its receiver); None
    where one is missing."""
    entry: dict[str, dict] = {}
    for e in panel["rows"]:
        if e["method"] in ("full_prefill", "sender", "full_reuse"):
            entry.setdefault(e["method"], e)
    return (entry["full_prefill"], entry["sender"], entry["full_reuse"]) if len(entry) == 3 else None


def _informative_verdicts(receiver: dict, sender: dict, reuse: dict, criteria: dict[str, float]):
    """(receiver in range, sender far enough below, full reuse costly enough, full reuse's loss share): point
    estimates at the precision the page shows them (so a value printed on a threshold meets it); None where a
    number is missing."""
    low, high, gap, least = (criteria[k] for k in ("receiver_min", "receiver_max", "sender_gap", "full_reuse_loss"))
    quality = receiver["quality"]
    far = None if sender["delta"] is None else round(sender["delta"], 3) <= -gap
    loss = None if reuse["delta"] is None or not quality else -reuse["delta"] / quality
    return _range_verdict(quality, low, high) == "in", far, None if loss is None else round(loss, 2) >= least, loss


def _informative_table(held_out: list[dict], criteria: dict[str, float]) -> list[str]:
    """Per held-out panel, whether its pair can test DroidSpeak: the receiver's quality within the criteria's range,
    the sender alone far enough below it, and full reuse losing enough of it. Point estimates decide; a number that
    is missing decides nothing ("–"). ``criteria``: the fields of the page config's ``informative``
    (droidspeak.sweep.config.InformativeCriteria)."""
    low, high, gap, least = (criteria[k] for k in ("receiver_min", "receiver_max", "sender_gap", "full_reuse_loss"))
    rows = []
    for panel in held_out:
        if (found := _criteria_rows(panel)) is None:
            continue
        receiver, sender, reuse = found
        in_range, far, costly, loss = _informative_verdicts(receiver, sender, reuse, criteria)
        verdicts = (in_range, far, costly)
        overall = "no" if False in verdicts else "–" if None in verdicts else "**yes**"
        sender_cell = "–" if far is None else f"{sender['delta']:+.3f}" + (
            f" {interval_text(sender['delta_ci'], signed=True)}" if sender["delta_ci"] else "")
        loss_cell = "–" if loss is None else _share(loss) + (
            f" [{_share(-reuse['delta_ci'][1] / receiver['quality'])}, "
            f"{_share(-reuse['delta_ci'][0] / receiver['quality'])}]" if reuse["delta_ci"] else "")
        rows.append([panel["pair"], f"{panel['task']} ({panel['split']}, {receiver['n']})",
                     f"{receiver['quality']:.3f}" + (f" {interval_text(receiver['ci'])}" if receiver["ci"] else ""),
                     _verdict(in_range), sender_cell, _verdict(far), loss_cell,
                     _verdict(costly), overall])
    header = ["pair", "task (split, questions)", "receiver [95% CI]", f"in {low:.2f}–{high:.2f}?",
              "sender − receiver [paired 95% CI]", f"≥ {gap:.2f} below?",
              "full reuse's loss, share of the receiver [paired 95% CI of Δ ÷ the receiver]",
              f"≥ {least:.0%}?", "informative"]
    return table(header, rows)


def _margins_text(held_out: list[dict], criteria: dict[str, float]) -> str:
    """Which informative pairs' 95% intervals reach past a criterion their point estimate meets: the verdicts are
    the point estimates', and these are the ones other questions could turn."""
    low, high, gap, least = (criteria[k] for k in ("receiver_min", "receiver_max", "sender_gap", "full_reuse_loss"))
    informative, crossings = 0, []
    for panel in held_out:
        if (found := _criteria_rows(panel)) is None:
            continue
        receiver, sender, reuse = found
        if _informative_verdicts(receiver, sender, reuse, criteria)[:3] != (True, True, True):
            continue
        informative += 1
        reach = []
        if receiver["ci"] and round(receiver["ci"][0], 3) < low:
            reach.append(f"the receiver's interval down to {receiver['ci'][0]:.3f} (below {low:.2f})")
        if receiver["ci"] and round(receiver["ci"][1], 3) > high:
            reach.append(f"the receiver's interval up to {receiver['ci'][1]:.3f} (above {high:.2f})")
        if sender["delta_ci"] and round(sender["delta_ci"][1], 3) > -gap:
            reach.append(f"the sender's gap's up to {sender['delta_ci'][1]:+.3f} (short of −{gap:.2f})")
        if reuse["delta_ci"] and round(-reuse["delta_ci"][1] / receiver["quality"], 2) < least:
            reach.append(f"full reuse's loss down to {_share(-reuse['delta_ci'][1] / receiver['quality'])} "
                         f"(under {least:.0%})")
        if reach:
            crossings.append(f"{panel['pair']}: {', '.join(reach)}")
    if not informative:
        return ""
    if not crossings:
        which = {1: "The informative pair meets", 2: "Both informative pairs meet"}.get(
            informative, f"All {informative} informative pairs meet")
        return f"{which} every criterion across {'its' if informative == 1 else 'their'} whole 95% intervals."
    which = f"all {informative}" if len(crossings) == informative else f"{len(crossings)} of the {informative}"
    return (f"Point estimates decide, and {which} informative pairs have a 95% interval reaching past a criterion "
            f"their point estimate meets, so other questions could decide otherwise: {'; '.join(crossings)}.")


def _receiver_name(config_receiver: str, names) -> str:
    """A held-out panel's receiver (a pair config's name, e.g. ``smol-lora-code``) as the family names it: the
    longest family name it ends with."""
    return max((n for n in names if config_receiver.endswith(n)), key=len, default=config_receiver)


def _read_json(path: Path) -> dict:
    """A page's JSON file (summary.json, profiles.json), or {} where the study has not written it."""
    return json.loads(path.read_text()) if path.exists() else {}


def _panel_receiver(panel: dict, own_task: dict) -> str:
    """A held-out or dev panel's receiver, as the family names it."""
    return _receiver_name(panel["pair"].split("<-")[0], own_task)


def _own_task_panels(page: Path, own_task: dict):
    """(receiver, panel) for every held-out and dev panel of a study page that scores its receiver on its own task."""
    summary = _read_json(page / "summary.json")
    for panel in summary.get("held_out", []) + summary.get("dev", []):
        name = _panel_receiver(panel, own_task)
        if panel["task"] == own_task.get(name):
            yield name, panel


def receiver_splits(page_dirs: list[Path], own_task: dict) -> dict[str, dict[str, float]]:
    """Each receiver's quality on its own task, per split it was scored on (held-out and dev panels; the profile
    split from profiles.json), over the given study pages (a study and those it set pairs aside to): where a receiver
    falls against the range can differ from split to split."""
    splits: dict[str, dict[str, float]] = {}
    for page in page_dirs:
        for name, panel in _own_task_panels(page, own_task):
            receiver = next((e for e in panel["rows"] if e["method"] == "full_prefill"), None)
            if receiver is not None:
                splits.setdefault(name, {}).setdefault(panel["split"], receiver["quality"])
        for e in _read_json(page / "profiles.json").get("profiles", []):
            if e["task"] == _own_task(e["pair"], own_task):
                splits.setdefault(e["pair"].split("<-")[0], {}).setdefault("profile", e["receiver"])
    return splits


class ReceiverRange:
    """The page's sentences on where receivers fall against the range, from :func:`receiver_splits`: ``placed``
    (each on a split) and ``disagreements`` (those whose verdict on another split differs)."""

    WORDS = {"below": "below the range", "in": "in range", "above": "above the range"}
    KINDS = {"below": "weak", "above": "saturated"}

    def __init__(self, splits: dict[str, dict[str, float]], held_out_split: str, low: float, high: float):
        self.splits, self.held_out_split, self.low, self.high = splits, held_out_split, low, high

    def _verdict(self, name: str, split: str) -> str:
        return _range_verdict(self.splits[name][split], self.low, self.high)

    def placed(self, names: list[str]) -> str:
        """``names`` on the held-out split: "lora-fieldqa (0.992, above the range: saturated), ..."."""
        split, parts = self.held_out_split, []
        for name in (n for n in names if split in self.splits.get(n, {})):
            verdict = self._verdict(name, split)
            kind = f": {self.KINDS[verdict]}" if verdict in self.KINDS else ""
            parts.append(f"{name} ({self.splits[name][split]:.3f}, {self.WORDS[verdict]}{kind})")
        return _series(parts)

    def disagreements(self) -> str:
        """Every receiver whose verdict on the dev or profile split differs from the held-out split's."""
        parts = []
        for name, by in self.splits.items():
            if self.held_out_split not in by:
                continue
            held = self._verdict(name, self.held_out_split)
            other = [s for s in ("dev", "profile") if s in by and self._verdict(name, s) != held]
            if other:
                elsewhere = _series([f"{self.WORDS[self._verdict(name, s)]} on the {s} split ({by[s]:.3f})"
                                     for s in other])
                parts.append(f"{name} is {self.WORDS[held]} on {self.held_out_split} "
                             f"({by[self.held_out_split]:.3f}), {elsewhere}")
        return "; ".join(parts)

    def tried_only(self) -> str:
        """The receivers scored on the dev split alone (recipes tried and not studied), each with its dev quality."""
        return _series([f"{name} ({by['dev']:.3f} on the dev split, {self.WORDS[self._verdict(name, 'dev')]})"
                        for name, by in self.splits.items() if set(by) == {"dev"}])


CRITERION_MISSES = ("the receiver falls outside the range", "the sender alone comes too close to the receiver",
                    "full reuse loses too little of the receiver's quality")


def never_informative(page_dirs: list[Path], own_task: dict, criteria: dict[str, float]) -> str:
    """A sentence per task on which no pair of the pages is informative on any split it was scored on (dev and
    held-out panels, on the receiver's own task), naming each criterion every one of those panels misses (with the
    largest loss where full reuse never loses enough): what no recipe tried so far could change."""
    by_task: dict[str, dict[tuple[str, str], tuple[dict, tuple]]] = {}  # (pair, split) once: pages share dev panels
    for panel in (panel for page in page_dirs for _, panel in _own_task_panels(page, own_task)):
        if (found := _criteria_rows(panel)) is not None:
            by_task.setdefault(panel["task"], {}).setdefault((panel["pair"], panel["split"]),
                                                             (panel, _informative_verdicts(*found, criteria)))
    sentences = []
    for task, by_panel in by_task.items():
        scored = list(by_panel.values())
        if any(verdicts[:3] == (True, True, True) for _, verdicts in scored):
            continue
        misses = [i for i in range(3) if all(verdicts[i] is False for _, verdicts in scored)]
        why = "in every one, " + _series([CRITERION_MISSES[i] for i in misses]) if misses else \
            "each misses a criterion, no one criterion in all"
        if 2 in misses:
            why += f" (point estimates at most {_share(max(verdicts[3] for _, verdicts in scored))}, under " \
                   f"{criteria['full_reuse_loss']:.0%})"
        splits = _series(sorted({panel["split"] for panel, _ in scored}))
        sentences.append(f"No pair on {task} is informative on any split it was scored on ({splits}; "
                         f"{len(scored)} panels, {len({p['pair'] for p, _ in scored})} pairs): {why}.")
    return " ".join(sentences)


def _series(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _adapters_text(report: dict) -> str:
    """What every fine-tune of the family adapts, from its recipes: kinds, ranks and the modules wrapped."""
    recipes = _training_recipes(report).values()
    kinds = sorted({r["kind"] for r in recipes}, key=("lora", "alora").index)
    ranks = sorted({r["rank"] for r in recipes})
    return (f"{' and '.join({'lora': 'LoRA', 'alora': 'activated LoRA'}[k] for k in kinds)} adapters (rank "
            f"{'/'.join(map(str, ranks))}, on every linear layer of the decoder: {', '.join(LORA_TARGETS)})")


def _held_out_receivers(page: Path, own_task: dict) -> list[str]:
    """The receivers of a study page's held-out panels, in their order."""
    return list(dict.fromkeys(_panel_receiver(panel, own_task)
                              for panel in _read_json(page / "summary.json").get("held_out", [])))


def write_study_page(facts: dict, out_dir: str | Path, *, command: str, template: str | Path,
                     profiles: list[Profile] = (), tolerance: float = 0.05,
                     criteria: dict[str, float] | None = None, companions: list[str | Path] = ()) -> Path:
    """The page: ``template``'s prose (conf/pages/study.md.j2) over the tables of the study's files; ``criteria``: when
    a pair is informative (no such table without it); ``companions``: the pages of related studies (pairs one set
    aside from the other), whose receivers the prose places against the range beside this page's."""
    out = Path(out_dir)
    token_rows = facts["token_rows"]
    summary, profiles_json = out / "summary.json", out / "profiles.json"
    own = [p for p in profiles if p.n_samples]
    summarized, profiled = _read_json(summary), _read_json(profiles_json)
    held_out, dev = summarized.get("held_out", []), summarized.get("dev", [])
    steps = sorted(recipe["steps"] for recipe in _training_recipes(facts["report"]).values())
    others = [Path(c) for c in companions]
    studied = _held_out_receivers(out, facts["own_task"])
    context = {
        "command": command, "tolerance": tolerance, "report": facts["report"], "base": facts["base"],
        "resamples": f"{RESAMPLES:,}", "seeds": len(SEEDS),
        "resampled": sorted({panel.get("resampled", "questions") for panel in held_out}),
        "family_section": "\n".join(_family_section(facts["report"])),
        "token_table": "\n".join(table(["task", "split", "contexts", "questions", "median tokens", "min", "max",
                                         "≥ 2,000"], token_rows)),
        "heldout": "\n".join(heldout_markdown(held_out)) if summary.exists() else None,
        "criteria": criteria,
        "finetune_steps": "–".join(map(str, sorted({steps[0], steps[-1]}))),
        "informative_table": "\n".join(_informative_table(held_out, criteria)) if criteria and held_out else None,
        "informative_margins": _margins_text(held_out, criteria) if criteria else "",
        "dev_table": "\n".join(_informative_table(dev, criteria)) if criteria and dev else None,
        "adapters": _adapters_text(facts["report"]),
        "studied": studied,
        "companion_receivers": [n for c in others for n in _held_out_receivers(c, facts["own_task"])
                                if n not in studied],
        "receiver_range": ReceiverRange(receiver_splits([out, *others], facts["own_task"]),
                                        held_out[0]["split"] if held_out else WIDE_TEST,
                                        criteria["receiver_min"], criteria["receiver_max"]) if criteria else None,
        "never_informative": never_informative([out, *others], facts["own_task"], criteria) if criteria else "",
        "profiles_table": "\n".join(_profile_section(profiled, facts["own_task"])) if profiles_json.exists() else None,
        "transfer_table": "\n".join(_transfer_table(list(profiles), facts["own_task"], tolerance)),
        "critical_sets": {"resamples": f"{critical_sets.CHOICE_RESAMPLES:,}", "level": critical_sets.LEVEL},
        "critical_sets_table": "\n".join(_critical_sets_table(list(profiles), facts["report"], facts["own_task"])),
        "paper_table": "\n".join(_paper_comparison(summarized, profiled, out / "rows" / "results.jsonl", tolerance))
        if summary.exists() and profiles_json.exists() else None,
        "figures": [(stem, caption) for stem, caption in FIGURES if (out / f"{stem}.png").exists()],
        "shortest": min(r[5] for r in token_rows), "longest": max(r[6] for r in token_rows),
        "budget": {"questions": own[0].n_samples, "plans": len(own[0].points) + len(own[0].single_layer),
                   "granularity": own[0].granularity, "rule": own[0].rule().name,
                   "search": own[0].extra.get("search") or {"kind": "exhaustive"}} if own else None,
    }
    path = out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(template, context))
    return path
