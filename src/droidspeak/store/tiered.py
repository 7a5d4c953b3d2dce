"""Tiers stacked fastest first (GPU, pinned host, disk, remote): a read is served by the first tier holding the key,
and a whole-cache hit in a slower tier is promoted into the fastest one (which evicts by its own LRU)."""

from __future__ import annotations

import torch

from droidspeak.cache import ContextCache
from droidspeak.store.base import CacheInfo, CacheStore, StoredCache, StoreError


class TieredStore(CacheStore):
    name = "tiered store"

    def __init__(self, tiers: list[CacheStore], *, promote: bool = True):
        super().__init__(None)
        if not tiers:
            raise StoreError("a tiered store needs at least one tier")
        self.tiers, self.promote = list(tiers), promote

    def _tier(self, key: str) -> CacheStore:
        for tier in self.tiers:
            if tier.contains(key):
                return tier
        raise StoreError(f"{self.name}: no tier holds key {key[:12]}… ({', '.join(t.name for t in self.tiers)})")

    def contains(self, key: str) -> bool:
        return any(tier.contains(key) for tier in self.tiers)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for tier in reversed(self.tiers) for k in tier.keys()))

    def __len__(self) -> int:
        return len(self.keys())

    def put(self, cache: ContextCache, key: str | None = None) -> str:
        """Write to the fastest tier only (write-through is the caller's choice: put into a tier directly)."""
        return self.tiers[0].put(cache, key)

    def get(self, key: str, device=None) -> ContextCache:
        tier = self._tier(key)
        cache = tier.get(key, device)
        if self.promote and tier is not self.tiers[0]:
            self.tiers[0].put(cache, key)
        return cache

    def get_layer(self, key: str, layer: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._tier(key).get_layer(key, layer, device)

    def get_hidden(self, key: str, layer: int, device=None) -> torch.Tensor:
        return self._tier(key).get_hidden(key, layer, device)

    def get_tokens(self, key: str) -> torch.Tensor:
        return self._tier(key).get_tokens(key)

    def info(self, key: str) -> CacheInfo:
        return self._tier(key).info(key)

    def view(self, key: str) -> StoredCache:
        return StoredCache(self._tier(key), key)

    def remove(self, key: str) -> bool:
        return any([tier.remove(key) for tier in self.tiers])

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()
        super().close()

    # the tiers do the work; these hooks are never reached
    def _write(self, key, cache): raise AssertionError("unreachable")  # noqa: E704
    def _read(self, key, device): raise AssertionError("unreachable")  # noqa: E704
    def _read_layer(self, key, layer, device): raise AssertionError("unreachable")  # noqa: E704
    def _read_hidden(self, key, layer, device): raise AssertionError("unreachable")  # noqa: E704
    def _read_tokens(self, key): raise AssertionError("unreachable")  # noqa: E704
    def _info(self, key): raise AssertionError("unreachable")  # noqa: E704
    def _delete(self, key): raise AssertionError("unreachable")  # noqa: E704
