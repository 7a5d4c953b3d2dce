"""What profiling costs per (plan × question), today's path against cheaper ones in one run (droidspeak.bench.
profile_cost), and the page (droidspeak.figures.profile_cost_page).

    python experiments/bench_profile_cost.py                          # lora-code <- base, as conf/ says
    python experiments/bench_profile_cost.py page_only=true           # the page again from profile_cost.jsonl

Writes each (path, round) to ``<out_dir>/profile_cost.jsonl`` as it is measured, then the page.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.bench.profile_cost import ProfilePath, measure
from droidspeak.figures.profile_cost_page import RUNS_FILE, write_cost_page
from droidspeak.profile.candidates import single_group_plans
from droidspeak.profile.profiler import select_profile_rows
from droidspeak.sweep.console import entry_point
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family

log = logging.getLogger("bench_profile_cost")


@entry_point("bench_profile_cost")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.utils.to_absolute_path(cfg.out_dir))
    template = hydra.utils.to_absolute_path(cfg.template)
    if not cfg.page_only:
        paths = [ProfilePath.parse(text) for text in cfg.paths]
        torch.set_num_threads(cfg.threads)
        family = build_family(cfg.zoo, progress=False, log=log.info)
        rows = select_profile_rows(read_rows(family.task_files[cfg.task]["profile"]), cfg.contexts)
        receiver = family.load(cfg.receiver)
        plans = single_group_plans(receiver.stack.num_layers, cfg.granularity)
        del receiver

        def load(dtype: str):
            return family.load(cfg.receiver, dtype=dtype), family.load(cfg.sender, dtype=dtype)

        out.mkdir(parents=True, exist_ok=True)
        runs = out / RUNS_FILE
        runs.write_text("")
        for run in measure(paths, load, pair=f"{cfg.receiver}<-{cfg.sender}", task=cfg.task, rows=rows, plans=plans,
                           rounds=cfg.rounds, batch_size=cfg.batch_size, threads=torch.get_num_threads(),
                           log=log.info):
            with runs.open("a") as handle:
                handle.write(json.dumps(run.to_dict(), sort_keys=True) + "\n")
    log.info("wrote %s", write_cost_page(out, tolerance=cfg.tolerance, command=cfg.command, template=template))


if __name__ == "__main__":
    main()
