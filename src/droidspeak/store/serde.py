"""Serde: how a cache becomes bytes for a tier that cannot hold tensors (disk) or crosses a process (remote).

Two serdes, independent of where the bytes go:
- ``SafetensorsSerde`` writes the project's one on-disk format (droidspeak.engine.cache: safetensors, a header with
  per-tensor blake2b checksums, written atomically), at full precision or through a lossy transfer codec, and
  opens files for verified layer-by-layer reads.
- ``wire_header`` / ``wire_tensor`` describe one tensor (dtype code, rank, shape) as a small int64 tensor, so a
  peer can allocate the receive buffer before the payload arrives over torch.distributed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from droidspeak.codec import get_codec
from droidspeak.engine.cache import CacheFile, ContextCache
from droidspeak.errors import CacheFormatError

# ---- disk -------------------------------------------------------------------------------------------------


class SafetensorsSerde:
    """The droidspeak cache file format; every read is checked against the header's checksums.

    ``codec`` (droidspeak.codec: lossless, bf16, int8, int4) is how K, V and E are written; reads decode whatever
    codec a file names, so one store can hold files of several."""

    suffix = ".safetensors"

    def __init__(self, codec: str = "lossless"):
        self.codec = get_codec(codec).name

    def dump(self, cache: ContextCache, path: str | os.PathLike) -> Path:
        return cache.save(path, codec=self.codec)

    def nbytes(self, cache: ContextCache) -> int:
        """The tensor bytes ``dump`` writes for ``cache`` (its K, V and E through the codec)."""
        return get_codec(self.codec).cache_nbytes(cache)

    def open(self, path: str | os.PathLike) -> CacheFile:
        return CacheFile(path)

    def load(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> ContextCache:
        return ContextCache.load(path, device)


# ---- wire -------------------------------------------------------------------------------------------------
WIRE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.float64, torch.int32, torch.uint8)
MAX_RANK = 6
HEADER_LEN = 2 + MAX_RANK  # dtype code, rank, shape padded with zeros


def wire_header(tensor: torch.Tensor) -> torch.Tensor:
    """[dtype code, rank, *shape, 0...] as int64: what the receiving side needs to allocate the buffer."""
    if tensor.dtype not in WIRE_DTYPES:
        raise CacheFormatError(f"dtype {tensor.dtype} cannot be sent; supported: {WIRE_DTYPES}")
    if tensor.dim() > MAX_RANK:
        raise CacheFormatError(f"tensors of rank {tensor.dim()} > {MAX_RANK} cannot be sent")
    header = torch.zeros(HEADER_LEN, dtype=torch.int64)
    header[0] = WIRE_DTYPES.index(tensor.dtype)
    header[1] = tensor.dim()
    header[2 : 2 + tensor.dim()] = torch.tensor(tensor.shape, dtype=torch.int64)
    return header


def wire_empty(header: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """An uninitialised tensor shaped as ``header`` describes (the receive buffer)."""
    code, rank = int(header[0]), int(header[1])
    if not 0 <= code < len(WIRE_DTYPES) or not 0 <= rank <= MAX_RANK:
        raise CacheFormatError(f"malformed tensor header {header.tolist()}")
    shape = [int(s) for s in header[2 : 2 + rank]]
    if any(s < 0 for s in shape):
        raise CacheFormatError(f"malformed tensor header {header.tolist()}")
    return torch.empty(shape, dtype=WIRE_DTYPES[code], device=device)
