"""Batch layout and checks: the bottom of the engine, shared by every prefill path.

Contexts are right-padded: every real token keeps position = index, so a cache sliced back to its own length is the
cache an unbatched prefill would have produced. A source is anything that states a sender cache's shape facts
(``ContextCache``, a store's ``CacheInfo``, the pipeline's ``Source``); :func:`check_fits` is the one check of a
source against a receiver and a plan. A sliding layer's source may hold only its last window (``held_from``); in
a batch its K/V sit at their own positions, the earlier slots zero, which no later query's window reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from droidspeak.engine.arch import kv_shape
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import PrefillCost, RecomputePlan, prefill_cost
from droidspeak.errors import CacheMismatchError, DroidSpeakError


@dataclass
class PrefilledBatch:
    """A receiver-ready batch: a standard transformers cache over right-padded contexts, and its cost."""

    cache: DynamicCache
    token_ids: torch.Tensor  # [B, T] right-padded context ids
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens
    cost: PrefillCost

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(-1)


def context_cache(data: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]] = ()) -> DynamicCache:
    """A transformers cache for a context batch: one plain layer per decoder layer, sliding-window layers included.

    Such a layer keeps every position where the model's own cache would keep only its last window, but the
    sliding-window mask (built from the config, not from the cache) keeps every query inside its window, so the
    logits are the same; and unlike a sliding layer it can hold a context longer than the window in a right-padded
    batch and be rewound after a tail. ``(None, None)`` leaves a layer empty, to be filled by a pass.
    """
    return DynamicCache(ddp_cache_data=list(data))


def as_ids(tokens: Sequence[int] | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A context's token ids as a flat CPU int64 tensor, refused when empty or out of the vocabulary."""
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).cpu()
    if ids.numel() == 0:
        raise DroidSpeakError("a context must hold at least one token")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise DroidSpeakError(f"token ids must lie in [0, {vocab_size}); got {int(ids.min())}..{int(ids.max())}")
    return ids


def right_pad(rows: Sequence[torch.Tensor], dim: int = 0, value: float = 0) -> torch.Tensor:
    """Stack tensors of different lengths along ``dim`` (the token axis), padding at the end."""
    longest = max(r.shape[dim] for r in rows)
    padded = []
    for row in rows:
        missing = longest - row.shape[dim]
        if missing:
            shape = list(row.shape)
            shape[dim] = missing
            row = torch.cat([row, row.new_full(shape, value)], dim=dim)
        padded.append(row)
    return torch.stack(padded)


