"""Prefill benchmark (DroidSpeak Figs. 13 and 20): full vs partial prefill on a Llama-3-8B-shaped model.

    python experiments/bench_prefill.py                 # GPU: contexts 2K/8K/16K, k = 4/8/16 of 32 layers
    python experiments/bench_prefill.py tiny=true       # CPU smoke run with a tiny model (what the tests call)

Prints progress, a markdown table, and one JSON line last. Imports only torch, transformers and droidspeak.
"""

from __future__ import annotations

from droidspeak.bench import recording
from droidspeak.bench.prefill_speed import PrefillBenchConfig, assemble, markdown, run

TINY = dict(shape="tiny", dtype="float32", device="cpu", contexts=(48, 96), recompute=(2, 4), group_start=2, suffix=8,
            warmup=1, repeats=2, bandwidth_context=96, bandwidth_k=4, bandwidths_gbps=(0.5,))


def main(argv: list[str] | None = None) -> dict:
    return recording.main("prefill", PrefillBenchConfig, TINY, run, assemble, markdown, argv)


if __name__ == "__main__":
    main()
