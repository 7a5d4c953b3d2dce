"""CacheBlend extended across models (the paper's token-level baseline), and the layer-group + token hybrid.

CacheBlend (EuroSys'25) recomputes a few context tokens instead of a few layers. Cross-model (DroidSpeak §7):

1. selection — the receiver's layer-0 K/V for every context token (its own embeddings, then layer 0's
   K/V projections only: the attention and MLP never run), compared with the sender's layer-0 K/V; per
   context the ``ceil(R · T)`` tokens with the largest deviation ``‖K_r − K_s‖² + ‖V_r − V_s‖²`` are chosen.
   Token 0 gets no special treatment: it is kept only when it deviates (we follow CacheBlend's pure
   deviation ranking; forcing the attention sink in would make ``cacheblend:0`` differ from ``full_reuse``).
2. recompute — from the receiver's embeddings of the chosen tokens, every layer runs the RECEIVER's own
   decoder layer on the chosen tokens only (queries at their true positions), attending causally to the
   whole context: the sender's K/V for the other tokens, the receiver's fresh K/V for the chosen ones. Their
   new K/V are written into the cache in place (a scatter "cache" handed to the layer), so the next layers
   and the query see them.

Hybrid (``groups``): those layer groups are recomputed over the whole context exactly as ``receiver_prefill``
does (from the sender's E[s], or the embeddings when s = 0), except that the chosen tokens' rows of E[s] are
the receiver's own hidden states carried by step 2; the chosen tokens then continue from the group's output.
Oracles (tests/test_cacheblend.py): ratio 1 ≡ full prefill, ratio 0 ≡ full_reuse (≡ the groups-only plan
with ``groups``), sender = receiver ≡ full prefill at any ratio, batched ≡ one context at a time.

Check layer (``cacheblend:R@L``, beyond both papers): at layer 0 a token's K/V depend only on its id and position
(RoPE keeps the norm), so the layer-0 ranking cannot see the context. With L > 0, layers 0..L-1 are recomputed
over the whole context (the receiver's own input at L, counted as L full layers), the tokens are chosen by their
deviation at layer L, and only they are recomputed in layers L..end.

Cost accounting: ``recomputed_layer_tokens`` counts chosen tokens × non-group layers plus context tokens ×
group layers; the selection pass (one layer's K/V projections over the context) is not counted, as in the
papers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from droidspeak.engine.batch import (
    PrefilledBatch,
    check_fits,
    context_batch,
    context_cache,
    cost_of,
    on_receiver,
    sender_kv,
)
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import recompute
from droidspeak.errors import DroidSpeakError
from droidspeak.hf_compat import cache_arg


class _Captured(Exception):
    """Raised by :class:`_CaptureKV` to stop a layer right after its K/V projections."""


class _CaptureKV:
    """A stand-in cache that records the K/V a layer computes and stops the layer there (no attention, no MLP)."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.keys, self.values = key_states, value_states
        raise _Captured


class _ScatterKV:
    """A stand-in cache for a layer run on chosen tokens: writes their K/V into the full cache, returns it all."""

    def __init__(self, cache: DynamicCache, index: torch.Tensor):
        self.cache, self.index = cache, index  # index: [B, n] token positions of the queries

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.cache.layers[layer_idx]
        where = self.index[:, None, :, None].expand(-1, key_states.shape[1], -1, key_states.shape[-1])
        layer.keys.scatter_(2, where, key_states.to(layer.keys.dtype))
        layer.values.scatter_(2, where.expand(-1, -1, -1, value_states.shape[-1]), value_states.to(layer.values.dtype))
        return layer.keys, layer.values


