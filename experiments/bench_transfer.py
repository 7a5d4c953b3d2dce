"""Per pair and plan, on each of the first real long contexts of a split: the bytes each transfer codec sends, the
receiver's time to decode them, and the plan's receiver-side times (compute and answer path, against the receiver's
own full prefill).

    python experiments/bench_transfer.py                       # the pairs of make study NAME=smollm2_transfer
    python experiments/bench_transfer.py repeats=1 'codecs=[lossless,int8]'

Appends one JSON line per (pair, context, plan, codec) to ``out`` as it is measured (experiments/transfer_page.py
reads it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.bench.answer_path import time_plan
from droidspeak.bench.codec_cost import measure_codecs
from droidspeak.engine import sender_prefill
from droidspeak.engine.plan import parse_plan
from droidspeak.profile.profiler import select_profile_rows
from droidspeak.sweep.console import entry_point
from droidspeak.sweep.point import ZOO_PREFIX
from droidspeak.track.results import read_rows
from droidspeak.zoo.family import build_family
from droidspeak.zoo.measure import task_questions

log = logging.getLogger("bench_transfer")
PAIRS = Path(__file__).resolve().parent.parent / "conf" / "pair"


@entry_point("bench_transfer")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    family = build_family(cfg.zoo, progress=False, log=log.info)
    out = Path(hydra.utils.to_absolute_path(cfg.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    for name, plans in cfg.pairs.items():
        pair = OmegaConf.load(PAIRS / f"{name}.yaml")
        receiver = family.load(pair.receiver.removeprefix(ZOO_PREFIX))
        sender = family.load(pair.sender.removeprefix(ZOO_PREFIX))
        first: dict[str, dict] = {}  # the first question of each of the first contexts: one answer path each
        for row in select_profile_rows(read_rows(family.task_files[pair.task][cfg.split]), cfg.contexts):
            first.setdefault(row["context_id"], row)
        questions = task_questions(pair.task, list(first.values()), receiver.tokenizer)
        for index, (question, query) in enumerate(zip(questions.rows, questions.suffixes)):
            context = questions.contexts[question["context_id"]]
            for plan in plans:
                timed = time_plan(
                    receiver, sender, context, query, plan, pair=pair.name, task=pair.task, repeats=cfg.repeats
                )
                cache = sender_prefill(sender, [context], e_layers=parse_plan(plan, receiver.stack.num_layers))[0]
                for row in measure_codecs(cache, timed, cfg.codecs, repeats=cfg.repeats):
                    with out.open("a") as handle:
                        handle.write(json.dumps({**row.to_dict(), "context_index": index}) + "\n")
                    log.info("%s %s %s @ %d tokens: %.1f MB sent, decode %.1f ms, plan prefill %.0f ms", pair.name,
                             plan, row.codec, row.context_tokens, (row.e_bytes + row.kv_bytes) / 1e6, row.decode_ms,
                             row.plan_prefill_ms)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
