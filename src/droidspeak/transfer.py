"""What crosses the link for one plan: the sender's K/V of every reused layer and E at every group start, through a
transfer codec (droidspeak.codec), and the bytes that takes.

``transmit`` returns the cache as the receiver holds it after the link (lossy tensors decoded) and the bytes sent;
tensors the plan never loads (K/V of recomputed layers, E elsewhere) are not sent and are left as they are, since
the receiver computes those itself.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from droidspeak.codec import Codec, get_codec
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.plan import RecomputePlan, layer_groups


def loaded_layers(plan: RecomputePlan, num_layers: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(layers whose K/V the receiver loads, layers whose E it loads) under ``plan``."""
    if not plan.uses_cache:
        return (), ()
    if plan.kind == "cacheblend":  # every layer's K/V, partly overwritten by the chosen tokens; no E
        return tuple(range(num_layers)), ()
    recomputed = {layer for s, e in layer_groups(plan, num_layers) for layer in range(s, e + 1)}
    return tuple(layer for layer in range(num_layers) if layer not in recomputed), plan.e_layers


def loaded_tensors(cache: ContextCache, plan: RecomputePlan) -> list[tuple[str, int, torch.Tensor]]:
    """(role, layer, tensor) of every tensor ``plan`` loads from ``cache``: K and V of the reused layers, then E."""
    kv_layers, e_layers = loaded_layers(plan, cache.num_layers)
    return (
        [("k", layer, cache.keys[layer]) for layer in kv_layers]
        + [("v", layer, cache.values[layer]) for layer in kv_layers]
        + [("e", layer, cache.hidden[layer]) for layer in e_layers]
    )


def transmit(cache: ContextCache, plan: RecomputePlan, codec: str | Codec = "lossless") -> tuple[ContextCache, int]:
    """``cache`` as the receiver holds it after the link under ``plan`` and ``codec``, and the bytes sent."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    received = {"k": list(cache.keys), "v": list(cache.values), "e": dict(cache.hidden)}
    sent = 0
    for role, layer, tensor in loaded_tensors(cache, plan):
        received[role][layer], nbytes = codec.roundtrip(tensor, role)
        sent += nbytes
    return replace(cache, keys=received["k"], values=received["v"], hidden=received["e"]), sent
