"""Where sender caches live: GPU memory, host (pinned) memory, disk, a remote sender process — one interface.

``base`` (the interface: ``CacheStore``, ``StoredCache``), ``memory_tier`` (GPU and host memory), ``disk`` (one
safetensors file per cache), ``remote`` (another process's caches, over torch.distributed), ``tiered`` (tiers stacked
fastest first) and ``serde`` (a cache as bytes, through a transfer codec).

    store = host_store(capacity_bytes=8 << 30)          # or gpu_store / DiskStore(root) / RemoteStore(rank)
    key = store.put(cache)                              # sha256(sender fingerprint, token ids)
    k, v = store.get_layer(key, 12)                     # one layer at a time
    prefilled = pipelined_prefill(receiver, [store.view(key)], "recompute:8-15")
"""

from droidspeak.store.base import CacheInfo, CacheStore, StoredCache, StoreError
from droidspeak.store.disk import DiskStore
from droidspeak.store.memory_tier import MemoryStore, gpu_store, host_store
from droidspeak.store.remote import CacheServer, RemoteStore
from droidspeak.store.serde import SafetensorsSerde
from droidspeak.store.tiered import TieredStore

__all__ = [
    "CacheInfo", "CacheServer", "CacheStore", "DiskStore", "MemoryStore", "RemoteStore", "SafetensorsSerde",
    "StoreError", "StoredCache", "TieredStore", "gpu_store", "host_store",
]
