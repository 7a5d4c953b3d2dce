"""Serve a family's receivers for real: Poisson arrivals (or a trace) over one task split's shared contexts, each pair
served with its plan (a profile's choice, resolved and checked against the pair), caches in a bounded LRU tier.
Writes one row per request (droidspeak.serve.loop.ServedRow) and prints a summary.

    python experiments/serve.py                                   # the mini family, 8 requests (seconds)
    python experiments/serve.py zoo=smollm2 workload.task=long_code receivers=[lora-code,base] \\
        'plans=["lora-code<-base=profile:reports/smollm2/rows/profiles/smol-lora-code_from_base/long_code.json"]'
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
from droidspeak.serve.workload import poisson_queries, read_trace, shared_context_queries
from droidspeak.store import MemoryStore
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import device_name
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family
from droidspeak.zoo.tasks import TASKS, score

log = logging.getLogger("serve")


def pair_plans(cfg: DictConfig, models: dict) -> tuple[dict[tuple[str, str], str], dict[str, dict]]:
    """``cfg.plans`` as (receiver, owner) → concrete plan, each pair checked and a profile resolved for it; and each
    resolved profile's record (its path, rule, and, where it was measured on other models or another dtype and
    ``allow_foreign_profile`` lets it apply, the dtype it was measured in)."""
    plans, profiles = {}, {}
    for receiver, owner, plan in map(plan_entry, cfg.plans):
        if receiver not in models:
            raise DroidSpeakError(f"plans: {receiver!r} is not a served receiver ({', '.join(cfg.receivers)})")
        check_pair(models[owner], models[receiver])
        if parse_plan(plan).kind == "profile":
            resolved = resolve_profile_plan(plan, models[receiver].stack.num_layers,
                                            receiver=models[receiver].fingerprint.identity,
                                            sender=models[owner].fingerprint.identity,
                                            allow_foreign=cfg.allow_foreign_profile)
            profiles[f"{receiver}<-{owner}"] = resolved.record() | {"profile_dtype": resolved.measured_dtype}
            plan = format_plan(resolved.plan)
        plans[(receiver, owner)] = plan
    return plans, profiles


def plan_entry(text: str) -> tuple[str, str, str]:
    """``RECEIVER<-OWNER=PLAN`` as its three parts."""
    pair, _, plan = text.partition("=")
    receiver, _, owner = pair.partition("<-")
    if not (receiver and owner and plan):
        raise DroidSpeakError(f"plans: {text!r} is not RECEIVER<-OWNER=PLAN (e.g. lora-code<-base=recompute:5-24)")
    return receiver.strip(), owner.strip(), plan.strip()


def workload_queries(cfg: DictConfig, rows: list[dict]) -> list:
    """The run's queries: a trace file's lines, shared-context sessions (``workload.readers``), or uniform draws;
    ``workload.only``: just those receivers' queries of them, their ids and arrivals kept."""
    only = set(cfg.workload.only)
    strangers = sorted(only - set(cfg.receivers))
    if strangers:
        raise DroidSpeakError(f"workload.only {', '.join(strangers)}: not among the receivers "
                              f"({', '.join(cfg.receivers)})")
    queries = _drawn_queries(cfg, rows)
    return [q for q in queries if not hasattr(q, "receiver") or q.receiver in only] if only else queries  # bad lines
    # stay, to be refused


def _drawn_queries(cfg: DictConfig, rows: list[dict]) -> list:
    work = cfg.workload
    if work.trace:
        if work.readers:
            raise DroidSpeakError("workload.trace and workload.readers both say who asks what: give one")
        return read_trace(work.trace)
    if work.readers:
        strangers = sorted(set(work.readers) - set(cfg.receivers))
        if strangers:
            raise DroidSpeakError(f"workload.readers {', '.join(strangers)}: not among the receivers "
                                  f"({', '.join(cfg.receivers)})")
        return shared_context_queries(rows, list(work.readers), qps=work.qps, count=work.requests, seed=work.seed,
                                      task=work.task, shuffle_readers=work.shuffle_readers)
    return poisson_queries(rows, list(cfg.receivers), qps=work.qps, count=work.requests, seed=work.seed,
                           task=work.task)


def context_owners(server) -> dict[str, str]:
    """Each served model → the first model with its context weights (an aLoRA → its base): whose caches are its own."""
    models = getattr(server, "models", {})
    digests = {name: model.context_model.fingerprint.digest for name, model in models.items()}
    return {name: next(other for other in digests if digests[other] == digest) for name, digest in digests.items()}


