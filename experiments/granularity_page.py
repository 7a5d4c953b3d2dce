"""Write reports/smollm2_granularity/ (page, summary.json, figure) from one pair's exhaustive fine-granularity
profile, its study's profile of the same pair and their plans' test-split rows; see droidspeak.figures.granularity_page.

    python experiments/granularity_page.py       # from the files beside the page (regenerates identically)
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.granularity_page import write_granularity_page
from droidspeak.figures.heldout import facts_contexts
from droidspeak.profile.profile_file import load_profile
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import read_results

log = logging.getLogger("granularity_page")


@entry_point("granularity_page")
def main(cfg: DictConfig) -> None:
    path = hydra.utils.to_absolute_path
    page = write_granularity_page(load_profile(path(cfg.profile)), load_profile(path(cfg.study_profile)),
                                  read_results(path(cfg.results)), path(cfg.out_dir),
                                  study_profile=path(cfg.study_profile), coarse=cfg.coarse, tolerance=cfg.tolerance,
                                  tolerances=list(cfg.tolerances), command=cfg.command,
                                  template=path(cfg.template), contexts=facts_contexts(path(cfg.facts)))
    log.info("wrote %s", page)


if __name__ == "__main__":
    main()
