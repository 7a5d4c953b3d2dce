"""The campaign: bad inputs, kills, concurrent writers and the memory bound, seeded and bounded in time.

``run_campaign`` returns one tallies document (what ``report.markdown`` renders as ``reports/robustness.md``);
every trial's expected and observed outcome is in it. Kill trials stop early when ``budget_minutes`` is spent,
and the report says how many ran.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from droidspeak.robustness.bad_inputs import Bench, try_all
from droidspeak.robustness.memory_bound import memory_trial
from droidspeak.robustness.trials import (
    KILL_MODES,
    Sweep,
    cache_folder,
    kill_trial,
    reference_rows,
    writers_trial,
)

log = logging.getLogger("robustness")




def campaign_sweep(cfg, script: Path, env: dict, layers: list[str] | None = None) -> Sweep:
    return Sweep(script, (f"zoo={cfg.zoo.name}", f"pair={cfg.pair}", "method=recompute",
                          f"method.layers={','.join(layers or cfg.layers)}", f"task.limit={cfg.limit}",
                          "timing.repeats=1", "timing.contexts=1", "logger=wandb_offline", "progress=false"), env)


def run_campaign(cfg, family, script: Path, env: dict) -> dict:
    started = time.perf_counter()
    work = Path(cfg.work_dir).resolve() / "trials"  # absolute: each sweep runs in its own folder; beside: the tallies
    shutil.rmtree(work, ignore_errors=True)
    rng = random.Random(cfg.seed)

    log.info("bad inputs ...")
    inputs = try_all(Bench(family, work / "bad-inputs", receiver=cfg.receiver, sender=cfg.sender))

    sweep = campaign_sweep(cfg, script, env)
    log.info("clean reference sweep ...")
    reference, clean_seconds = reference_rows(sweep, work / "clean")
    counts = {"cache_write": len(list(cache_folder(work / "clean").glob("*.safetensors"))),
              "result_append": len(reference), "job_row": len(reference), "wandb_write": len(reference)}
    kills, trial = [], 0
    while sum(k.killed for k in kills) < cfg.kill_trials and trial < 2 * cfg.kill_trials:  # a sweep that finished
        if time.perf_counter() - started > 60 * cfg.budget_minutes:                      # first is no kill
            log.warning("time budget spent: %d of %d kills", sum(k.killed for k in kills), cfg.kill_trials)
            break
        mode = KILL_MODES[trial % len(KILL_MODES)]
        kills.append(kill_trial(sweep, work / f"kill-{trial:02d}", trial, mode, rng, reference=reference,
                                clean_seconds=clean_seconds, counts=counts))
        log.info("kill trial %d (%s): %s", trial, kills[-1].fault or mode, "ok" if kills[-1].ok else "FAILED")
        trial += 1

    log.info("%d concurrent writers ...", cfg.writers)
    orders = [cfg.layers[i % len(cfg.layers):] + cfg.layers[: i % len(cfg.layers)] for i in range(cfg.writers)]
    writers = writers_trial([campaign_sweep(cfg, script, env, order) for order in orders], work / "writers", reference)

    log.info("memory bound ...")
    memory = memory_trial(family, receiver=cfg.receiver, sender=cfg.sender, limit=cfg.memory_limit)
    return {
        "config": {"zoo": cfg.zoo.name, "seed": cfg.seed, "pair": cfg.pair, "points": len(reference),
                   "questions_per_point": cfg.limit, "kill_trials_asked": cfg.kill_trials, "writers": cfg.writers,
                   "budget_minutes": cfg.budget_minutes},
        "clean_sweep_seconds": round(clean_seconds, 1),
        "bad_inputs": [asdict(o) | {"ok": o.ok} for o in inputs],
        "kills": [k.to_dict() for k in kills],
        "writers": writers.to_dict(),
        "memory": memory.to_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }
