"""How many questions a choice needs (droidspeak.profile.question_budget), held out: each profile's questions drawn
again at smaller budgets, the plan each choice rule picks from each draw, and only the distinct plans the draws
choose scored on the test split; then the page (droidspeak.figures.question_budget_page).

    python experiments/question_budget.py zoo=default 'profiles=reports/rows/profiles/*/*.json' out_dir=...
    python experiments/question_budget.py page_only=true out_dir=...   # the page again from its files

Writes ``choices.jsonl`` (every draw's plan per rule) and ``heldout.jsonl`` (ResultRow rows: the receiver and each
distinct plan on the test split) in out_dir; ``retime`` then times those rows (timings.jsonl beside them).
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.figures.question_budget_page import CHOICES_FILE, HELDOUT_FILE, write_budget_page
from droidspeak.profile.profile_file import load_profile
from droidspeak.profile.profiler import Profiler
from droidspeak.profile.question_budget import budget_choices, chosen_plans
from droidspeak.profile.result_rows import heldout_row
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import question_set_digest
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family

log = logging.getLogger("question_budget")


@entry_point("question_budget")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.utils.to_absolute_path(cfg.out_dir))
    if not cfg.page_only:
        torch.set_num_threads(cfg.threads)
        family = build_family(cfg.zoo, progress=False, log=log.info)
        paths = sorted(glob.glob(hydra.utils.to_absolute_path(cfg.profiles)))
        profiles = [p for p in map(load_profile, paths) if p.task == family.own_task.get(p.receiver)]
        if not profiles:
            raise SystemExit(f"no profile of a pair on its own task matches {cfg.profiles}")
        choices, heldout = [], []
        for profile in profiles:
            drawn = budget_choices(profile, cfg.budgets, draws=cfg.draws, rules=cfg.rules, tolerance=cfg.tolerance,
                                   seed=cfg.seed)
            rows = read_rows(family.task_files[profile.task][cfg.split])
            profiler = Profiler(family.load(profile.receiver), family.load(profile.sender), profile.task, rows,
                                batch_size=cfg.batch_size)
            questions = question_set_digest(profile.task, cfg.split, len(rows),
                                            family.task_version(profile.task, cfg.split))
            plans = ["full_prefill", *(p for p in chosen_plans(drawn) if p != "full_prefill")]
            for evaluation in profiler.evaluate_many(plans):
                method = "full_prefill" if evaluation.name == "full_prefill" else "question_budget"
                heldout.append(heldout_row(profiler, profile, evaluation, pair=profile.pair, split=cfg.split,
                                           method=method, family=family.root.name, question_set=questions,
                                           identity={"study": "question_budget"}).to_dict())
            choices += [c.to_dict() for c in drawn]
            log.info("%s: %d draws chose %d distinct plans", profile.pair, len(drawn), len(plans) - 1)
        out.mkdir(parents=True, exist_ok=True)
        (out / CHOICES_FILE).write_text("".join(json.dumps(c) + "\n" for c in choices))
        (out / HELDOUT_FILE).write_text("".join(json.dumps(r) + "\n" for r in heldout))
    log.info("wrote %s", write_budget_page(out, tolerance=cfg.tolerance, command=cfg.command,
                                           template=hydra.utils.to_absolute_path(cfg.template)))


if __name__ == "__main__":
    main()
