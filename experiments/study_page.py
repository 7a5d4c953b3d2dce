"""A real-model study's page (reports/<study>/README.md); see droidspeak.figures.study_page.

    python experiments/study_page.py zoo=smollm2 write_facts=true facts=outputs/smollm2/family.json  # family at hand
    python experiments/study_page.py facts=reports/smollm2/rows/family.json out_dir=reports/smollm2    # files only
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.atomic import write_text
from droidspeak.figures.study_page import study_facts, write_study_page
from droidspeak.profile.profile_file import load_profile
from droidspeak.sweep.console import entry_point

log = logging.getLogger("study_page")


@entry_point("study_page")
def main(cfg: DictConfig) -> None:
    if cfg.write_facts:
        from transformers import AutoTokenizer

        from droidspeak.zoo.family import build_family
        from droidspeak.zoo.recipe import BASE

        family = build_family(cfg.zoo, progress=False, log=log.info)
        facts = study_facts(family, AutoTokenizer.from_pretrained(family.models[BASE]))
        Path(cfg.facts).parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(facts, indent=1) + "\n"  # unsorted: the report's order is the page's
        log.info("wrote %s", write_text(cfg.facts, text))
        return
    facts = json.loads(Path(cfg.facts).read_text())
    profiles = [load_profile(p) for pattern in cfg.profiles for p in sorted(glob.glob(pattern))]
    log.info("wrote %s", write_study_page(facts, cfg.out_dir, command=cfg.command, template=cfg.template,
                                          profiles=profiles, tolerance=cfg.tolerance,
                                          criteria=OmegaConf.to_container(cfg.informative),
                                          companions=list(cfg.companions)))


if __name__ == "__main__":
    main()
