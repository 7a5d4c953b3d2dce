"""ReusePair: the user-facing API — a receiver answering over contexts a sender has already prefilled.

    pair = ReusePair.from_pretrained(receiver="org/code-tune", sender="org/tool-tune", dtype="bfloat16")
    caches = pair.prefill(["<long document>"])                 # sender side, once per context
    answers = pair.generate(caches, ["\\n\\nQ: who wrote it?\\nA:"], plan="recompute:4-11")

Texts are tokenized with the receiver's tokenizer (the pair check guarantees the sender's is identical);
token-id tensors are accepted everywhere instead of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from droidspeak.engine import continuation_logprobs, generate, receiver_prefill, sender_prefill
from droidspeak.engine.batch import PrefilledBatch
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import LoadedModel, load_model
from droidspeak.engine.plan import RecomputePlan, parse_plan
from droidspeak.engine.verify import check_pair
from droidspeak.errors import DroidSpeakError

Tokens = str | Sequence[int] | torch.Tensor


class ReusePair:
    """A checked sender/receiver pair. Every method is batched; caches are validated before use."""

    def __init__(self, sender: LoadedModel, receiver: LoadedModel, *, allow_mismatch: Sequence[str] = ()):
        self.warnings = check_pair(sender, receiver, allow_mismatch)  # the mismatches allowed, for every result
        self.sender, self.receiver = sender, receiver

    @classmethod
    def from_pretrained(
        cls,
        receiver: str,
        sender: str,
        *,
        receiver_adapter: str | None = None,
        sender_adapter: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        allow_mismatch: Sequence[str] = (),
    ) -> "ReusePair":
        common = dict(dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return cls(
            sender=load_model(sender, adapter=sender_adapter, **common),
            receiver=load_model(receiver, adapter=receiver_adapter, **common),
            allow_mismatch=allow_mismatch,
        )

    @property
    def num_layers(self) -> int:
        return self.receiver.stack.num_layers

    def plan(self, plan: str | RecomputePlan) -> RecomputePlan:
        """Parse and range-check a plan against this pair's layer count."""
        return parse_plan(plan, self.num_layers)

    def encode(self, text: Tokens, *, context: bool = False) -> torch.Tensor:
        """Token ids of ``text``; contexts get the tokenizer's special prefix (BOS), suffixes do not."""
        if isinstance(text, (bytes, bytearray)):
            raise DroidSpeakError(
                f"text must be str, not {len(text)} raw bytes: decode it first (e.g. .decode('utf-8'))"
            )
        if not isinstance(text, str):
            return torch.as_tensor(text, dtype=torch.long).reshape(-1).cpu()
        tokenizer = self.receiver.tokenizer
        if tokenizer is None:
            raise DroidSpeakError("this pair has no tokenizer: pass token ids instead of text")
        return torch.tensor(tokenizer(text, add_special_tokens=context)["input_ids"], dtype=torch.long)

    def decode(self, tokens: torch.Tensor) -> str:
        return self.receiver.tokenizer.decode(tokens, skip_special_tokens=True)

    # ---- sender side --------------------------------------------------------------------------------------
    def prefill(
        self, contexts: Iterable[Tokens], *, e_layers: str | Iterable[int] | RecomputePlan = "all", batch_size: int = 8,
        full_sliding: bool = False,
    ) -> list[ContextCache]:
        """The sender's caches for ``contexts`` (E kept at ``e_layers``: 'all', a plan, or layer indices; sliding
        layers cut to their window unless ``full_sliding``, which CacheBlend plans need)."""
        ids = [self.encode(c, context=True) for c in contexts]
        return sender_prefill(self.sender, ids, e_layers=e_layers, batch_size=batch_size, full_sliding=full_sliding)

    # ---- receiver side ------------------------------------------------------------------------------------
    def prepare(
        self, caches: Sequence[ContextCache], plan: str | RecomputePlan, *, contexts: Sequence[Tokens] | None = None
    ) -> PrefilledBatch:
        """Receiver cache over ``caches`` for ``plan``.

        Refuses caches from another sender and, when ``contexts`` are given, caches of other contexts.
        """
        self.check_caches(caches, contexts)
        return receiver_prefill(self.receiver, caches, self.plan(plan))

    def check_caches(self, caches: Sequence[ContextCache], contexts: Sequence[Tokens] | None = None) -> None:
        """Refuse caches computed by another sender, or (given ``contexts``) for other contexts."""
        if contexts is not None and len(contexts) != len(caches):
            raise DroidSpeakError(f"{len(contexts)} contexts for {len(caches)} caches")
        for row, cache in enumerate(caches):
            expected = None if contexts is None else self.encode(contexts[row], context=True)
            cache.check_for(sender=self.sender.fingerprint.digest, token_ids=expected)

    def generate(
        self,
        caches: Sequence[ContextCache],
        suffixes: Sequence[Tokens],
        plan: str | RecomputePlan,
        *,
        contexts: Sequence[Tokens] | None = None,
        **kwargs,
    ) -> list[str] | list[torch.Tensor]:
        """Receiver's answer after each suffix (text in → text out; ids in → ids out). kwargs: see engine.generate."""
        prefilled = self.prepare(caches, plan, contexts=contexts)
        tokens = generate(self.receiver, prefilled, [self.encode(s) for s in suffixes], **kwargs)
        return [self.decode(t) for t in tokens] if all(isinstance(s, str) for s in suffixes) else tokens

    def loglikelihood(
        self,
        caches: Sequence[ContextCache],
        suffixes: Sequence[Tokens],
        continuations: Sequence[Tokens],
        plan: str | RecomputePlan,
        *,
        contexts: Sequence[Tokens] | None = None,
    ) -> list[tuple[float, bool]]:
        """(log P(continuation | context + suffix), is_greedy) per row.

        An empty suffix borrows the context's last token, so the first continuation token is still scored by
        the receiver's own forward (the context cache is cut to its prefix, which is exact).
        """
        self.check_caches(caches, contexts)
        suffix_ids = [self.encode(s) for s in suffixes]
        caches = list(caches)
        for row, (cache, suffix) in enumerate(zip(caches, suffix_ids)):
            if suffix.numel() == 0:
                if cache.num_tokens < 2:
                    raise DroidSpeakError("an empty suffix needs a context of at least two tokens")
                caches[row], suffix_ids[row] = cache.prefix(cache.num_tokens - 1), cache.token_ids[-1:]
        prefilled = self.prepare(caches, plan)
        return continuation_logprobs(self.receiver, prefilled, suffix_ids, [self.encode(c) for c in continuations])
