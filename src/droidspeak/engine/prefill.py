"""Sender prefill (capture K/V and E) and receiver partial prefill (recompute chosen layer groups).

``receiver_prefill`` is the one entry for every plan: layer groups run here, token-level ``cacheblend:R`` plans
go to ``engine.cacheblend``. Batch layout and checks live in ``engine.batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from droidspeak.engine.arch import context_mask
from droidspeak.engine.batch import (
    PrefilledBatch,
    as_ids,
    check_fits,
    check_length,
    context_batch,
    context_cache,
    cost_of,
    kv_tokens,
    on_receiver,
    sender_kv,
)
from droidspeak.engine.cache import ContextCache, held_from
from droidspeak.engine.cacheblend import cacheblend_prefill
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import RecomputePlan, layer_groups, parse_plan
from droidspeak.errors import DroidSpeakError
from droidspeak.hf_compat import cache_arg, returned_cache


def _resolve_e_layers(e_layers: str | Iterable[int] | RecomputePlan, num_layers: int) -> set[int]:
    if isinstance(e_layers, str) and e_layers == "all":
        return set(range(1, num_layers))
    if isinstance(e_layers, (str, RecomputePlan)):
        return set(parse_plan(e_layers, num_layers).e_layers)
    layers = {int(layer) for layer in e_layers}
    bad = sorted(layer for layer in layers if not 0 <= layer < num_layers)
    if bad:
        raise DroidSpeakError(f"e_layers {bad} out of range for a model with {num_layers} layers")
    return layers - {0}


@torch.inference_mode()
def sender_prefill(
    sender: LoadedModel,
    contexts: Sequence[Sequence[int] | torch.Tensor],
    *,
    e_layers: str | Iterable[int] | RecomputePlan = "all",
    batch_size: int = 8,
    full_sliding: bool = False,
) -> list[ContextCache]:
    """Prefill contexts with the sender's own forward; capture per-layer K/V and E at ``e_layers``.

    ``e_layers`` is ``"all"``, a plan (its group starts), or layer indices. E[0] is never stored: a group
    starting at layer 0 uses the receiver's own embeddings. A sliding-window layer keeps only the K/V of the last
    ``window - 1`` tokens, as the model's own cache does; ``full_sliding`` keeps every token's (CacheBlend re-attends
    chosen tokens over their whole window, anywhere in the context).
    """
    sender = sender.context_model  # an activated LoRA's contexts are its base's
    stack, vocab = sender.stack, sender.config.vocab_size
    wanted = _resolve_e_layers(e_layers, stack.num_layers)
    ids_list = [as_ids(c, vocab) for c in contexts]
    for ids in ids_list:
        check_length(sender, ids.numel())
    meta = {
        "sender_name": sender.fingerprint.name,
        "sender_adapter": sender.fingerprint.adapter,
        "dtype": sender.fingerprint.dtype,
    }
    window = getattr(sender.config, "sliding_window", None)
    sliding = [layer for layer, kind in enumerate(stack.layer_types) if kind == "sliding_attention"]
    if window and sliding and not full_sliding:
        meta |= {"sliding_window": int(window), "sliding_layers": sliding}
    caches: list[ContextCache] = []
    for start in range(0, len(ids_list), batch_size):
        chunk = ids_list[start : start + batch_size]
        ids, mask = context_batch(chunk, sender.device)
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            stack.layers[layer].register_forward_pre_hook(_capture_input(captured, layer)) for layer in sorted(wanted)
        ]
        try:
            kv = returned_cache(sender.model.model(input_ids=ids, attention_mask=context_mask(mask), use_cache=True,
                                                  **cache_arg(context_cache())))
        finally:
            for hook in hooks:
                hook.remove()
        for row, tokens in enumerate(chunk):
            n = tokens.numel()
            starts = held_from(n, stack.num_layers, meta)
            caches.append(
                ContextCache(
                    token_ids=tokens,
                    keys=[layer.keys[row, :, s:n].clone() for layer, s in zip(kv.layers, starts)],
                    values=[layer.values[row, :, s:n].clone() for layer, s in zip(kv.layers, starts)],
                    hidden={layer: e[row, :n].clone() for layer, e in captured.items()},
                    sender=sender.fingerprint.digest,
                    meta=meta,
                )
            )
    return caches


def _capture_input(store: dict[int, torch.Tensor], layer: int):
    def hook(module, args):
        store[layer] = args[0].detach()

    return hook


@torch.inference_mode()
def receiver_prefill(
    receiver: LoadedModel,
    contexts: Sequence[ContextCache | Sequence[int] | torch.Tensor],
    plan: str | RecomputePlan,
) -> PrefilledBatch:
    """Build the receiver's cache over a batch of contexts for ``plan``.

    ``full_prefill`` runs the receiver's own forward (token ids suffice). Otherwise every context must be a
    ContextCache: each group [s, e] runs the receiver's layers s..e starting from the sender's E[s] (or the
    receiver's embeddings when s = 0); all other layers keep the sender's K/V. ``cacheblend:R`` plans go to
    :func:`droidspeak.engine.cacheblend.cacheblend_prefill`. An activated LoRA's context runs on its base.
    """
    receiver = receiver.context_model
    stack = receiver.stack
    plan = parse_plan(plan, stack.num_layers)
    if not contexts:
        raise DroidSpeakError("receiver_prefill needs at least one context")
    if plan.kind == "cacheblend":  # token-level recompute: its own path
        return cacheblend_prefill(receiver, contexts, plan.token_fraction, check_layer=plan.check_layer or 0)
    groups = layer_groups(plan, stack.num_layers)
    device = receiver.device
    if not plan.uses_cache:
        token_lists = [
            c.token_ids if isinstance(c, ContextCache) else as_ids(c, receiver.config.vocab_size) for c in contexts
        ]
        for tokens in token_lists:
            check_length(receiver, tokens.numel())
        ids, mask = context_batch(token_lists, device)
        out = receiver.model.model(input_ids=ids, attention_mask=context_mask(mask), use_cache=True,
                                     **cache_arg(context_cache()))
        return PrefilledBatch(returned_cache(out), ids, mask, cost_of(receiver, plan, int(mask.sum())))

    if not all(isinstance(c, ContextCache) for c in contexts):
        raise DroidSpeakError(f"plan {plan} reuses the sender's cache: pass ContextCache objects, not token ids")
    for cache in contexts:
        check_fits(receiver, cache, plan)
    ids, mask = context_batch([c.token_ids for c in contexts], device)
    recomputed = set(plan.recomputed_layers)
    data = [
        (None, None) if layer in recomputed else sender_kv(receiver, contexts, layer)
        for layer in range(stack.num_layers)
    ]
    cache = context_cache(data)
    positions = torch.arange(ids.shape[1], device=device).unsqueeze(0).expand(ids.shape[0], -1)
    for start, end in groups:
        hidden = stack.embed(ids) if start == 0 else on_receiver(receiver, [c.hidden[start] for c in contexts], 0)
        stack.run_layers(hidden, start, end, attention_mask=mask, position_ids=positions, cache=cache)
    return PrefilledBatch(cache, ids, mask, cost_of(receiver, plan, int(mask.sum()), kv_tokens=kv_tokens(contexts)))

