"""Serve a family's receivers for real: Poisson arrivals (or a trace) over one task split's shared contexts, each pair
served with its plan (a profile's choice, resolved and checked against the pair), caches in a bounded LRU tier.
Writes one row per request (droidspeak.serve.server.ServedRow) and prints a summary.

    python experiments/serve.py                                   # the mini family, 8 requests (seconds)
    python experiments/serve.py zoo=smollm2 task=long_code receivers=[lora-code,base] \\
        'plans={lora-code<-base: "profile:reports/smollm2/rows/profiles/smol-lora-code_from_base/long_code.json"}'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.engine.plan import format_plan, parse_plan
from droidspeak.engine.verify import check_pair
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.profile_file import resolve_profile_plan
from droidspeak.serve.latency import served_summary
from droidspeak.serve.server import Server
from droidspeak.serve.workload import poisson_queries, read_trace
from droidspeak.store import MemoryStore
from droidspeak.sweep.console import entry_point
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family
from droidspeak.zoo.tasks import TASKS, score

log = logging.getLogger("serve")


def pair_plans(cfg: DictConfig, models: dict) -> dict[tuple[str, str], str]:
    """``cfg.plans`` as (receiver, owner) → concrete plan: each pair checked, a profile resolved for it."""
    plans = {}
    for name, plan in cfg.plans.items():
        receiver, _, owner = name.partition("<-")
        if receiver not in models or owner not in models:
            raise DroidSpeakError(f"plans.{name}: 'receiver<-owner', both among the served models "
                                  f"({', '.join(models)})")
        check_pair(models[owner], models[receiver])
        if parse_plan(plan).kind == "profile":
            plan = format_plan(resolve_profile_plan(plan, models[receiver].stack.num_layers,
                                                    receiver=models[receiver].fingerprint.identity,
                                                    sender=models[owner].fingerprint.identity).plan)
        plans[(receiver, owner)] = plan
    return plans


@entry_point("serve")
def main(cfg: DictConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    family = build_family(cfg.zoo, progress=False)
    if cfg.task not in family.task_files or cfg.split not in family.task_files[cfg.task]:
        raise DroidSpeakError(f"task={cfg.task} split={cfg.split}: the family has "
                              f"{', '.join(f'{t}/{s}' for t, f in family.task_files.items() for s in f)}")
    rows = read_rows(family.task_files[cfg.task][cfg.split])
    owners = {name.partition("<-")[2] for name in cfg.plans}
    models = {name: family.load(name, dtype=cfg.dtype, device=cfg.device) for name in [*cfg.receivers, *owners]}
    plans = pair_plans(cfg, models)
    queries = (read_trace(cfg.trace) if cfg.trace else
               poisson_queries(rows, list(cfg.receivers), qps=cfg.qps, count=cfg.requests, seed=cfg.seed,
                               task=cfg.task))
    server = Server(models, plans, {r["context_id"]: r["context"] for r in rows},
                    MemoryStore(pin=False, capacity_bytes=int(cfg.store_mib * 2**20)),
                    max_new_tokens=TASKS[cfg.task].max_new_tokens, max_batch=cfg.max_batch,
                    score=lambda query, answer: score(query.task or cfg.task, answer, list(query.answers)))
    served = [row.record() for row in server.run(queries)]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in served))
    summary = served_summary(served) | {"plans": {f"{r}<-{o}": p for (r, o), p in plans.items()},
                                        "not_stored": server.not_stored}
    for row in served:
        if row["error"]:
            log.warning("request %d refused: %s", row["rid"], row["error"])
    log.info("%d requests (%d refused) -> %s", summary["requests"], summary["refused"], out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
