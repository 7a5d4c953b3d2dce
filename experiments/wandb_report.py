"""Build the W&B Report of a sweep (see droidspeak.track.wandb_report).

    python experiments/wandb_report.py results=outputs/demo/results.jsonl out_dir=reports          # offline: JSON spec
    python experiments/wandb_report.py results=outputs/demo/results.jsonl logger=wandb_online logger.entity=ME

Offline it writes <out_dir>/wandb_report.json (and the figures it shows) and says how to publish; online it
syncs nothing itself (upload the runs first: wandb sync outputs/<run>/wandb/offline-run-*), saves the report
and prints its URL.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers the logger schema)
from droidspeak.figures.heldout import facts_contexts, heldout, one_held_out_split
from droidspeak.figures.summary import summarize
from droidspeak.sweep.console import entry_point
from droidspeak.track.logger import check_mode
from droidspeak.track.records import read_results
from droidspeak.track.wandb_report import build_report, publish, write_offline

log = logging.getLogger("wandb_report")


@entry_point("wandb_report")
def main(cfg: DictConfig) -> None:
    mode = check_mode(cfg.logger.mode)  # online without a login fails here, before anything is built
    rows = [row.to_dict() for row in read_results(cfg.results)]
    if not rows:
        raise SystemExit(f"no results in {cfg.results}: run experiments/evaluate.py first")
    report = build_report(rows, project=cfg.logger.project, entity=cfg.logger.entity or "", group=cfg.run_name,
                          summary=summarize(one_held_out_split(rows), cfg.tolerance),
                          held_out=heldout(rows, facts_contexts(cfg.facts)))
    if mode == "online":
        print(f"saved the W&B report: {publish(report)}")
        return
    path = write_offline(report, cfg.out_dir, figures_dir=cfg.out_dir)
    print(
        f"wrote the report specification {path}; to publish it, upload the runs (wandb sync "
        f"{cfg.results.rsplit('/', 1)[0]}/wandb/offline-run-*) and rerun with logger=wandb_online logger.entity=<you>"
    )


if __name__ == "__main__":
    main()
