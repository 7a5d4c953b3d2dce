"""Write a study's page (reports/<study>/README.md) from the files the study wrote; see droidspeak.figures.study_page.

    python experiments/study_page.py zoo=smollm2 out_dir=reports/smollm2
"""

from __future__ import annotations

import glob
import logging

import hydra
from omegaconf import DictConfig
from transformers import AutoTokenizer

import droidspeak.zoo.recipe  # noqa: F401  (registers the zoo schema)
from droidspeak.figures.study_page import write_study_page
from droidspeak.profile.profile_file import load_profile
from droidspeak.zoo.family import build_family
from droidspeak.zoo.recipe import BASE

log = logging.getLogger("study_page")


@hydra.main(config_path="../conf", config_name="study_page", version_base="1.3")
def main(cfg: DictConfig) -> None:
    family = build_family(cfg.zoo, progress=False, log=log.info)
    tokenizer = AutoTokenizer.from_pretrained(family.models[BASE])
    profiles = [load_profile(p) for pattern in cfg.profiles for p in sorted(glob.glob(pattern))]
    log.info("wrote %s", write_study_page(family, cfg.out_dir, tokenizer, command=cfg.command, profiles=profiles,
                                          tolerance=cfg.tolerance))


if __name__ == "__main__":
    main()