def layer_kv(
    receiver: LoadedModel, layer: int, hidden: torch.Tensor, position_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V (after RoPE, [B, kv_heads, T, head_dim]) that ``receiver``'s decoder layer computes from ``hidden``."""
    stack = receiver.stack
    capture = _CaptureKV()
    try:
        stack.layers[layer](
            hidden,
            attention_mask=None,
            position_embeddings=stack.layer_rope(hidden, position_ids, layer),
            position_ids=position_ids,
            use_cache=True,
            **cache_arg(capture),
        )
    except _Captured:
        return capture.keys, capture.values
    raise DroidSpeakError(f"layer {layer} of {type(stack.model).__name__} never wrote its K/V to the cache")


def select_tokens(
    receiver: LoadedModel, caches: Sequence[ContextCache], ratio: float, ids: torch.Tensor, mask: torch.Tensor,
    *, layer: int = 0, hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per context, the ``ceil(ratio · T)`` positions whose K/V at ``layer`` deviates most (sorted), padded per
    batch: the receiver's K/V from ``hidden`` (its own hidden state entering ``layer``; the embeddings at layer 0)
    against the sender's.

    Returns ``index`` [B, n] and ``valid`` [B, n]; a row with fewer tokens repeats its last chosen position in
    the padding slots (recomputing a token twice writes identical K/V, so the padding is harmless).
    """
    device, lengths = ids.device, mask.sum(-1).tolist()
    counts = [min(n, math.ceil(ratio * n - 1e-9)) for n in lengths]
    width = max(counts)
    index = torch.zeros((len(caches), width), dtype=torch.long, device=device)
    valid = torch.zeros((len(caches), width), dtype=torch.bool, device=device)
    if width == 0:
        return index, valid
    positions = torch.arange(ids.shape[1], device=device).unsqueeze(0).expand(ids.shape[0], -1)
    keys, values = layer_kv(receiver, layer, receiver.stack.embed(ids) if hidden is None else hidden, positions)
    for row, (cache, n, k) in enumerate(zip(caches, lengths, counts)):
        dk = (keys[row, :, :n].float() - cache.keys[layer].to(device).float()).pow(2).sum((0, 2))
        dv = (values[row, :, :n].float() - cache.values[layer].to(device).float()).pow(2).sum((0, 2))
        chosen = torch.topk(dk + dv, k).indices.sort().values if k < n else torch.arange(n, device=device)
        index[row, :k], valid[row, :k] = chosen, True
        index[row, k:] = chosen[-1]
    return index, valid


def _query_masks(receiver: LoadedModel, index: torch.Tensor, width: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """[B, 1, n, T] mask per attention type for queries at ``index``: key j is visible to a query at p iff j <= p
    (and, in a sliding-window layer, p - j < window)."""
    keys = torch.arange(width, device=index.device)[None, None, :]
    causal = keys <= index[:, :, None]
    window = getattr(receiver.config, "sliding_window", None)
    masks = {}
    for kind in set(receiver.stack.layer_types):
        allowed = causal & (index[:, :, None] - keys < window) if kind == "sliding_attention" and window else causal
        if getattr(receiver.config, "_attn_implementation", "sdpa") == "sdpa":
            masks[kind] = allowed[:, None]
        else:
            masks[kind] = torch.zeros(allowed.shape, dtype=dtype, device=index.device).masked_fill(
                ~allowed, torch.finfo(dtype).min)[:, None]
    return masks


def _gather_rows(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))


@torch.inference_mode()
def cacheblend_prefill(
    receiver: LoadedModel,
    caches: Sequence[ContextCache],
    ratio: float,
    *,
    groups: Sequence[tuple[int, int]] = (),
    check_layer: int = 0,
) -> PrefilledBatch:
    """Receiver cache where the fraction ``ratio`` of context tokens (per context) is recomputed in every layer
    outside ``groups``, and ``groups`` (hybrid) are recomputed over the whole context. See the module docstring.

    ``check_layer`` L > 0 (``cacheblend:R@L``) chooses the tokens by their deviation at layer L, which can read
    the context (at layer 0 a token's K/V depend only on its id and position): layers 0..L-1 are recomputed over
    the whole context to give the receiver's own input at L, and counted as such."""
    if not 0.0 <= ratio <= 1.0:
        raise DroidSpeakError(f"cacheblend ratio must lie in [0, 1], got {ratio}")
    if not caches or not all(isinstance(c, ContextCache) for c in caches):
        raise DroidSpeakError("cacheblend reuses the sender's cache: pass at least one ContextCache")
    receiver = receiver.context_model  # an activated LoRA's contexts are its base's
    stack, device, dtype = receiver.stack, receiver.device, receiver.dtype
    num_layers = stack.num_layers
    if check_layer and groups:
        raise DroidSpeakError("a check layer recomputes layers 0..L-1 itself; it takes no other groups")
    if not 0 <= check_layer < num_layers:
        raise DroidSpeakError(f"check layer {check_layer} out of range for a model with {num_layers} layers")
    groups = ((0, check_layer - 1),) if check_layer else groups
    plan = recompute(*groups).validate(num_layers)
    for cache in caches:
        check_fits(receiver, cache, plan)
        if any(cache.held_from):
            raise DroidSpeakError(
                "cacheblend re-attends its chosen tokens over their whole window in every layer, but this cache's "
                "sliding layers keep only their last window: prefill the sender with full_sliding=True")
    ids, mask = context_batch([c.token_ids for c in caches], device)
    batch, width = ids.shape
    grouped = set(plan.recomputed_layers)
    data = [(None, None) if layer in grouped else sender_kv(receiver, caches, layer) for layer in range(num_layers)]
    cache = context_cache(data)
    positions = torch.arange(width, device=device).unsqueeze(0).expand(batch, -1)
    layer, context_hidden = 0, None
    if check_layer:  # the receiver's own input at the check layer, over the whole context
        context_hidden = stack.run_layers(stack.embed(ids), 0, check_layer - 1, attention_mask=mask,
                                          position_ids=positions, cache=cache)
        layer = check_layer
    index, valid = select_tokens(receiver, caches, ratio, ids, mask, layer=layer, hidden=context_hidden)
    chosen = index.shape[1] > 0
    starts = {s: e for s, e in plan.groups if s >= layer}
    hidden = None  # the chosen tokens' hidden state entering `layer`
    if chosen:
        hidden = stack.embed(ids.gather(1, index)) if context_hidden is None else _gather_rows(context_hidden, index)
        scatter = _ScatterKV(cache, index)
        attention = _query_masks(receiver, index, width, dtype)
        rope = stack.rope(hidden, index)
    while layer < num_layers:
        if layer in starts:  # a whole-context group, fed by E[s] with the chosen rows replaced by our own
            end = starts[layer]
            full = stack.embed(ids) if layer == 0 else on_receiver(receiver, [c.hidden[layer] for c in caches], 0)
            if chosen and layer > 0:
                full = full.scatter(1, index[..., None].expand(-1, -1, full.shape[-1]), hidden)
            out = stack.run_layers(full, layer, end, attention_mask=mask, position_ids=positions, cache=cache)
            hidden = _gather_rows(out, index) if chosen else None
            layer = end + 1
            continue
        if chosen:
            hidden = stack.run_layer(layer, hidden, masks=attention, rope=rope, position_ids=index, cache=scatter)
        layer += 1
    return PrefilledBatch(cache, ids, mask, cost_of(receiver, plan, int(mask.sum()), chosen_tokens=int(valid.sum())))
