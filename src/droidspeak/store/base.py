"""The store interface: where sender caches live, and how a receiver reads them layer by layer.

Every tier (GPU memory, host pinned memory, disk, a remote sender process) answers the same small interface,
after LMCache v0: ``contains / put / get / get_layer / get_hidden / remove / close``. Keys are
``droidspeak.engine.cache.cache_key(sender digest, token ids)`` (sha256), never Python's ``hash()``. Capacity is a byte
budget; the least recently used entry is evicted first. A pipelined prefill reads through ``StoredCache``, a lazy
view that fetches one layer at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from droidspeak.engine.cache import ContextCache, held_from
from droidspeak.errors import CacheMismatchError, DroidSpeakError


class StoreError(DroidSpeakError, KeyError):
    """A key is missing, an entry does not fit the store, or the store is closed."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class CacheInfo:
    """Shape facts of a stored cache: what a receiver checks before fetching any layer."""

    key: str
    sender: str
    num_tokens: int
    num_layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None  # None when no E is stored
    hidden_layers: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    meta: dict = field(default_factory=dict, compare=False)
    codec: str = "lossless"  # how K, V and E reach the reader (a remote server's transfer codec)

    @property
    def held_from(self) -> tuple[int, ...]:
        """Per layer, the first position whose K/V are stored (a sliding layer may keep only its window)."""
        return held_from(self.num_tokens, self.num_layers, self.meta)

    @classmethod
    def of(cls, cache: ContextCache, key: str | None = None) -> "CacheInfo":
        kv_heads, _, head_dim = cache.keys[0].shape
        hidden = next(iter(cache.hidden.values()), None)
        return cls(
            key=key or cache.key,
            sender=cache.sender,
            num_tokens=cache.num_tokens,
            num_layers=cache.num_layers,
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            hidden_size=None if hidden is None else int(hidden.shape[-1]),
            hidden_layers=tuple(sorted(cache.hidden)),
            dtype=cache.keys[0].dtype,
            nbytes=cache.nbytes(),
            meta=dict(cache.meta),
        )


def checked_key(cache: ContextCache, key: str | None) -> str:
    """The key a cache is stored under; a caller-supplied key must be the cache's own."""
    own = cache.key
    if key is not None and key != own:
        raise CacheMismatchError(
            f"key {key[:12]}… is not this cache's key {own[:12]}… (sha256 of sender fingerprint and token ids)"
        )
    return own


class CacheStore(ABC):
    """A bounded, LRU-evicted map from cache keys to sender caches, readable layer by layer."""

    name = "store"

    def __init__(self, capacity_bytes: int | None = None):
        self.capacity_bytes = capacity_bytes
        self._lru: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recently used first
        self._closed = False
        self.evictions = 0
        self.peak_bytes = 0  # the most this tier ever held: what a capacity bound is checked against

    # ---- the interface ----------------------------------------------------------------------------------
    def contains(self, key: str) -> bool:
        return key in self._lru

    def __contains__(self, key: str) -> bool:
        return self.contains(key)

    def __len__(self) -> int:
        return len(self._lru)

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._lru)

    @property
    def nbytes(self) -> int:
        return sum(self._lru.values())

    def put(self, cache: ContextCache, key: str | None = None) -> str:
        """Store ``cache`` (evicting least recently used entries to make room); returns its key."""
        self._check_open()
        key = checked_key(cache, key)
        size = self._size(cache)
        if self.capacity_bytes is not None and size > self.capacity_bytes:
            raise StoreError(
                f"{self.name}: a cache of {size / 2**20:.1f} MiB does not fit a capacity of "
                f"{self.capacity_bytes / 2**20:.1f} MiB"
            )
        if key in self._lru:  # replaced, not removed first: another process reading a shared disk tier must never
            del self._lru[key]  # find the file gone (a disk file is replaced atomically by _write)
            self._forget(key)
        while self.capacity_bytes is not None and self.nbytes + size > self.capacity_bytes:
            victim = next(iter(self._lru))
            self.remove(victim)
            self.evictions += 1
        self._write(key, cache)
        self._lru[key] = size
        self.peak_bytes = max(self.peak_bytes, self.nbytes)
        return key

    def get(self, key: str, device: str | torch.device | None = None) -> ContextCache:
        """The whole cache (every tensor verified where the tier can be corrupted)."""
        self._touch(key)
        return self._read(key, device)

    def get_layer(
        self, key: str, layer: int, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer, [kv_heads, tokens, head_dim] each."""
        self._touch(key)
        return self._read_layer(key, layer, device)

    def get_hidden(self, key: str, layer: int, device: str | torch.device | None = None) -> torch.Tensor:
        """E[layer], the sender's hidden state entering ``layer``, [tokens, hidden]."""
        self._touch(key)
        return self._read_hidden(key, layer, device)

    def get_tokens(self, key: str) -> torch.Tensor:
        """The context token ids the cache was computed for (int64, CPU)."""
        self._touch(key, recent=False)
        return self._read_tokens(key)

    def info(self, key: str) -> CacheInfo:
        self._touch(key, recent=False)
        return self._info(key)

    def view(self, key: str) -> "StoredCache":
        """A lazy, layer-by-layer view of one entry (what the pipelined prefill consumes)."""
        return StoredCache(self, key)

    def remove(self, key: str) -> bool:
        if key not in self._lru:
            return False
        del self._lru[key]
        self._delete(key)
        return True

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- for tiers ----------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.name} is closed")

    def _touch(self, key: str, recent: bool = True) -> None:
        self._check_open()
        if key not in self._lru:
            raise StoreError(f"{self.name}: no cache under key {key[:12]}…")
        if recent:
            self._lru.move_to_end(key)

    def _size(self, cache: ContextCache) -> int:
        """Bytes ``cache`` takes in this tier (a tier that encodes it, e.g. through a lossy codec, says less)."""
        return cache.nbytes()

    @abstractmethod
    def _write(self, key: str, cache: ContextCache) -> None: ...

    @abstractmethod
    def _read(self, key: str, device) -> ContextCache: ...

    @abstractmethod
    def _read_layer(self, key: str, layer: int, device) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def _read_hidden(self, key: str, layer: int, device) -> torch.Tensor: ...

    @abstractmethod
    def _read_tokens(self, key: str) -> torch.Tensor: ...

    @abstractmethod
    def _info(self, key: str) -> CacheInfo: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    def _forget(self, key: str) -> None:
        """Drop what this tier keeps of ``key`` besides its stored bytes (before _write replaces them)."""
        self._delete(key)


class StoredCache:
    """One stored context, read lazily: ``kv(layer)`` and ``hidden(layer)`` each fetch a single tensor pair."""

    def __init__(self, store: CacheStore, key: str):
        self.store, self.key = store, key
        self.info = store.info(key)
        self._tokens: torch.Tensor | None = None

    @property
    def sender(self) -> str:
        return self.info.sender

    @property
    def num_tokens(self) -> int:
        return self.info.num_tokens

    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    @property
    def token_ids(self) -> torch.Tensor:
        if self._tokens is None:
            self._tokens = self.store.get_tokens(self.key)
        return self._tokens

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.store.get_layer(self.key, layer)

    def hidden(self, layer: int) -> torch.Tensor:
        return self.store.get_hidden(self.key, layer)
