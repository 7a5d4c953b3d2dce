"""The reuse engine: sender prefill, receiver partial prefill, and inference on the mixed cache."""

from droidspeak.engine.infer import continuation_logprobs, generate, tail_logits
from droidspeak.engine.prefill import PrefilledBatch, receiver_prefill, sender_prefill

__all__ = ["PrefilledBatch", "continuation_logprobs", "generate", "receiver_prefill", "sender_prefill", "tail_logits"]
