"""Profile one pair on one embedded task: sensitivity, every contiguous group, transitions, and the comparisons
beyond the paper (multi-group DP, output-level proxy, layer + token hybrid). See droidspeak.sweep.profile_job.
Named profile_pair.py, not profile.py: a script folder on sys.path would shadow the standard library's `profile`
(which cProfile, and so torch, imports) for every script beside it.

    python experiments/profile_pair.py pair=mdqa_from_base
    python experiments/profile_pair.py pair=mdqa_from_base zoo=mini contexts=2 comparisons=false
    python experiments/evaluate.py pair=mdqa_from_base method=profile \
        method.path=outputs/profiles/ft-mdqa_from_base/mdqa.json method.tolerance=0.05
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers the pair and zoo schemas)
from droidspeak.sweep.console import entry_point
from droidspeak.sweep.profile_job import run_job
from droidspeak.zoo.family import build_family

log = logging.getLogger("profile")


@entry_point("profile")
def main(cfg: DictConfig) -> None:
    family = build_family(cfg.zoo, progress=cfg.progress, log=log.info)
    for kind, path in run_job(cfg, family).items():
        log.info("wrote %s: %s", kind, path)


if __name__ == "__main__":
    main()
