"""The profiling job behind ``experiments/profile_pair.py``: config schema, and pair × task → files.

Writes, for one pair on one embedded task's profiling split:
- ``<output_root>/profiles/<pair>/<task>.json`` — the profile (what ``profile:PATH@TOL[@RULE]`` reads);
- ``<output_root>/profiles/<pair>/<task>.comparisons.jsonl`` — the beyond-the-paper comparisons, one row each;
- ``<output_root>/profiles/results.jsonl`` — eval rows (kind "eval") of the baselines, the frontier, the chosen
  plan, CacheBlend and the hybrid, for the quality-vs-cost figures (6, 14); a point already there is skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from droidspeak.atomic import write_text
from droidspeak.engine.loading import load_model
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.choice import ChoiceRule, choice_rule
from droidspeak.profile.coarse_to_fine import SEARCHES, check_rule
from droidspeak.profile.comparisons import COMPARISON_KINDS, run_comparisons
from droidspeak.profile.profile_file import ProfileError, comparisons_path, load_profile, save_profile
from droidspeak.profile.profiler import Profiler, profile_pair, select_profile_rows
from droidspeak.profile.result_rows import evaluation_rows
from droidspeak.sweep.config import safe_name
from droidspeak.sweep.point import ZOO_PREFIX, check_family, resolve_model
from droidspeak.track.records import question_set_digest
from droidspeak.track.results import append_row, check_code_version, git_sha, read_rows
from droidspeak.track.version import code_version
from droidspeak.zoo.tasks import TASKS

log = logging.getLogger("profile")


def run_job(cfg, family) -> dict[str, Path]:
    """Checks and resolves everything first (a typo fails before a model loads), then loads, profiles and writes."""
    task = cfg.task.name or cfg.pair.task
    if task not in TASKS or family is None or task not in family.task_files:
        raise DroidSpeakError(
            f"profiling runs on the embedded tasks {sorted(TASKS)} of a zoo family; got task {task!r}"
        )
    kinds = [k for k in COMPARISON_KINDS if k in cfg.comparison_kinds] if cfg.comparisons else []
    if set(cfg.comparison_kinds) - set(COMPARISON_KINDS):
        raise DroidSpeakError(f"comparison_kinds {sorted(cfg.comparison_kinds)}: each must be one of "
                              f"{', '.join(COMPARISON_KINDS)}")
    rule = choice_rule(cfg.choice_rule)  # an unknown rule fails here, before any model loads
    check_search(cfg.search, cfg.granularity, cfg.coarse_granularity, cfg.max_group_layers, rule)
    check_family(cfg.pair, family)
    receiver_path, receiver_adapter = resolve_model(cfg.pair.receiver, cfg.pair.receiver_adapter, family)
    sender_path, sender_adapter = resolve_model(cfg.pair.sender, cfg.pair.sender_adapter, family)
    results = Path(cfg.output_root) / "profiles" / "results.jsonl"
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
    check_code_version(results, code_version(), cfg.stale)  # before hours of profiling, not after
    rows = select_profile_rows(read_rows(family.task_files[task][cfg.split]), cfg.contexts)
    question_set = question_set_digest(task, cfg.split, len(rows), family.task_version(task, cfg.split))
    receiver = load_model(receiver_path, adapter=receiver_adapter, dtype=cfg.dtype, device=cfg.device)
    sender = load_model(sender_path, adapter=sender_adapter, dtype=cfg.dtype, device=cfg.device)
    profiler = Profiler(receiver, sender, task, rows, batch_size=cfg.batch_size, plans_per_batch=cfg.plans_per_batch,
                        drafts=cfg.drafts, allow_mismatch=cfg.pair.allow_mismatch)
    for warning in profiler.warnings:
        log.warning("%s", warning)
    log.info("%s on %s/%s: %d contexts, %d questions", cfg.pair.name, task, cfg.split, len(profiler.caches), len(rows))
    name = lambda ref: ref[len(ZOO_PREFIX):] if ref.startswith(ZOO_PREFIX) else ref  # noqa: E731
    profile = profile_pair(
        profiler, receiver_name=name(cfg.pair.receiver), sender_name=name(cfg.pair.sender), granularity=cfg.granularity,
        transition_layers=cfg.transition_layers, max_transitions=cfg.max_transitions,
        transition_plans_per_count=cfg.transition_plans_per_count, progress=cfg.progress,
        max_group_layers=cfg.max_group_layers, transitions=cfg.transitions, search=cfg.search,
        coarse_granularity=cfg.coarse_granularity, rule=rule, tolerance=cfg.tolerance,
    )
    profile.choice_rule = rule.name
    comparisons = run_comparisons(
        profiler, profile, kinds, max_groups=cfg.max_groups, proxy_samples=cfg.proxy_samples,
        proxy_rule=cfg.proxy_rule, tolerance=cfg.tolerance, hybrid_fractions=cfg.hybrid_fractions,
        cacheblend_ratios=cfg.cacheblend_ratios, search_repeats=cfg.proxy_search_repeats,
    )
    eval_rows = evaluation_rows(profiler, profile, pair=cfg.pair.name, split=cfg.split, tolerance=cfg.tolerance,
                                question_set=question_set)
    profile.git_sha, profile.code_version = git_sha(), code_version()
    profile.extra.update(split=cfg.split, job=job, **({"warnings": profiler.warnings} if profiler.warnings else {}))
    save_profile(out, profile)
    write_text(comparisons_path(out),
               "".join(json.dumps({"pair": cfg.pair.name, "task": task, **row}) + "\n" for row in comparisons))
    for row in eval_rows:
        append_row(results, row.to_dict())  # a key already there is not written again (a rerun's points)
    log.info("profile %s: reference %.3f, full reuse %s, chosen @%.2f: %s", out, profile.reference_quality,
             profile.full_reuse_quality, cfg.tolerance, profile.choose(cfg.tolerance))
    return written


JOB_FIELDS = ("split", "contexts", "granularity", "search", "coarse_granularity", "max_group_layers", "transitions",
              "tolerance", "transition_layers", "max_transitions", "transition_plans_per_count", "max_groups",
              "proxy_samples", "comparisons", "comparison_kinds", "proxy_rule", "proxy_search_repeats", "choice_rule",
              "hybrid_fractions", "cacheblend_ratios", "batch_size", "plans_per_batch", "drafts", "device", "dtype")


def check_search(search: str, granularity: int, coarse: int | None, max_group_layers: int | None = None,
                 rule: ChoiceRule | None = None) -> None:
    """The group search named, and for coarse_to_fine a coarse alignment that is a larger multiple of the fine one
    (and no cap on a group's length: a short group can sit under a long coarse hull), steered by a ``rule`` that
    judges a plan alone."""
    if search not in SEARCHES:
        raise DroidSpeakError(f"search={search}: one of {', '.join(SEARCHES)}")
    if search == "coarse_to_fine" and max_group_layers is not None:
        raise DroidSpeakError("search=coarse_to_fine scores groups under their coarse hulls, which a cap on a group's "
                              f"length would leave unscored: drop max_group_layers={max_group_layers}")
    if search == "coarse_to_fine" and rule is not None:
        check_rule(rule)
    if search == "coarse_to_fine" and (coarse is None or coarse <= granularity or coarse % granularity):
        raise DroidSpeakError(f"search=coarse_to_fine needs coarse_granularity, a multiple of granularity="
                              f"{granularity} larger than it (got {coarse})")


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
