"""Requests and their Poisson arrivals: several receivers (fine-tunes or adapters of one base) asking over shared
contexts, each context prefilled once by the sender."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    rid: int
    arrival: float  # seconds
    receiver: str
    context_id: int
    context_tokens: int
    suffix_tokens: int
    output_tokens: int  # including the first token, which the prefill produces


def poisson_requests(qps: float, *, count: int, receivers: list[str], contexts: list[int], suffix_tokens: int = 64,
                     output_tokens: int = 16, seed: int = 0) -> list[Request]:
    """``count`` requests with exponential inter-arrival gaps of mean 1/qps; receiver and context drawn uniformly.

    ``contexts`` lists each shared context's token count (its index is the context id)."""
    if qps <= 0 or count <= 0:
        raise ValueError("qps and count must be positive")
    rng = random.Random(seed)
    now, requests = 0.0, []
    for rid in range(count):
        now += rng.expovariate(qps)
        context = rng.randrange(len(contexts))
        requests.append(
            Request(rid, now, rng.choice(receivers), context, contexts[context], suffix_tokens, output_tokens)
        )
    return requests
