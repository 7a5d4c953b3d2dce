"""Re-time a study's rows without re-scoring them: medians over several contexts and interleaved repeats, with spreads
and the noise floor (droidspeak.bench.retime), appended to timings.jsonl beside the rows as each group is measured.

    python experiments/retime.py zoo=smollm2 results=reports/smollm2/rows/results.jsonl
    python experiments/retime.py zoo=mini results=outputs/demo/results.jsonl contexts=1 repeats=1   # a cheap run

A killed run resumes: groups whose rows are all timed already (with these settings) are skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.bench.retime import retime
from droidspeak.sweep.console import entry_point
from droidspeak.track.records import read_results, read_timings
from droidspeak.track.results import TIMINGS_FILE
from droidspeak.zoo.family import build_family

log = logging.getLogger("retime")


@entry_point("retime")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    results = Path(cfg.results)
    out = Path(cfg.out) if cfg.out else results.parent / TIMINGS_FILE
    done: set[str] = set()
    if out.is_file():  # resume: keep what these settings measured, drop the rest
        settings = (cfg.contexts, cfg.repeats, cfg.warmup)
        kept = [record for _, record in read_timings(out)
                if (record.timed_contexts, record.timed_repeats, record.warmup) == settings]
        out.write_text("".join(json.dumps(record.to_dict(), sort_keys=True) + "\n" for record in kept))
        done = {key for record in kept for key in record.keys}
    rows = read_results(results)
    family = build_family(cfg.zoo, progress=False, log=log.info)
    for record in retime(rows, family, contexts=cfg.contexts, repeats=cfg.repeats, warmup=cfg.warmup,
                         device=cfg.device, done=done, log=log.info):
        with out.open("a") as handle:
            handle.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
