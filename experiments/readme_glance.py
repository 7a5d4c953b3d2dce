"""README's results at a glance, from the committed study pages' summary.json (droidspeak.figures.glance).

    python experiments/readme_glance.py     # rewrites the block between README's two markers
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.glance import glance_block, refresh_readme
from droidspeak.sweep.console import entry_point

log = logging.getLogger("readme_glance")


@entry_point("readme_glance")
def main(cfg: DictConfig) -> None:
    root = Path(hydra.utils.get_original_cwd())
    block = glance_block(list(cfg.studies.items()), root, tolerance=cfg.tolerance)
    log.info("wrote %s", refresh_readme(root / cfg.readme, block))


if __name__ == "__main__":
    main()
