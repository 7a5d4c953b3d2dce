"""The result rows a profiling job contributes to the quality-vs-cost figures (6, 14): one per evaluation worth
plotting — the receiver, the sender, full reuse, the frontier, the chosen plan (once more as method "profile", with
the rule that chose it),
CacheBlend and the hybrids. Layer plans off the frontier stay in the profile file only."""

from __future__ import annotations

from droidspeak.profile.profile_file import Profile
from droidspeak.profile.profiler import Evaluation, Profiler
from droidspeak.track.records import ResultRow, new_row
from droidspeak.track.results import point_key


def _method(name: str) -> str:
    if name.startswith("hybrid:"):
        return "hybrid"
    if name.startswith("cacheblend:"):
        return "cacheblend"
    return "recompute" if name.startswith("recompute:") else name


def evaluation_rows(profiler: Profiler, profile: Profile, *, pair: str, split: str, tolerance: float,
                    question_set: str) -> list[ResultRow]:
    """Rows (kind "eval", source "profile") of ``profiler``'s evaluations, keyed so a rerun skips those it has."""
    frontier = {p.plan for p in profile.frontier}
    chosen = profile.choose(tolerance)
    choice = {"tolerance": tolerance, "plan": chosen, **profile.rule().record(profile.questions)}
    baseline = profiler.results["full_prefill"].prefill_seconds
    rows = []
    for key, ev in profiler.results.items():
        if key.endswith(f"@{profiler.sender.fingerprint.name}"):
            method, plan = "sender", "full_prefill"
        else:
            method, plan = _method(key), key
            if method == "recompute" and plan not in frontier and plan != chosen:
                continue
        entries = [(method, plan)] + ([("profile", plan)] if plan == chosen and method != "sender" else [])
        for method_name, plan_name in entries:
            identity = {"pair": pair, "task": profiler.task, "split": split, "method": method_name, "plan": plan_name,
                        "contexts": len(profiler.caches), "zoo": profile.receiver_fingerprint,
                        "sender": profile.sender_fingerprint}
            rows.append(new_row(
                profiler.receiver.model, key=point_key(identity), source="profile", pair=pair, task=profiler.task,
                split=split, method=method_name, plan=plan_name, resolved_plan=plan_name, metric=profile.metric,
                quality=ev.quality, n_samples=len(ev.per_input), per_sample=list(ev.per_input),
                num_layers=profile.num_layers,
                recomputed_fraction=ev.compute_fraction if method_name != "sender" else 1.0,
                prefill_seconds=ev.prefill_seconds, baseline_prefill_seconds=baseline,
                speedup=baseline / ev.prefill_seconds if ev.prefill_seconds > 0 else None,
                eval_seconds=ev.seconds, warnings=profiler.warnings or None, question_set=question_set,
                profile=choice if method_name == "profile" else None,
            ))
    return rows


def heldout_row(profiler: Profiler, profile: Profile, evaluation: Evaluation, *, pair: str, split: str, method: str,
                family: str, question_set: str, identity: dict) -> ResultRow:
    """A row of one plan of ``profile`` scored by ``profiler`` on another split (held out), keyed by ``identity``
    plus what it scored; its speed is left to bench.retime (one timing in a scoring run is noise)."""
    plan = evaluation.name
    key = point_key({"pair": pair, "task": profile.task, "split": split, "method": method, "plan": plan,
                     "family": family, **identity})
    return new_row(
        profiler.receiver.model, key=key, source="profile", pair=pair, task=profile.task, split=split, method=method,
        plan=plan, resolved_plan=plan, metric=profile.metric, quality=evaluation.quality,
        n_samples=len(evaluation.per_input), num_layers=profile.num_layers,
        recomputed_fraction=evaluation.compute_fraction, prefill_seconds=evaluation.prefill_seconds,
        baseline_prefill_seconds=None, speedup=None, eval_seconds=evaluation.seconds, receiver=profile.receiver,
        sender=profile.sender, family=family, per_sample=list(evaluation.per_input), question_set=question_set,
        warnings=profiler.warnings or None,
    )
