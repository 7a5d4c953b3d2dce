"""The reuse engine, read bottom-up:

``batch`` (layout, checks, costs) → ``cacheblend`` (token-level recompute) → ``prefill`` (sender prefill, and the
receiver prefill of every plan) → ``infer`` (log-likelihoods and generation on the mixed cache) → ``pipeline``
(E first, reused K/V streamed while the groups recompute) → ``suffix`` (the static, graph-captured query suffix).
Beside them: ``shared_passes`` (many layer plans from the receiver passes they share: profiling's prefill side) and
``verify`` (the load-time probe: driving a model's layers must reproduce its own forward, or it is refused).
"""

from droidspeak.engine.batch import PrefilledBatch
from droidspeak.engine.infer import continuation_logprobs, generate, tail_logits
from droidspeak.engine.prefill import receiver_prefill, sender_prefill

__all__ = ["PrefilledBatch", "continuation_logprobs", "generate", "receiver_prefill", "sender_prefill", "tail_logits"]
