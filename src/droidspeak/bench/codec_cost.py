"""What a transfer codec costs and saves on one real context: the exact bytes a plan sends through each codec, the
receiver's time to decode them, and the receiver-side times of the plan (its compute, and the answer path), from
which a link rate gives the TTFT (droidspeak.serve.planner's model).

Same process, one context at a time: the plan's times come from :func:`droidspeak.bench.answer_path.time_plan`
(interleaved with the receiver's own full prefill), the codec's decode time is the median over repeats of decoding
every tensor the plan loads. Encoding is the sender's cost, paid once when it stores the cache: not on the path.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from droidspeak.bench.answer_path import AnswerPathRow
from droidspeak.codec import get_codec
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.plan import parse_plan
from droidspeak.serve.planner import LatencyModel, PlanOption
from droidspeak.transfer import loaded_tensors


@dataclass
class TransferRow:
    pair: str
    task: str
    plan: str
    codec: str
    context_tokens: int
    num_layers: int
    recomputed_layers: int
    e_bytes: int  # as sent through the codec
    kv_bytes: int
    raw_bytes: int  # the same tensors at the cache's own precision
    decode_ms: float  # the receiver decoding all of them
    full_answer_ms: float  # the receiver's own prefill + query + first token
    plan_prefill_ms: float  # the plan's receiver compute over the context (from a lossless cache)
    plan_answer_ms: float  # that + query + first token
    repeats: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def measure_codecs(
    cache: ContextCache, timed: AnswerPathRow, codecs: Sequence[str], *, repeats: int = 3
) -> list[TransferRow]:
    """One row per codec for the plan ``timed`` measured on ``cache``'s context."""
    tensors = [(role, t) for role, _, t in loaded_tensors(cache, parse_plan(timed.plan, cache.num_layers))]
    raw = sum(t.numel() * t.element_size() for _, t in tensors)
    rows = []
    for name in codecs:
        codec = get_codec(name)
        encoded = [(role, codec.encode(t, role)) for role, t in tensors]
        samples = []
        for _ in range(repeats + 1):  # the first decodes warm the allocator
            start = time.perf_counter()
            for role, enc in encoded:
                codec.decode(enc, role)
            samples.append((time.perf_counter() - start) * 1e3)
        rows.append(TransferRow(
            pair=timed.pair, task=timed.task, plan=timed.plan, codec=name, context_tokens=timed.context_tokens,
            num_layers=timed.num_layers, recomputed_layers=timed.recomputed_layers,
            e_bytes=sum(enc.nbytes for role, enc in encoded if role == "e"),
            kv_bytes=sum(enc.nbytes for role, enc in encoded if role != "e"), raw_bytes=raw,
            decode_ms=round(0.0 if codec.lossless else statistics.median(samples[1:]), 3),
            full_answer_ms=timed.full_answer_ms, plan_prefill_ms=timed.plan_prefill_ms,
            plan_answer_ms=timed.plan_answer_ms, repeats=repeats, threads=torch.get_num_threads(),
        ))
    return rows


def latency_model(
    rows: Sequence[dict], qualities: dict[tuple[str, str], float]
) -> tuple[LatencyModel, list[PlanOption]]:
    """One pair's latency model and its options (plan × codec, and the receiver's full prefill) from its rows,
    per request of ``rows[0]['context_tokens']`` tokens; ``qualities[(plan, codec)]`` relative to the receiver."""
    tokens = rows[0]["context_tokens"]
    tail = statistics.median(r["plan_answer_ms"] - r["plan_prefill_ms"] for r in rows) / 1e3
    prefill = {"full_prefill": (0.0, statistics.median(r["full_answer_ms"] for r in rows) / 1e3)}
    options = [PlanOption("full_prefill", 1.0, rows[0]["num_layers"])]
    for row in rows:
        prefill[row["plan"]] = (0.0, row["plan_answer_ms"] / 1e3)
        if (row["plan"], row["codec"]) not in qualities:
            continue
        options.append(PlanOption(
            row["plan"], qualities[(row["plan"], row["codec"])], row["recomputed_layers"],
            e_bytes_per_token=row["e_bytes"] / tokens, kv_bytes_per_token=row["kv_bytes"] / tokens,
            codec=row["codec"], decode_seconds_per_token=row["decode_ms"] / 1e3 / tokens,
        ))
    return LatencyModel(prefill=prefill, suffix=(0.0, tail), options={o.name: o for o in options}), options
