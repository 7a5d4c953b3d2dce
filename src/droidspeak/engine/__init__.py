"""The reuse engine and the model it runs on, read bottom-up:

``arch`` (drive a decoder one layer at a time) → ``plan`` (recompute plans), ``cache`` (a context's K/V and E) →
``loading`` (load, fingerprint and check a pair) → ``batch`` (layout, checks, costs) → ``cacheblend`` (token-level
recompute) → ``prefill`` (sender prefill, and the receiver prefill of every plan) → ``infer`` (log-likelihoods and
generation on the mixed cache) → ``answers`` (greedy answers to tokenized questions, a context prefilled once for
all its questions) → ``pipeline`` (E first, reused K/V streamed while the groups recompute) → ``suffix`` (the static,
graph-captured query suffix). Beside them: ``shared_passes`` (many layer plans from the receiver passes they share:
profiling's prefill side) and ``verify`` (the load-time probe: driving a model's layers must reproduce its own
forward, or it is refused).

Importing the package is light (``plan`` alone needs no torch); the names below load on first use.
"""

__all__ = ["PrefilledBatch", "continuation_logprobs", "generate", "receiver_prefill", "sender_prefill", "tail_logits"]

_HOMES = {
    "PrefilledBatch": "droidspeak.engine.batch",
    "continuation_logprobs": "droidspeak.engine.infer",
    "generate": "droidspeak.engine.infer",
    "tail_logits": "droidspeak.engine.infer",
    "receiver_prefill": "droidspeak.engine.prefill",
    "sender_prefill": "droidspeak.engine.prefill",
}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'droidspeak.engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
