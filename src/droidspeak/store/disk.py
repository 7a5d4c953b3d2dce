"""Disk tier: one safetensors file per cache, named by its key, read layer by layer and verified on every read.

A file that is corrupt, truncated, or holds another cache than its name says is rejected with a
CacheFormatError, dropped from the store and renamed ``*.corrupt`` (kept for inspection, never served again).
The LRU order survives restarts through file modification times.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from droidspeak.engine.cache import TORCH_DTYPES, CacheFile, ContextCache, cache_key
from droidspeak.errors import CacheFormatError
from droidspeak.store.base import CacheInfo, CacheStore
from droidspeak.store.serde import SafetensorsSerde


class DiskStore(CacheStore):
    """Caches as files under ``root``; ``pin`` page-locks what is read (when CUDA is present) for async copies."""

    name = "disk store"

    def __init__(self, root: str | os.PathLike, *, capacity_bytes: int | None = None, pin: bool = False, serde=None):
        super().__init__(capacity_bytes)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.serde = serde or SafetensorsSerde()
        self.pin = bool(pin and torch.cuda.is_available())
        self._open: dict[str, CacheFile] = {}
        self._infos: dict[str, CacheInfo] = {}
        for path in sorted(self.root.glob("*" + self.serde.suffix), key=lambda p: p.stat().st_mtime):
            self._lru[path.name.removesuffix(self.serde.suffix)] = path.stat().st_size

    def path(self, key: str) -> Path:
        return self.root / f"{key}{self.serde.suffix}"

    # ---- verified access ---------------------------------------------------------------------------------
    def _file(self, key: str) -> CacheFile:
        if key not in self._open:
            try:
                handle = self.serde.open(self.path(key))
                found = cache_key(handle.sender, handle.token_ids())
                if found != key:
                    raise CacheFormatError(
                        f"{self.path(key)}: holds the cache {found[:12]}…, "
                        "not the one its name says (renamed or mixed up)"
                    )
            except CacheFormatError as err:
                self._reject(key)
                raise CacheFormatError(f"{err}; dropped from the disk store") from None
            self._open[key] = handle
        return self._open[key]

    def _tensor(self, key: str, name: str, device) -> torch.Tensor:
        handle = self._file(key)
        try:
            tensor = handle.tensor(name)
        except CacheFormatError as err:
            self._reject(key)
            raise CacheFormatError(f"{err}; dropped from the disk store") from None
        if self.pin and (device is None or torch.device(device).type == "cpu"):
            tensor = tensor.pin_memory()
        return tensor if device is None else tensor.to(device)

    def _reject(self, key: str) -> None:
        self._open.pop(key, None)
        self._infos.pop(key, None)
        self._lru.pop(key, None)
        path = self.path(key)
        if path.exists():
            os.replace(path, path.with_name(path.name + ".corrupt"))

    # ---- tier hooks --------------------------------------------------------------------------------------
    def _size(self, cache: ContextCache) -> int:
        return self.serde.nbytes(cache)

    def _write(self, key: str, cache: ContextCache) -> None:
        self.serde.dump(cache, self.path(key))

    def _read(self, key: str, device) -> ContextCache:
        return self._file(key).read(device, tensor=lambda name, dev: self._tensor(key, name, dev))

    def _read_layer(self, key: str, layer: int, device):
        return self._tensor(key, f"k.{layer}", device), self._tensor(key, f"v.{layer}", device)

    def _read_hidden(self, key: str, layer: int, device):
        return self._tensor(key, f"e.{layer}", device)

    def _read_tokens(self, key: str) -> torch.Tensor:
        return self._file(key).token_ids()

    def _info(self, key: str) -> CacheInfo:
        if key not in self._infos:
            handle = self._file(key)
            k_shape = handle.shape("k.0")
            e_name = f"e.{handle.hidden_layers[0]}" if handle.hidden_layers else None
            self._infos[key] = CacheInfo(
                key=key,
                sender=handle.sender,
                num_tokens=handle.num_tokens,
                num_layers=handle.num_layers,
                kv_heads=int(k_shape[0]),
                head_dim=int(k_shape[2]),
                hidden_size=None if e_name is None else int(handle.shape(e_name)[-1]),
                hidden_layers=tuple(handle.hidden_layers),
                dtype=TORCH_DTYPES.get(handle.dtype("k.0"), torch.float32),
                nbytes=self._lru.get(key, 0),
                meta=handle.meta,
            )
        return self._infos[key]

    def _forget(self, key: str) -> None:
        self._open.pop(key, None)
        self._infos.pop(key, None)

    def _delete(self, key: str) -> None:
        self._forget(key)
        self.path(key).unlink(missing_ok=True)

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        super().close()

