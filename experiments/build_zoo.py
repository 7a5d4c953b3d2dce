"""Build the embedded model family once (or find it in the cache, or install the shipped reference):

    python experiments/build_zoo.py [zoo=mini]          # cached, else the reference in reference/, else trained
    python experiments/build_zoo.py force=true           # retrain from the recipe; compared with the reference
    python experiments/build_zoo.py export_reference=true  # copy the cached family into reference/ (to commit)
    python experiments/build_zoo.py zoo=smollm2 'export_merged=[lora-code]'  # a LoRA merged, as a plain HF folder

Prints the family's folder and its phenomenon table; the learning curves are in
<family>/learning_curves.jsonl (copied into the Hydra run folder).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.sweep.console import entry_point
from droidspeak.zoo.cards import pair_table
from droidspeak.zoo.family import build_family, export_reference

log = logging.getLogger("build_zoo")


@entry_point("build_zoo")
def main(cfg: DictConfig) -> None:
    family = build_family(cfg.zoo, progress=cfg.progress, force=cfg.force, log=log.info)
    curves = family.root / "learning_curves.jsonl"
    if curves.exists():
        shutil.copy(curves, Path(HydraConfig.get().runtime.output_dir) / "learning_curves.jsonl")
    log.info(
        "family %s at %s (built in %s s)", family.report["name"], family.root, family.report["timings_s"].get("total_s")
    )
    for name in cfg.export_merged:
        log.info("%s merged into its base: %s", name, family.export_merged(name))
    if cfg.export_reference:
        log.info("reference copy (commit it): %s", export_reference(family))
    print(pair_table(family.report["phenomenon"]))
    print(family.root)


if __name__ == "__main__":
    main()
