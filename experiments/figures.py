"""Rebuild reports/ from the results JSONL alone: figures (PNG + PDF), summary.md, summary.json; with profiles,
also profiles.md and profiles.json (profiling and beyond-the-paper tables).

    python experiments/figures.py results=outputs/demo/results.jsonl out_dir=reports

Also logs, per (pair, task), a W&B Table with scatter plots of quality vs speedup and vs recomputed fraction.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter, defaultdict
from pathlib import Path

import hydra
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers the logger schema)
from droidspeak.figures import (
    FigureDataError,
    plot_input_spread,
    plot_layer_sensitivity,
    plot_profile_pareto,
    plot_profile_transfer,
    plot_quality_bars,
    plot_quality_vs_cost,
    plot_transitions,
)
from droidspeak.figures.heldout import heldout
from droidspeak.figures.profiles_summary import profiles_summary, write_profiles_summary
from droidspeak.figures.summary import summarize, write_summary
from droidspeak.track.logger import check_mode, make_logger
from droidspeak.track.records import read_results

log = logging.getLogger("figures")
PARETO_COLUMNS = ["plan", "method", "recomputed_layers", "recomputed_fraction", "speedup", "quality"]


def eval_figures(rows, out_dir: Path) -> list[Path]:
    written = []
    for name, draw in (
        ("quality bars", lambda: plot_quality_bars(rows, out_dir)),
        ("quality vs speedup", lambda: plot_quality_vs_cost(rows, out_dir, x="speedup", stem="fig14_quality_vs_speedup")),
        ("quality vs recomputed fraction", lambda: plot_quality_vs_cost(rows, out_dir, x="recomputed_fraction", stem="fig14_quality_vs_fraction")),
        ("quality vs prefill time", lambda: plot_quality_vs_cost(rows, out_dir, x="prefill_seconds")),
    ):
        try:
            written += draw()
        except FigureDataError as err:
            log.warning("skipped %s: %s", name, err)
    return written


def test_split(rows: list[dict]) -> list[dict]:
    """The rows the figures and the in-sample table show: the test split's, where a sweep also scored plans on the
    profile split (to choose among them there; the held-out table reads those)."""
    tested = [row for row in rows if row.get("split", "test") != "profile"]
    return tested or rows


def profile_files(entries) -> list[str]:
    """Profile paths, each entry a file or a glob pattern (``outputs/demo/profiles/*/*.json``), sorted per pattern."""
    files = []
    for entry in entries:
        matches = sorted(glob.glob(entry)) if any(c in entry for c in "*?[") else [entry]
        if not matches:
            raise SystemExit(f"no profile file matches {entry!r}: run experiments/profile_pair.py first")
        files += matches
    return files


def profile_figures(profiles: list[str], out_dir: Path, tolerance: float) -> list[Path]:
    if not profiles:
        return []
    written = []
    for name, draw in (
        ("layer sensitivity", lambda: plot_layer_sensitivity(profiles, out_dir)),
        ("input spread", lambda: plot_input_spread(profiles, out_dir)),
        ("transitions", lambda: plot_transitions(profiles, out_dir)),
        ("profiling Pareto", lambda: plot_profile_pareto(profiles, out_dir, tolerance=tolerance)),
        ("profile transfer", lambda: plot_profile_transfer(profiles, out_dir)),
    ):
        try:
            written += draw()
        except FigureDataError as err:
            log.warning("skipped %s: %s", name, err)
    return written


@hydra.main(config_path="../conf", config_name="figures", version_base="1.3")
def main(cfg: DictConfig) -> None:
    check_mode(cfg.logger.mode)
    rows = [row.to_dict() for row in read_results(cfg.results)]
    if not rows:
        raise SystemExit(f"no results in {cfg.results}: run experiments/evaluate.py first")
    out_dir = Path(cfg.out_dir)
    profiles = profile_files(cfg.profiles)
    shown = test_split(rows)
    written = eval_figures(shown, out_dir) + profile_figures(profiles, out_dir, cfg.tolerance)
    summary = summarize(shown, cfg.tolerance)
    versions = Counter(str(row.get("code_version")) for row in rows)
    written += write_summary(summary, out_dir, source=f"`{cfg.results}`", held_out=heldout(rows), code_versions=versions)
    if profiles:
        source = ", ".join(f"`{p}`" for p in profiles)
        written += write_profiles_summary(profiles_summary(profiles, cfg.tolerance), out_dir, source=source)
    logger = make_logger(cfg.logger.mode, project=cfg.logger.project, entity=cfg.logger.entity, name=f"{cfg.run_name}-pareto",
                         group=cfg.run_name, config={"results": cfg.results, "run_name": cfg.run_name, "job": "figures"}, directory=Path(cfg.results).parent, job_type="report")
    try:
        panels = defaultdict(list)
        for row in shown:
            if row.get("kind") == "eval":
                panels[(row["pair"], row["task"])].append([row.get(c) for c in PARETO_COLUMNS])
        for (pair, task), table_rows in panels.items():
            key = f"pareto/{pair}/{task}"
            table = logger.table(key, PARETO_COLUMNS, table_rows)
            logger.scatter(f"{key}/quality_vs_speedup", table, "speedup", "quality", f"{pair} on {task}: quality vs speedup")
            logger.scatter(f"{key}/quality_vs_fraction", table, "recomputed_fraction", "quality", f"{pair} on {task}: quality vs recomputed fraction")
        for path in written:
            if path.suffix == ".png":
                logger.image(f"figures/{path.stem}", path)
    finally:
        logger.finish()
    for path in written:
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