def _vllm_dirs(family, name: str, mode: str) -> tuple[str, str | None]:
    """(model directory, adapter directory or None) of a family model, as vLLM loads it: the base and the adapter, or
    (``merged``) the LoRA merged into its base, exported beforehand (build_zoo.py export_merged=[...]: this venv has no
    peft)."""
    args = family.load_args(name)
    if mode != "merged" or args["adapter"] is None:
        return args["path"], args["adapter"]
    return str(family.exported_merged(name)), None


@entry_point("serve")
def main(cfg: DictConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    family = build_family(cfg.zoo, progress=False)
    work = cfg.workload
    if work.task not in family.task_files or work.split not in family.task_files[work.task]:
        raise DroidSpeakError(f"workload.task={work.task} workload.split={work.split}: the family has "
                              f"{', '.join(f'{t}/{s}' for t, f in family.task_files.items() for s in f)}")
    rows = read_rows(family.task_files[work.task][work.split])
    if cfg.engine not in ("droidspeak", "vllm"):
        raise DroidSpeakError(f"engine={cfg.engine}: droidspeak or vllm")
    if cfg.engine == "vllm" and cfg.plans:
        raise DroidSpeakError("engine=vllm shares no cache across models: serve it with plans=[]")
    owners = {owner for _, owner, _ in map(plan_entry, cfg.plans)}
    unknown = sorted({*cfg.receivers, *owners} - set(family.models))
    if unknown:
        raise DroidSpeakError(f"{', '.join(unknown)}: not in the {cfg.zoo.name} family ({', '.join(family.models)})")
    queries = workload_queries(cfg, rows)
    contexts = {r["context_id"]: r["context"] for r in rows}
    scorer = lambda query, answer: score(query.task or work.task, answer, list(query.answers))  # noqa: E731
    max_new_tokens = TASKS[work.task].max_new_tokens
    if cfg.engine == "vllm":
        from droidspeak.serve.vllm_server import VllmServer

        server = VllmServer({name: _vllm_dirs(family, name, cfg.vllm_mode) for name in cfg.receivers}, contexts,
                            max_new_tokens=max_new_tokens, dtype=cfg.dtype, mode=cfg.vllm_mode,
                            kv_cache_gib=max(1, round(cfg.store_mib / 1024)), score=scorer, seed=work.seed)
        plans, profiles = {}, {}
    else:
        models = {name: family.load(name, dtype=cfg.dtype, device=cfg.device) for name in [*cfg.receivers, *owners]}
        plans, profiles = pair_plans(cfg, models)
        server = Server(models, plans, contexts, MemoryStore(pin=False, capacity_bytes=int(cfg.store_mib * 2**20)),
                        max_new_tokens=max_new_tokens, max_batch=cfg.max_batch, score=scorer)
    server.warm_up()
    load = {"system": cfg.system, "qps": None if work.trace else work.qps}
    served = [load | row.record() for row in server.run(queries)]
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in served))
    not_stored = getattr(server, "not_stored", [])
    summary = served_summary(served) | load | {"check": cfg.check, "only": list(work.only)} | {
        "engine": cfg.engine, "vllm_mode": cfg.vllm_mode if cfg.engine == "vllm" else None,
        "receivers": list(cfg.receivers), "task": work.task, "split": work.split,
        "readers": list(work.readers), "shuffle_readers": work.shuffle_readers, "seed": work.seed,
        "plans": {f"{r}<-{o}": p for (r, o), p in plans.items()}, "profiles": profiles,
        "not_stored": len(not_stored),
        "busy_seconds": getattr(server, "busy", None), "dtype": cfg.dtype, "threads": cfg.threads,
        "device": device_name(cfg.device), "max_batch": cfg.max_batch, "store_mib": cfg.store_mib,
        "context_owners": context_owners(server)}
    out.with_suffix(".run.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if getattr(server, "steps", None):  # every step's cost: what a simulator is calibrated on
        out.with_suffix(".steps.jsonl").write_text("".join(json.dumps(step) + "\n" for step in server.steps))
    if not_stored:
        log.warning("%d cache(s) not kept, e.g.: %s", len(not_stored), not_stored[0])
    for row in served:
        if row["error"]:
            log.warning("request %d refused: %s", row["rid"], row["error"])
    log.info("%d requests (%d refused) -> %s", summary["requests"], summary["refused"], out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
