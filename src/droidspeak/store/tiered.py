"""Tiers stacked fastest first (GPU, pinned host, disk, remote) behind the store interface, with the policy a cache
user needs in one place.

- **Read:** a key is served by the first tier holding it; a whole-cache hit in a slower tier is promoted into the
  fastest one (which evicts by its own LRU). :meth:`TieredStore.find` serves a cache only if it holds what the reader
  needs (E at given layers; every token's K/V of a sliding layer, for CacheBlend); a copy that fails verification (a
  disk tier sets it aside) counts in ``rejected`` and reads as absent, so the caller prefills it again.
- **Write:** ``put`` writes through every tier (``write_through``, default: the disk tier is what other runs share)
  or the fastest only; a cache replacing a stored copy of the same key (the same sender and tokens) keeps the E
  layers the older copy had.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from droidspeak.engine.cache import ContextCache
from droidspeak.errors import CacheFormatError
from droidspeak.store.base import CacheInfo, CacheStore, StoredCache, StoreError, checked_key

log = logging.getLogger(__name__)


class TieredStore:
    name = "tiered store"

    def __init__(self, tiers: list[CacheStore], *, promote: bool = True, write_through: bool = True):
        if not tiers:
            raise StoreError("a tiered store needs at least one tier")
        self.tiers, self.promote, self.write_through = list(tiers), promote, write_through
        self.rejected = 0  # stored copies that failed verification and were read as absent

    def _tier(self, key: str) -> CacheStore:
        for tier in self.tiers:
            if tier.contains(key):
                return tier
        raise StoreError(f"{self.name}: no tier holds key {key[:12]}… ({', '.join(t.name for t in self.tiers)})")

    def contains(self, key: str) -> bool:
        return any(tier.contains(key) for tier in self.tiers)

    def __contains__(self, key: str) -> bool:
        return self.contains(key)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for tier in reversed(self.tiers) for k in tier.keys()))

    def __len__(self) -> int:
        return len(self.keys())

    def find(self, key: str, *, e_layers: Iterable[int] = (), whole: bool = False, device=None) -> ContextCache | None:
        """The stored cache under ``key`` if it holds E at ``e_layers`` (and, with ``whole``, every token's K/V of
        each layer); None when absent, short of either, or failing verification (never served)."""
        try:
            if not self.contains(key):
                return None
            info = self.info(key)
            if not set(e_layers) <= set(info.hidden_layers) or (whole and any(info.held_from)):
                return None
            return self.get(key, device)
        except CacheFormatError as err:
            log.warning("a stored cache failed verification and is read as absent: %s", err)
            self.rejected += 1
            return None

    def put(self, cache: ContextCache, key: str | None = None) -> str:
        """Store ``cache`` (through every tier, or the fastest only), keeping the E layers of a stored older copy."""
        key = checked_key(cache, key)
        older = self.find(key)
        if older is not None:
            cache.hidden = {**older.hidden, **cache.hidden}
        for tier in self.tiers if self.write_through else self.tiers[:1]:
            tier.put(cache, key)
        return key

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

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
