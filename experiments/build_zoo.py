"""Build the embedded model family once (or find it in the cache): python experiments/build_zoo.py [zoo=mini].

Prints the family's folder and its phenomenon table; the learning curves are in
<family>/learning_curves.jsonl (copied into the Hydra run folder).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import droidspeak.zoo.recipe  # noqa: F401  (registers the structured config schemas)
from droidspeak.zoo.cards import pair_table
from droidspeak.zoo.family import build_family

log = logging.getLogger("build_zoo")


@hydra.main(config_path="../conf", config_name="build_zoo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    family = build_family(cfg.zoo, progress=cfg.progress, force=cfg.force, log=log.info)
    curves = family.root / "learning_curves.jsonl"
    if curves.exists():
        shutil.copy(curves, Path(HydraConfig.get().runtime.output_dir) / "learning_curves.jsonl")
    log.info("family %s at %s (built in %s s)", family.report["name"], family.root, family.report["timings_s"].get("total_s"))
    print(pair_table(family.report["phenomenon"]))
    print(family.root)


if __name__ == "__main__":
    main()
