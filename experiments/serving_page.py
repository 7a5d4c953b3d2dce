"""Write a serving study's page (README.md, summary.json, Fig. 15) from the runs kept beside it; see
droidspeak.figures.serving_page.

    python experiments/serving_page.py            # reports/smollm2_serving/ from its rows (regenerates identically)
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.serving_page import write_serving_page
from droidspeak.sweep.console import entry_point

log = logging.getLogger("serving_page")


@entry_point("serving_page")
def main(cfg: DictConfig) -> None:
    written = write_serving_page(cfg.rows_dir, cfg.out_dir, cfg.template, slo_factor=cfg.slo_factor,
                                 reference=cfg.reference_system, command=cfg.command)
    log.info("wrote %s", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
