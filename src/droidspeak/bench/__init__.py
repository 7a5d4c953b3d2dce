"""Benchmarks of speed, each a plain function a thin script in ``experiments/`` calls.

- ``timing`` — warm-up, CUDA events or the host clock, medians; ``shapes`` — random-weight models of a paper shape;
  ``link`` — emulated slower links;
- ``prefill_speed`` — full vs partial vs pipelined prefill (Figs. 13, 20) (serving is executed: droidspeak.serve);
  ``answer_path`` — what a user waits for per chosen plan on a real
  context; ``retime`` — a study's rows timed over several contexts and repeats, after scoring; ``codec_cost`` —
  bytes and decode time of each transfer codec; ``exactness`` — the CUDA exactness checks; ``profile_cost`` — what
  profiling costs per (plan × question), path against path;
- ``recording`` — the shared tail of every benchmark script: record as measured, print the table, one JSON line.
"""

from droidspeak.bench.link import ThrottledTransfer
from droidspeak.bench.shapes import SHAPES, model_config, random_model
from droidspeak.bench.timing import Timing, environment, measure, synchronize

__all__ = [
    "SHAPES",
    "ThrottledTransfer",
    "Timing",
    "environment",
    "measure",
    "model_config",
    "random_model",
    "synchronize",
]
