"""The profiling job behind ``experiments/profile_pair.py``: config schema, and pair × task → files.

Writes, for one pair on one embedded task's profiling split:
- ``<output_root>/profiles/<pair>/<task>.json`` — the profile (what ``profile:PATH@TOL`` reads);
- ``<output_root>/profiles/<pair>/<task>.comparisons.jsonl`` — the beyond-the-paper comparisons, one row each;
- ``<output_root>/profiles/results.jsonl`` — eval rows (kind "eval") of the baselines, the frontier, the chosen
  plan, CacheBlend and the hybrid, for the quality-vs-cost figures (6, 14); a point already there is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from droidspeak.errors import DroidSpeakError
from droidspeak.loading import load_model
from droidspeak.profile.comparisons import compare_hybrid, compare_multigroup, compare_proxy
from droidspeak.profile.profile_file import ProfileError, comparisons_path, load_profile, save_profile
from droidspeak.profile.profiler import Profiler, profile_pair, select_profile_rows
from droidspeak.profile.proxy import ProxyScorer, get_rule
from droidspeak.sweep.config import safe_name
from droidspeak.sweep.point import ZOO_PREFIX, check_family, resolve_model
from droidspeak.track.records import new_row, question_set_digest
from droidspeak.track.results import append_row, check_code_version, finished_keys, git_sha, point_key, read_rows
from droidspeak.track.version import code_version
from droidspeak.zoo.tasks import TASKS

log = logging.getLogger("profile")




def _load(reference: str, adapter: str | None, family, cfg):
    path, adapter = resolve_model(reference, adapter, family)
    return load_model(path, adapter=adapter, dtype=cfg.dtype, device=cfg.device)


def run_job(cfg, family) -> dict[str, Path]:
    task = cfg.task.name or cfg.pair.task
    if task not in TASKS or family is None or task not in family.task_files:
        raise DroidSpeakError(
            f"profiling runs on the embedded tasks {sorted(TASKS)} of a zoo family; got task {task!r}"
        )
    check_family(cfg.pair, family)
    results = Path(cfg.output_root) / "profiles" / "results.jsonl"
    check_code_version(results, code_version(), cfg.stale)  # before hours of profiling, not after
    out = (
        Path(cfg.output)
        if cfg.output
        else Path(cfg.output_root) / "profiles" / safe_name(cfg.pair.name) / f"{task}.json"
    )
    job = job_identity(cfg, task, family)
    written = {"profile": out, "comparisons": comparisons_path(out), "results": results}
    if not cfg.force and _up_to_date(out, results, job):
        log.info("%s is up to date (the same job, code %s): not profiled again (force=true does)", out, code_version())
        return written
    rows = select_profile_rows(read_rows(family.task_files[task][cfg.split]), cfg.contexts)
    receiver = _load(cfg.pair.receiver, cfg.pair.receiver_adapter, family, cfg)
    sender = _load(cfg.pair.sender, cfg.pair.sender_adapter, family, cfg)
    profiler = Profiler(receiver, sender, task, rows, batch_size=cfg.batch_size, allow_mismatch=cfg.pair.allow_mismatch)
    for warning in profiler.warnings:
        log.warning("%s", warning)
    log.info("%s on %s/%s: %d contexts, %d questions", cfg.pair.name, task, cfg.split, len(profiler.caches), len(rows))
    name = lambda ref: ref[len(ZOO_PREFIX):] if ref.startswith(ZOO_PREFIX) else ref  # noqa: E731
    profile = profile_pair(
        profiler, receiver_name=name(cfg.pair.receiver), sender_name=name(cfg.pair.sender), granularity=cfg.granularity,
        transition_layers=cfg.transition_layers, max_transitions=cfg.max_transitions,
        transition_plans_per_count=cfg.transition_plans_per_count, progress=cfg.progress,
        max_group_layers=cfg.max_group_layers, transitions=cfg.transitions,
    )
    extra_rows: list[dict] = []
    kinds = set(cfg.comparison_kinds) if cfg.comparisons else set()
    if kinds - {"multigroup", "proxy", "hybrid"}:
        raise DroidSpeakError(f"comparison_kinds {sorted(kinds)}: each must be multigroup, proxy or hybrid")
    if kinds:
        started = time.perf_counter()
        if "multigroup" in kinds:
            extra_rows += compare_multigroup(profiler, profile, max_groups=cfg.max_groups)
        if "proxy" in kinds:
            scorer = ProxyScorer(receiver, sender, task, rows, samples=cfg.proxy_samples, batch_size=cfg.batch_size,
                                 allow_mismatch=cfg.pair.allow_mismatch)
            proxy = compare_proxy(profiler, profile, scorer, tolerance=cfg.tolerance, rule=get_rule(cfg.proxy_rule))
            profile.extra["proxy_scores"] = proxy.pop("proxy_scores")
            extra_rows.append(proxy)
        if "hybrid" in kinds:
            extra_rows += compare_hybrid(profiler, profile, cfg.hybrid_fractions)
            for ratio in cfg.cacheblend_ratios:
                profiler.evaluate(f"cacheblend:{ratio:g}")
        profile.timing["comparisons_seconds"] = round(time.perf_counter() - started, 3)
    profile.git_sha, profile.code_version = git_sha(), code_version()
    profile.extra["split"] = cfg.split
    profile.extra["job"] = job
    if profiler.warnings:
        profile.extra["warnings"] = profiler.warnings
    save_profile(out, profile)
    comparisons = comparisons_path(out)
    with comparisons.open("w") as handle:
        for row in extra_rows:
            handle.write(json.dumps({"pair": cfg.pair.name, "task": task, **row}) + "\n")
    questions = question_set_digest(task, cfg.split, len(rows), family.task_version(task, cfg.split))
    _write_eval_rows(results, cfg, profiler, profile, task, questions)
    log.info("profile %s: reference %.3f, full reuse %s, chosen @%.2f: %s", out, profile.reference_quality,
             profile.full_reuse_quality, cfg.tolerance, profile.choose(cfg.tolerance))
    return written


JOB_FIELDS = ("split", "contexts", "granularity", "max_group_layers", "transitions", "tolerance", "transition_layers",
              "max_transitions", "transition_plans_per_count", "max_groups", "proxy_samples", "comparisons",
              "comparison_kinds", "proxy_rule",
              "hybrid_fractions", "cacheblend_ratios", "batch_size", "device", "dtype")


def job_identity(cfg, task: str, family) -> dict:
    """Everything that determines a profile: the pair, task, family and every profiling setting."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    return {"pair": settings["pair"], "task": task, "family": family.root.name, **{k: settings[k] for k in JOB_FIELDS}}


