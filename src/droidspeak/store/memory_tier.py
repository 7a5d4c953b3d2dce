"""Memory tiers: GPU memory, and host memory (page-locked when CUDA is present, so copies can overlap compute).

Entries are kept as tensors, so reads are free (no serde); what ``get`` returns aliases the stored tensors and
must not be modified in place. Host pinning needs a CUDA runtime: without one the host tier holds ordinary memory
and says so (``pinned`` is False).
"""

from __future__ import annotations

import torch

from droidspeak.engine.cache import ContextCache
from droidspeak.store.base import CacheInfo, CacheStore, StoreError


def _place(tensor: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    tensor = tensor.detach().to(device).contiguous()
    return tensor.pin_memory() if pin and not tensor.is_pinned() else tensor


class MemoryStore(CacheStore):
    """Caches held as tensors on one device (``cuda``: the GPU tier; ``cpu`` with ``pin``: the host tier)."""

    def __init__(self, device: str | torch.device = "cpu", *, pin: bool = True, capacity_bytes: int | None = None):
        super().__init__(capacity_bytes)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise StoreError("a GPU cache tier needs CUDA, and this torch build or machine has none")
        self.pinned = bool(pin and self.device.type == "cpu" and torch.cuda.is_available())
        self.name = f"{'pinned host' if self.pinned else self.device.type} memory store"
        self._entries: dict[str, ContextCache] = {}
        self._infos: dict[str, CacheInfo] = {}

    def _write(self, key: str, cache: ContextCache) -> None:
        place = lambda t: _place(t, self.device, self.pinned)  # noqa: E731
        stored = ContextCache(
            token_ids=cache.token_ids.detach().cpu().clone(),
            keys=[place(k) for k in cache.keys],
            values=[place(v) for v in cache.values],
            hidden={layer: place(e) for layer, e in cache.hidden.items()},
            sender=cache.sender,
            meta=dict(cache.meta),
        )
        self._entries[key] = stored
        self._infos[key] = CacheInfo.of(stored, key)

    def _read(self, key: str, device) -> ContextCache:
        cache = self._entries[key]
        return cache if device is None else cache.to(device)

    def _read_layer(self, key: str, layer: int, device):
        cache = self._entries[key]
        if not 0 <= layer < cache.num_layers:
            raise StoreError(f"{self.name}: layer {layer} outside 0..{cache.num_layers - 1}")
        k, v = cache.keys[layer], cache.values[layer]
        return (k, v) if device is None else (k.to(device), v.to(device))

    def _read_hidden(self, key: str, layer: int, device):
        cache = self._entries[key]
        if layer not in cache.hidden:
            raise StoreError(f"{self.name}: no E[{layer}] stored (E held for layers {sorted(cache.hidden)})")
        e = cache.hidden[layer]
        return e if device is None else e.to(device)

    def _read_tokens(self, key: str) -> torch.Tensor:
        return self._entries[key].token_ids

    def _info(self, key: str) -> CacheInfo:
        return self._infos[key]

    def _delete(self, key: str) -> None:
        self._entries.pop(key, None)
        self._infos.pop(key, None)

    def close(self) -> None:
        self._entries.clear()
        self._infos.clear()
        self._lru.clear()
        super().close()


def gpu_store(capacity_bytes: int | None = None, device: str = "cuda") -> MemoryStore:
    return MemoryStore(device, pin=False, capacity_bytes=capacity_bytes)


def host_store(capacity_bytes: int | None = None, pin: bool = True) -> MemoryStore:
    return MemoryStore("cpu", pin=pin, capacity_bytes=capacity_bytes)