def context_batch(token_lists: Sequence[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T] and their attention mask on ``device``."""
    ids = right_pad(token_lists).to(device)
    mask = right_pad([torch.ones_like(t) for t in token_lists]).to(device)
    return ids, mask


def on_receiver(receiver: LoadedModel, tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """Per-context tensors right-padded along ``dim`` into one batch, on the receiver's device and dtype."""
    return right_pad([t.to(device=receiver.device, dtype=receiver.dtype) for t in tensors], dim=dim)


def at_positions(tensor: torch.Tensor, start: int) -> torch.Tensor:
    """K or V [kv_heads, n, head_dim] of positions start.., as one slot per position from 0 (zeros before start)."""
    return tensor if start == 0 else torch.cat([tensor.new_zeros((tensor.shape[0], start, tensor.shape[2])), tensor], 1)


def sender_kv(receiver: LoadedModel, contexts: Sequence, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sender's K/V of ``layer`` over the batch, right-padded, on the receiver's device and dtype."""
    return (on_receiver(receiver, [at_positions(c.keys[layer], c.held_from[layer]) for c in contexts], 1),
            on_receiver(receiver, [at_positions(c.values[layer], c.held_from[layer]) for c in contexts], 1))


def kv_tokens(sources: Sequence) -> list[int]:
    """Per layer, the context tokens whose K/V the sources hold, summed over the batch (what reusing it moves)."""
    return [sum(s.num_tokens - s.held_from[layer] for s in sources) for layer in range(sources[0].num_layers)]


def check_length(model: LoadedModel, length: int) -> None:
    """A context the model cannot take fails here, not as positions beyond what its RoPE was trained for."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and length > limit:
        raise DroidSpeakError(f"context of {length} tokens exceeds the model's {limit} positions "
                              "(max_position_embeddings); shorten the context")


def check_fits(receiver: LoadedModel, source, plan: RecomputePlan) -> None:
    """A sender cache must match the receiver's shape and hold E at every group start of ``plan`` (it may still
    come from any compatible sender). ``source`` states num_layers, kv_heads, head_dim, hidden_size, hidden_layers."""
    config = receiver.config
    kv_heads, head_dim = kv_shape(config)
    if source.num_layers != receiver.stack.num_layers:
        raise CacheMismatchError(f"cache has {source.num_layers} layers, receiver has {receiver.stack.num_layers}")
    if (source.kv_heads, source.head_dim) != (kv_heads, head_dim):
        raise CacheMismatchError(
            f"cache K/V shape ({source.kv_heads}, T, {source.head_dim}) != receiver's ({kv_heads}, T, {head_dim})"
        )
    if source.hidden_layers and source.hidden_size != config.hidden_size:
        raise CacheMismatchError(f"E hidden size {source.hidden_size} != receiver's {config.hidden_size}")
    _check_windows(receiver, source, plan)
    missing = sorted(set(plan.e_layers) - set(source.hidden_layers))
    if missing:
        raise CacheMismatchError(
            f"the plan starts groups at layers {missing}, but this cache holds E only for layers "
            f"{sorted(source.hidden_layers) or 'none'}; prefill the sender with e_layers covering them (or 'all')"
        )


def _check_windows(receiver: LoadedModel, source, plan: RecomputePlan) -> None:
    """A layer the plan reuses must hold every key the receiver's own attention would read from it."""
    recomputed, types = set(plan.recomputed_layers), receiver.stack.layer_types
    window = getattr(receiver.config, "sliding_window", None)
    for layer, start in enumerate(source.held_from):
        if start == 0 or layer in recomputed:
            continue
        if types[layer] != "sliding_attention" or not window or start > max(0, source.num_tokens - (window - 1)):
            reads = f"a sliding window of {window}" if types[layer] == "sliding_attention" else "full attention"
            raise CacheMismatchError(
                f"layer {layer} of this cache holds the K/V of tokens {start}.. only (the sender's window), but the "
                f"receiver's layer {layer} reads {reads}: prefill the sender with full_sliding=True")


def cost_of(receiver: LoadedModel, plan: RecomputePlan, context_tokens: int, *, chosen_tokens: int = 0,
            kv_tokens: Sequence[int] | None = None) -> PrefillCost:
    """What ``plan`` costs this receiver over ``context_tokens``; ``chosen_tokens``: CacheBlend's per-layer tokens;
    ``kv_tokens``: per layer, the tokens the sender's cache holds (fewer than the context in a sliding layer)."""
    config, elem = receiver.config, receiver.dtype.itemsize
    kv_heads, head_dim = kv_shape(config)
    return prefill_cost(
        plan,
        num_layers=receiver.stack.num_layers,
        context_tokens=context_tokens,
        kv_bytes_per_token_layer=2 * kv_heads * head_dim * elem,
        e_bytes_per_token=config.hidden_size * elem,
        chosen_tokens=chosen_tokens,
        kv_tokens=kv_tokens,
    )


def adopt(layer, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Make a DynamicCache layer hold ``keys``/``values`` themselves (no copy, unlike ``update`` on an empty layer)."""
    if not getattr(layer, "is_initialized", True):
        try:
            layer.lazy_initialization(keys[..., :0, :], values[..., :0, :])
        except TypeError:  # another transformers 5.x signature: set what it would have set
            layer.device, layer.is_initialized = keys.device, True
    layer.keys, layer.values = keys, values


def select_rows(prefilled: PrefilledBatch, rows: Sequence[int]) -> PrefilledBatch:
    """A batch whose row i is row ``rows[i]`` of ``prefilled``: one receiver prefill can serve many queries."""
    index = torch.as_tensor(list(rows), dtype=torch.long, device=prefilled.token_ids.device)
    data = [
        (layer.keys.index_select(0, index), layer.values.index_select(0, index)) for layer in prefilled.cache.layers
    ]
    return PrefilledBatch(
        cache=context_cache(data),
        token_ids=prefilled.token_ids.index_select(0, index),
        attention_mask=prefilled.attention_mask.index_select(0, index),
        cost=prefilled.cost,
    )


def stack_rows(batches: Sequence[PrefilledBatch], rows: Sequence[int]) -> PrefilledBatch:
    """Rows ``rows`` of each of ``batches`` (several plans' prefills of the same contexts), one plan after another:
    one decode then answers every plan's questions. Its cost is the first batch's (each plan keeps its own)."""
    picked = [select_rows(batch, rows) for batch in batches]
    if len(picked) == 1:
        return picked[0]
    data = [(torch.cat([p.cache.layers[i].keys for p in picked]), torch.cat([p.cache.layers[i].values for p in picked]))
            for i in range(len(picked[0].cache.layers))]
    return PrefilledBatch(cache=context_cache(data), token_ids=torch.cat([p.token_ids for p in picked]),
                          attention_mask=torch.cat([p.attention_mask for p in picked]), cost=picked[0].cost)


def distinct_rows(row_contexts: Sequence[Hashable]) -> tuple[list, list[int]]:
    """(the distinct contexts in first-seen order, the index of each row's context among them)."""
    distinct = list(dict.fromkeys(row_contexts))
    return distinct, [distinct.index(c) for c in row_contexts]


def prefill_rows(row_contexts: Sequence[Hashable], prefill: Callable[[list], PrefilledBatch]) -> PrefilledBatch:
    """Row i holds the prefill of ``row_contexts[i]``; each distinct context is prefilled once (``prefill`` gets
    the distinct ones, in first-seen order), so a context's questions share one receiver prefill."""
    distinct, index = distinct_rows(row_contexts)
    return select_rows(prefill(distinct), index)


def held_prefill(prefill: Callable[[list], PrefilledBatch]) -> Callable[[list], PrefilledBatch]:
    """``prefill``, returning its last batch again while it is asked for the same distinct contexts: a run of batches
    smaller than a context's questions (a sliding-window model decodes one at a time) prefills it once. Safe to share:
    :func:`prefill_rows` hands out copies of its rows, so decoding never writes into the held batch."""
    held: list = [None, None]  # (the distinct contexts, their prefill)

    def again(distinct: list) -> PrefilledBatch:
        if held[0] != distinct:
            held[:] = [list(distinct), prefill(distinct)]
        return held[1]

    return again

