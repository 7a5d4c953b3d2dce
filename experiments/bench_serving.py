"""Serving benchmark (DroidSpeak Figs. 15 and 21): several receivers over shared contexts, Poisson arrivals at
rising QPS, batched prefill + decode; full prefill vs droidspeak vs adaptive plan choice.

    python experiments/bench_serving.py            # GPU: Llama-3-8B shape, 8K contexts, 8 of 32 layers recomputed
    python experiments/bench_serving.py tiny=true  # CPU smoke run with a tiny model (what the tests call)

Step costs are measured on the device with the real model; queueing is simulated over them (see
droidspeak.bench.serving). Prints progress, a markdown table, and one JSON line last.
"""

from __future__ import annotations

from droidspeak.bench import recording
from droidspeak.bench.serving import ServingBenchConfig, assemble, markdown, run

TINY = dict(shape="tiny", dtype="float32", device="cpu", context=48, suffix=8, output_tokens=4, shared_contexts=3,
            options=(("full_prefill", 1.0), ("recompute:2-5", 1.0), ("recompute:2-3", 0.99), ("recompute:2-2", 0.95),
                     ("full_reuse", 0.6)),
            droidspeak_plan="recompute:2-3", batches=(1, 2), max_batch=2, repeats=2, requests=60,
            load_factors=(0.5, 1.0, 2.0, 4.0), bandwidths_gbps=(None, 0.01))


def main(argv: list[str] | None = None) -> dict:
    return recording.main("serving", ServingBenchConfig, TINY, run, assemble, markdown, argv)


if __name__ == "__main__":
    main()
