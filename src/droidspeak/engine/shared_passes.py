"""Many layer plans over the same contexts, from receiver passes they share: the prefill side of profiling.

Why: a recomputed group s..e sees only the sender's E[s] and its own earlier layers, so the receiver's K/V of
layers s..e are the same in every plan with a group starting at s, whatever else that plan recomputes. One
receiver pass from each start (through the deepest end any plan needs there) therefore serves every
contiguous group, single-layer and multi-group plan. A 30-layer profile's 120 groups and 30 single-layer
plans read 465 receiver layers this way instead of 2,230, and each cache is bitwise the one
``receiver_prefill`` builds for that plan alone (tests/test_engine_oracles.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from droidspeak.engine.batch import (
    PrefilledBatch,
    check_fits,
    context_batch,
    context_cache,
    cost_of,
    kv_tokens,
    sender_kv,
)
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import layer_groups, parse_plan, recompute
from droidspeak.engine.prefill import receiver_prefill
from droidspeak.errors import DroidSpeakError


@dataclass
class SharedPrefill:
    """One plan's receiver cache, and what a prefill of its own would have cost in wall time: its layers' share
    of the passes it reads, plus assembling it."""

    plan: str
    batch: PrefilledBatch
    seconds: float


@torch.inference_mode()
def shared_prefills(
    receiver: LoadedModel, contexts: Sequence[ContextCache], plans: Sequence[str]
) -> Iterator[SharedPrefill]:
    """``receiver_prefill(receiver, contexts, plan)`` for every plan, from shared passes.

    ``plans`` are layer plans that read the sender's cache (``full_reuse``, ``recompute:...``). They come out
    ordered by their deepest group start, and a pass is dropped after the last plan that reads it, so a
    profile's plans hold at most the pass from layer 0 and the current one at a time.
    """
    if not contexts or not all(isinstance(c, ContextCache) for c in contexts):
        raise DroidSpeakError("shared passes reuse the sender's cache: pass one or more ContextCache objects")
    num_layers = receiver.stack.num_layers
    parsed = {plan: parse_plan(plan, num_layers) for plan in dict.fromkeys(plans)}
    unshared = [plan for plan, p in parsed.items() if p.kind not in ("full_reuse", "recompute")]
    if unshared:
        raise DroidSpeakError(f"shared passes serve layer plans that reuse the sender's cache; not {unshared}")
    for cache in contexts:
        for p in parsed.values():
            check_fits(receiver, cache, p)
    groups = {plan: layer_groups(p, num_layers) for plan, p in parsed.items()}
    order = sorted(parsed, key=lambda plan: max((start for start, _ in groups[plan]), default=-1))
    deepest: dict[int, int] = {}
    last_reader: dict[int, int] = {}
    for index, plan in enumerate(order):
        for start, end in groups[plan]:
            deepest[start] = max(deepest.get(start, end), end)
            last_reader[start] = index
    ids, mask = context_batch([c.token_ids for c in contexts], receiver.device)
    tokens, held = int(mask.sum()), kv_tokens(contexts)
    passes: dict[int, tuple[list[tuple[torch.Tensor, torch.Tensor]], float]] = {}  # start -> (K/V per layer, s/layer)
    theirs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for index, plan in enumerate(order):
        started, share, in_passes = time.perf_counter(), 0.0, 0.0
        for start, end in groups[plan]:
            if start not in passes:
                t0 = time.perf_counter()
                full = receiver_prefill(receiver, contexts, recompute((start, deepest[start])))
                seconds = time.perf_counter() - t0
                passes[start] = ([(layer.keys, layer.values) for layer in full.cache.layers],
                                 seconds / (deepest[start] - start + 1))
                in_passes += seconds
            share += (end - start + 1) * passes[start][1]
        own = {layer: passes[start][0][layer] for start, end in groups[plan] for layer in range(start, end + 1)}
        data = []
        for layer in range(num_layers):
            if layer not in own and layer not in theirs:
                theirs[layer] = sender_kv(receiver, contexts, layer)
            data.append(own[layer] if layer in own else theirs[layer])
        batch = PrefilledBatch(context_cache(data), ids, mask,
                               cost_of(receiver, parsed[plan], tokens, kv_tokens=held))
        assembling = time.perf_counter() - started - in_passes
        yield SharedPrefill(plan, batch, share + assembling)
        for start in [s for s, reader in last_reader.items() if reader == index]:
            passes.pop(start, None)
