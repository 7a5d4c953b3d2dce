"""Time each profiled pair's chosen plan (and its frontier's best partial plan) on real long contexts: receiver
prefill and the whole answer path (prefill + query + first token) vs the receiver's own full prefill, same process,
interleaved.

    python experiments/bench_answer_path.py                                   # the SmolLM2 study's profiles
    python experiments/bench_answer_path.py zoo=mini 'profiles=[out/profiles/*/*.json]' contexts=1 repeats=1

Appends one JSON line per (pair, context) to ``<out>.jsonl`` as it is measured and writes ``<out>.md``.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.bench.answer_path import markdown, time_plan
from droidspeak.profile.profile_file import load_profile
from droidspeak.profile.profiler import select_profile_rows
from droidspeak.sweep.console import entry_point
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family
from droidspeak.zoo.measure import task_questions

log = logging.getLogger("bench_answer_path")


@entry_point("bench_answer_path")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    family = build_family(cfg.zoo, progress=False, log=log.info)
    paths = sorted(p for pattern in cfg.profiles for p in glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no profile matches {list(cfg.profiles)}: run experiments/profile_pair.py first")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = out.with_suffix(".jsonl")
    results.unlink(missing_ok=True)
    rows = []
    for path in paths:
        profile = load_profile(path)
        if profile.task != family.own_task.get(profile.receiver):
            continue  # a profile transferred to another task: its plan is timed with the pair's own profile
        plans = [profile.choose(cfg.tolerance)]
        groups = [p for p in profile.frontier if p.plan.startswith("recompute:")]
        if groups:  # the frontier's best partial plan too, when the chosen one is an extreme
            plans.append(max(groups, key=lambda p: p.quality).plan)
        receiver, sender = family.load(profile.receiver), family.load(profile.sender)
        task_rows = read_rows(family.task_files[profile.task][cfg.split])
        first: dict[str, dict] = {}  # the first question of each of the first contexts: one answer path each
        for row in select_profile_rows(task_rows, cfg.contexts):
            first.setdefault(row["context_id"], row)
        questions = task_questions(profile.task, list(first.values()), receiver.tokenizer)
        for plan in dict.fromkeys(plans):
            for row, query in zip(questions.rows, questions.suffixes):
                timed = time_plan(receiver, sender, questions.contexts[row["context_id"]], query, plan,
                                  pair=profile.pair, task=profile.task, repeats=cfg.repeats)
                rows.append(timed.to_dict())
                with results.open("a") as handle:
                    handle.write(json.dumps(timed.to_dict()) + "\n")
                log.info("%s %s @ %d tokens: prefill %.2fx, answer path %.2fx (limit %s)", profile.pair, plan,
                         timed.context_tokens, timed.prefill_speedup, timed.answer_speedup, timed.compute_limit)
    header = (f"# Speed on this machine: chosen plans vs the receiver's own full prefill\n\nRebuilt by "
              f"`experiments/bench_answer_path.py` ({torch.get_num_threads()} torch threads, CPU, float32, batch 1, "
              f"median of {cfg.repeats} interleaved repeats per context, {cfg.split} split). *Answer path* = context "
              f"prefill + query + first token. *Compute-only limit* = layers / recomputed layers.\n\n")
    out.with_suffix(".md").write_text(header + markdown(rows))
    log.info("wrote %s and %s", results, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
