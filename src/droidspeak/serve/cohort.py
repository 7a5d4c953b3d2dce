"""Greedy decoding one token at a time over a prefilled batch, so a server can interleave decode steps of several
batches with new prefills and timestamp every token.

``engine.infer.generate`` runs a batch to its end inside transformers' ``generate``; a server needs each step in its
own hands. A :class:`Cohort` is the rows of one receiver prefill: its first step runs every row's query tail over the
context cache (that step's token is the request's first), each later step one token per row. Rows that finished (an
EOS, or their token budget) ride along until the whole cohort is done (a static batch: cheaper to write than
ragged caches, and what a step costs is what it measures). Greedy tokens equal ``generate``'s (tests check).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from droidspeak.engine.batch import PrefilledBatch
from droidspeak.engine.infer import check_finite, check_positions, check_window, eos_ids, roomy_cache, tail_batch
from droidspeak.engine.loading import LoadedModel
from droidspeak.hf_compat import cache_arg


class Cohort:
    """The rows of one prefilled batch, decoded greedily a step at a time (see the module's docstring)."""

    def __init__(self, model: LoadedModel, prefilled: PrefilledBatch, tails: Sequence[torch.Tensor],
                 max_new_tokens: int):
        model.check_tails(tails)
        batch = tail_batch(prefilled, tails)
        check_window(model, prefilled, batch, max_new_tokens)
        check_positions(model, prefilled, batch, max_new_tokens)
        self.model, self.max_new_tokens, self.stop = model, max_new_tokens, eos_ids(model)
        self.cache = roomy_cache(prefilled.cache, batch.input_ids.shape[1] + max_new_tokens)
        self.inputs, self.mask, self.positions = batch.input_ids, batch.attention_mask, batch.position_ids
        self.tokens: list[list[int]] = [[] for _ in tails]
        self.finished = [False] * len(tails)

    @property
    def done(self) -> bool:
        return all(self.finished)

    @torch.inference_mode()
    def step(self) -> list[int]:
        """One forward over every row; returns the rows that got a token (those not finished before it)."""
        out = self.model.model(input_ids=self.inputs, attention_mask=self.mask, position_ids=self.positions,
                               use_cache=True, logits_to_keep=1, **cache_arg(self.cache))
        chosen = check_finite(out.logits[:, -1], f"at generated token {len(self.tokens[0]) + 1}").argmax(-1)
        grew = []
        for row, token in enumerate(chosen.tolist()):
            if self.finished[row]:
                continue
            self.tokens[row].append(token)
            grew.append(row)
            self.finished[row] = token in self.stop or len(self.tokens[row]) >= self.max_new_tokens
        self.inputs = chosen[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.tokens), 1))], dim=-1)
        self.positions = self.positions[:, -1:] + 1
        return grew