def _up_to_date(out: Path, results: Path, job: dict) -> bool:
    """The profile at ``out`` was made by this job with this code, and its eval rows are in ``results``."""
    try:
        profile = load_profile(out)
    except ProfileError:
        return False  # missing, corrupt or of another schema: profile again
    if profile.code_version != code_version() or profile.extra.get("job") != job:
        return False
    return any(
        row.get("pair") == job["pair"]["name"]
        and row.get("task") == job["task"]
        and row.get("split") == job["split"]
        and row.get("code_version") == profile.code_version
        for row in read_rows(results)
    )


def _method(name: str) -> str:
    if name.startswith("hybrid:"):
        return "hybrid"
    if name.startswith("cacheblend:"):
        return "cacheblend"
    return "recompute" if name.startswith("recompute:") else name


def _write_eval_rows(path: Path, cfg, profiler: Profiler, profile, task: str, questions: str) -> None:
    """Eval rows (the figures' input) for the baselines, frontier, chosen plan, CacheBlend and hybrids."""
    frontier = {p.plan for p in profile.frontier}
    chosen = profile.choose(cfg.tolerance)
    baseline = profiler.results["full_prefill"].prefill_seconds
    done = finished_keys(path)
    for key, ev in profiler.results.items():
        if key.endswith(f"@{profiler.sender.fingerprint.name}"):
            method, plan = "sender", "full_prefill"
        else:
            method, plan = _method(key), key
            if method == "recompute" and plan not in frontier and plan != chosen:
                continue
        entries = [(method, plan)] + ([("profile", plan)] if plan == chosen and method != "sender" else [])
        for method_name, plan_name in entries:
            identity = {
                "pair": cfg.pair.name,
                "task": task,
                "split": cfg.split,
                "method": method_name,
                "plan": plan_name,
                "contexts": len(profiler.caches),
                "zoo": profile.receiver_fingerprint,
                "sender": profile.sender_fingerprint,
            }
            row_key = point_key(identity)
            if row_key in done:
                continue
            append_row(path, new_row(
                profiler.receiver.model, key=row_key, source="profile", pair=cfg.pair.name, task=task,
                split=cfg.split, method=method_name,
                plan=plan_name, resolved_plan=plan_name, metric=profile.metric, quality=ev.quality,
                n_samples=len(ev.per_input), per_sample=list(ev.per_input), num_layers=profile.num_layers,
                recomputed_fraction=ev.compute_fraction if method_name != "sender" else 1.0,
                prefill_seconds=ev.prefill_seconds, baseline_prefill_seconds=baseline,
                speedup=baseline / ev.prefill_seconds if ev.prefill_seconds > 0 else None,
                eval_seconds=ev.seconds, warnings=profiler.warnings or None, question_set=questions,
            ).to_dict())
