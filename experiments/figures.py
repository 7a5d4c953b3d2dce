"""Rebuild reports/ from the results JSONL alone: figures (PNG + PDF), summary.md, summary.json; with profiles,
also profiles.md and profiles.json (profiling and beyond-the-paper tables).

    python experiments/figures.py results=outputs/demo/results.jsonl out_dir=reports

Also logs, per (pair, task), a W&B Table with scatter plots of quality vs speedup and vs recomputed fraction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers the logger schema)
from droidspeak.figures.render import render_pages
from droidspeak.sweep.console import entry_point
from droidspeak.track.logger import check_mode, make_logger

log = logging.getLogger("figures")
PARETO_COLUMNS = ["plan", "method", "recomputed_layers", "recomputed_fraction", "speedup", "quality"]


@entry_point("figures")
def main(cfg: DictConfig) -> None:
    check_mode(cfg.logger.mode)
    shown, written = render_pages(cfg.results, cfg.profiles, cfg.out_dir, tolerance=cfg.tolerance, facts=cfg.facts)
    logger = make_logger(
        cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=f"{cfg.run_name}-pareto",
        group=cfg.run_name,
        config={"results": cfg.results, "run_name": cfg.run_name, "job": "figures"},
        directory=Path(cfg.wandb_dir),
        job_type="report",
    )
    try:
        panels = defaultdict(list)
        for row in shown:
            if row.get("kind") == "eval":
                panels[(row["pair"], row["task"])].append([row.get(c) for c in PARETO_COLUMNS])
        for (pair, task), table_rows in panels.items():
            key = f"pareto/{pair}/{task}"
            table = logger.table(key, PARETO_COLUMNS, table_rows)
            logger.scatter(
                f"{key}/quality_vs_speedup", table, "speedup", "quality", f"{pair} on {task}: quality vs speedup"
            )
            logger.scatter(
                f"{key}/quality_vs_fraction",
                table,
                "recomputed_fraction",
                "quality",
                f"{pair} on {task}: quality vs recomputed fraction",
            )
        for path in written:
            if path.suffix == ".png":
                logger.image(f"figures/{path.stem}", path)
    finally:
        logger.finish()
    for path in written:
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
