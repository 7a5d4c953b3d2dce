"""Evaluate one point (pair × task × method) through lm-eval; sweep with -m.

    python experiments/evaluate.py pair=mdqa_from_base method=recompute method.layers=2-3
    python experiments/evaluate.py -m pair=mdqa_from_base,twohop_from_mdqa method=full_prefill,full_reuse

Appends one line to <results_dir>/results.jsonl (the source of truth) and mirrors it to a W&B run. In a -m
sweep each job writes <results_dir>/jobs/<key>.jsonl instead, merged into results.jsonl when the sweep ends
(droidspeak.sweep.callbacks.MergeResults), so jobs on a cluster never share a file. A point already in either is
skipped, so a killed sweep resumes where it stopped — unless rows of another code version are there: then
``stale=refuse`` (default) stops with a message, ``stale=move`` sets them aside and recomputes, ``stale=keep`` keeps
them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from droidspeak.sweep.config import check_values  # (importing it registers the structured config schemas)
from droidspeak.sweep.console import entry_point
from droidspeak.sweep.point import evaluate_point, resume_keys, settle_method, uses_zoo
from droidspeak.track.logger import check_mode, make_logger
from droidspeak.track.results import (
    RESULTS_FILE,
    append_row,
    check_code_version,
    finished_keys,
    write_job_row,
)
from droidspeak.track.version import code_version
from droidspeak.zoo.family import build_family

log = logging.getLogger("evaluate")


def _in_multirun() -> bool:
    """A job of a -m sweep (any launcher): it writes its own file, merged at the sweep's end (MergeResults)."""
    return HydraConfig.get().mode == RunMode.MULTIRUN


@entry_point("evaluate")
def main(cfg: DictConfig) -> None:
    unreachable = settle_method(cfg)  # a method field the method does not read fails before anything runs
    if unreachable:
        log.info("skip %s / %s: %s", cfg.pair.name, cfg.task.name, unreachable)
        return
    check_values(cfg)  # again: the fields method_settings just set
    check_mode(cfg.logger.mode)  # a missing W&B login fails before any compute
    family = build_family(cfg.zoo, progress=cfg.progress, log=log.info) if uses_zoo(cfg) else None
    results = Path(cfg.results_dir) / RESULTS_FILE
    check_code_version(results, code_version(), cfg.stale)
    if set(resume_keys(cfg, family)) & finished_keys(results):
        log.info("skip %s / %s / %s: already in %s", cfg.pair.name, cfg.task.name, cfg.method.plan, results)
        return
    logger = make_logger(
        cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=f"{cfg.pair.name}|{cfg.task.name}|{cfg.method.plan}",
        group=cfg.run_name,
        config=OmegaConf.to_container(cfg, resolve=True),
        directory=cfg.results_dir,
    )
    try:
        row = evaluate_point(cfg, family)
        if _in_multirun():
            write_job_row(results, row.to_dict())
        else:
            append_row(results, row.to_dict())
        logger.log({k: v for k, v in row.to_dict().items() if isinstance(v, (int, float))}
                   | {f"metric/{k}": v for k, v in row.metrics.items()})
        log.info(
            "%s | %s | %s: %s=%.3f, speedup %.2fx", row.pair, row.task, row.plan, row.metric, row.quality, row.speedup
        )
    finally:
        logger.finish()


if __name__ == "__main__":
    main()
