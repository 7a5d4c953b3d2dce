"""Copy a study's per-question rows and profile files beside its page, so the page re-renders with no model run.

    python experiments/keep_rows.py results_dir=outputs/demo rows_dir=reports/rows
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.sweep.console import entry_point
from droidspeak.track.results import keep_rows

log = logging.getLogger("keep_rows")


@entry_point("keep_rows")
def main(cfg: DictConfig) -> None:
    written = keep_rows(cfg.results_dir, cfg.rows_dir)
    log.info("kept %d file(s) of %s in %s", len(written), cfg.results_dir, cfg.rows_dir)


if __name__ == "__main__":
    main()
