"""Prefill benchmark (DroidSpeak Figs. 13 and 20): full vs partial prefill on a Llama-3-8B-shaped model.

    python experiments/bench_prefill.py                 # GPU: contexts 2K/8K/16K, k = 4/8/16 of 32 layers
    python experiments/bench_prefill.py --tiny          # CPU smoke run with a tiny model (what the tests call)

Prints progress, a markdown table, and one JSON line last. Imports only torch, transformers and droidspeak.
"""

from __future__ import annotations

import argparse

from droidspeak.bench import recording
from droidspeak.bench.prefill_speed import PrefillBenchConfig, assemble, markdown, run

TINY = dict(shape="tiny", dtype="float32", device="cpu", contexts=(48, 96), recompute=(2, 4), group_start=2, suffix=8,
            warmup=1, repeats=2, bandwidth_context=96, bandwidth_k=4, bandwidths_gbps=(0.5,))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def configure(args) -> PrefillBenchConfig:
    cfg = PrefillBenchConfig(**TINY) if args.tiny else PrefillBenchConfig()
    for name, value in (("contexts", args.contexts), ("recompute", args.recompute), ("repeats", args.repeats),
                        ("bandwidths_gbps", args.bandwidths), ("bandwidth_context", args.bandwidth_context)):
        if value is not None:
            setattr(cfg, name, value)
    return cfg


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=ints, help="context lengths, e.g. 2048,8192,16384")
    parser.add_argument("--recompute", type=ints, help="numbers of recomputed layers, e.g. 4,8,16")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--bandwidths", type=lambda t: tuple(float(x) for x in t.split(",") if x),
                        help="emulated link rates in GB/s for the TTFT-vs-bandwidth sweep ('' to skip)")
    parser.add_argument("--bandwidth-context", type=int, help="the context length the bandwidth sweep runs at")
    return recording.main("prefill", parser, configure, run, assemble, markdown, argv)


if __name__ == "__main__":
    main()
