"""ContextCache: what a sender computed for one context, in the form a receiver consumes.

Holds the context token ids, per-layer K/V exactly as the sender's attention consumed them (after RoPE,
shape [kv_heads, tokens, head_dim]), the hidden states entering chosen layers (the E cache, [tokens, hidden]),
and the sender's fingerprint. On disk it is one safetensors file, readable layer by layer, never pickle.

A sliding-window layer keeps what the model's own cache keeps after a prefill: the K/V of the last
``window - 1`` tokens (every later query's window starts inside them). ``meta`` then names the window and those
layers, and :func:`held_from` says where each layer's K/V begin; E is always kept for every token (a recomputed
group needs its whole input).

A cache may also be saved through a lossy transfer codec (droidspeak.codec: bf16, int8, int4): each tensor is then
stored as its codec parts (``k.3``, ``k.3.scale``, ``k.3.min``, each checksummed), the header names the codec and every
tensor's own shape and dtype, and reads decode transparently. Such files are format version 3, so a reader that
predates codecs refuses them instead of serving quantized codes as values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from droidspeak.atomic import replacing
from droidspeak.codec import Encoded, get_codec
from droidspeak.errors import CacheFormatError, CacheMismatchError, CodecError
from droidspeak.faults import fault_point

FORMAT = "droidspeak.context_cache"
FORMAT_VERSION = 2  # 2: sliding layers may hold only their window (version 1 files hold every token)
CODEC_VERSION = 3  # 3: tensors stored through a lossy codec (what version 2 readers must refuse)
READABLE_VERSIONS = ("1", "2", "3")
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def token_digest(token_ids: Sequence[int] | torch.Tensor) -> str:
    """sha256 of the token ids as little-endian int64: stable across processes (never Python's hash())."""
    ids = torch.as_tensor(token_ids, dtype=torch.int64).cpu().contiguous()
    return hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """blake2b of a tensor's raw bytes: lets a reader reject a flipped byte in any single layer."""
    data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest()


def held_from(num_tokens: int, num_layers: int, meta: dict) -> tuple[int, ...]:
    """Per layer, the first context position whose K/V the cache holds: 0, or in a sliding layer of a cache cut to
    its window (``meta["sliding_window"]``, ``meta["sliding_layers"]``) the start of the last ``window - 1``."""
    window, sliding = meta.get("sliding_window"), set(meta.get("sliding_layers", ()))
    start = max(0, num_tokens - (window - 1)) if window else 0
    return tuple(start if layer in sliding else 0 for layer in range(num_layers))


def cache_key(sender_digest: str, token_ids: Sequence[int] | torch.Tensor) -> str:
    """Store key of a context cache: the sender's identity and the exact tokens it read."""
    return hashlib.sha256(f"{sender_digest}:{token_digest(token_ids)}".encode()).hexdigest()


@dataclass
class ContextCache:
    """One context as prefilled by a sender model."""

    token_ids: torch.Tensor  # [T] int64, on CPU
    keys: list[torch.Tensor]  # per layer [kv_heads, T, head_dim]
    values: list[torch.Tensor]
    hidden: dict[int, torch.Tensor]  # layer -> E[layer], [T, hidden]; E[0] is never needed (embeddings suffice)
    sender: str  # the sender's fingerprint digest
    meta: dict = field(default_factory=dict)  # provenance (fingerprint fields, dtype); the window sliding layers keep

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.numel())

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def kv_heads(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def head_dim(self) -> int:
        return int(self.keys[0].shape[-1])

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.hidden))

    @property
    def hidden_size(self) -> int | None:
        e = next(iter(self.hidden.values()), None)
        return None if e is None else int(e.shape[-1])

    @property
    def held_from(self) -> tuple[int, ...]:
        """Per layer, the first position whose K/V are held (0 unless a sliding layer keeps only its window)."""
        return held_from(self.num_tokens, self.num_layers, self.meta)

    @property
    def context_digest(self) -> str:
        return token_digest(self.token_ids)

    @property
    def key(self) -> str:
        return cache_key(self.sender, self.token_ids)

    def nbytes(self) -> int:
        tensors = [*self.keys, *self.values, *self.hidden.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def prefix(self, length: int) -> "ContextCache":
        """The cache of the first ``length`` tokens: exact for causal models, a view, no copy. A sliding layer cut to
        its window holds too little for a prefix that ends before its last window starts: refused."""
        if not 0 < length <= self.num_tokens:
            raise CacheMismatchError(f"prefix length {length} outside 1..{self.num_tokens}")
        have, need = self.held_from, held_from(length, self.num_layers, self.meta)
        if any(h > n for h, n in zip(have, need)):
            raise CacheMismatchError(
                f"its sliding layers hold only the last {self.meta['sliding_window'] - 1} of {self.num_tokens} tokens, "
                f"not the window before token {length}: prefill the sender with full_sliding=True to cut prefixes")
        cut = lambda t, layer: t[:, need[layer] - have[layer] : length - have[layer]]  # noqa: E731
        return ContextCache(
            token_ids=self.token_ids[:length],
            keys=[cut(k, layer) for layer, k in enumerate(self.keys)],
            values=[cut(v, layer) for layer, v in enumerate(self.values)],
            hidden={layer: e[:length] for layer, e in self.hidden.items()},
            sender=self.sender,
            meta=dict(self.meta),
        )

    def to(self, device: torch.device | str) -> "ContextCache":
        return ContextCache(
            token_ids=self.token_ids,
            keys=[k.to(device) for k in self.keys],
            values=[v.to(device) for v in self.values],
            hidden={layer: e.to(device) for layer, e in self.hidden.items()},
            sender=self.sender,
            meta=dict(self.meta),
        )

    def check_for(self, *, sender: str, token_ids: Sequence[int] | torch.Tensor | None = None) -> None:
        """Refuse a cache computed by another sender or for another context."""
        if self.sender != sender:
            raise CacheMismatchError(
                f"cache was computed by sender {self.sender[:12]}… ({self.meta.get('sender_name', '?')}), "
                f"not by this pair's sender {sender[:12]}…; recompute it with this sender"
            )
        if token_ids is not None and token_digest(token_ids) != self.context_digest:
            raise CacheMismatchError(
                f"cache holds another context ({self.num_tokens} tokens, digest {self.context_digest[:12]}…) "
                "than the one requested"
            )

    # ---- disk -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, codec: str = "lossless") -> Path:
        """Write one safetensors file atomically (temp file + rename), so a crash never leaves half a cache; a lossy
        ``codec`` stores every K, V and E through it (droidspeak.codec)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        coder = get_codec(codec)
        tensors = {"token_ids": self.token_ids.contiguous()}
        logical = {}  # name -> [shape, dtype] of what a lossy codec's parts decode to

        def put(name: str, tensor: torch.Tensor) -> None:
            encoded = coder.encode(tensor.contiguous().cpu(), name.split(".")[0])
            for part, data in encoded.parts.items():
                tensors[name if part == "data" else f"{name}.{part}"] = data.contiguous()
            logical[name] = [list(encoded.shape), SAFETENSORS_DTYPES[encoded.dtype]]

        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            put(f"k.{layer}", k)
            put(f"v.{layer}", v)
        for layer, e in self.hidden.items():
            put(f"e.{layer}", e)
        metadata = {
            "format": FORMAT,
            "version": str(FORMAT_VERSION if coder.lossless else CODEC_VERSION),
            "sender": self.sender,
            "context_digest": self.context_digest,
            "num_layers": str(self.num_layers),
            "meta": json.dumps(self.meta, sort_keys=True),
            "checksums": json.dumps({name: tensor_digest(t) for name, t in tensors.items()}),
        }
        if not coder.lossless:
            metadata |= {"codec": coder.name, "tensors": json.dumps(logical, sort_keys=True)}
        with replacing(path) as tmp:  # two processes saving the same context never write into one file
            save_file(tensors, str(tmp), metadata=metadata)
            fault_point("cache_write")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "ContextCache":
        """Read a whole cache file; every tensor is checked against the header's promises."""
        with CacheFile(path) as f:
            return f.read(device)


class CacheFile:
    """A cache file opened for layer-by-layer reads (what a pipelined loader needs)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt")
            metadata = self._file.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise CacheFormatError(f"{self.path}: not a readable safetensors cache ({err})") from None
        if metadata.get("format") != FORMAT:
            raise CacheFormatError(f"{self.path}: not a droidspeak context cache (format={metadata.get('format')!r})")
        if metadata.get("version") not in READABLE_VERSIONS:
            raise CacheFormatError(f"{self.path}: cache format version {metadata.get('version')}, expected one of "
                                   f"{', '.join(READABLE_VERSIONS)}")
        try:  # a torn or hand-edited header (checksums intact) is a corrupt file, set aside like one
            self.sender = str(metadata["sender"])
            self.num_layers = int(metadata["num_layers"])
            self.meta = json.loads(metadata.get("meta", "{}"))
            self._digest = str(metadata["context_digest"])
            self._checksums = json.loads(metadata.get("checksums", "{}"))
            if not isinstance(self.meta, dict) or not isinstance(self._checksums, dict) or self.num_layers < 1:
                raise ValueError("meta and checksums must be JSON objects and num_layers at least 1")
            self.codec = get_codec(metadata.get("codec", "lossless"))
            self._logical = {name: (tuple(shape), dtype) for name, (shape, dtype) in
                             json.loads(metadata.get("tensors", "{}")).items()}
            if any(dtype not in TORCH_DTYPES for _, dtype in self._logical.values()):
                raise ValueError(f"dtypes {sorted({d for _, d in self._logical.values()})}")
        except (KeyError, ValueError, TypeError, CodecError) as err:
            raise CacheFormatError(f"{self.path}: malformed cache header ({type(err).__name__}: {err})") from None
        names = set(self._file.keys())
        expected = {"token_ids"} | {f"{kv}.{i}" for kv in "kv" for i in range(self.num_layers)}
        if not expected <= names:
            raise CacheFormatError(f"{self.path}: truncated cache, missing {sorted(expected - names)[:4]}…")
        self.hidden_layers = sorted(int(n.split(".")[1]) for n in names if n.startswith("e.") and n.count(".") == 1)
        self.num_tokens = self.shape("token_ids")[0]
        try:
            self.held_from = held_from(self.num_tokens, self.num_layers, self.meta)
        except (KeyError, ValueError, TypeError) as err:
            raise CacheFormatError(f"{self.path}: malformed cache header ({type(err).__name__}: {err})") from None
        for layer, start in enumerate(self.held_from):  # a shape the header cannot explain is never padded into place
            for name in (f"k.{layer}", f"v.{layer}"):
                if self.shape(name)[1:2] != (self.num_tokens - start,):
                    raise CacheFormatError(f"{self.path}: {name} has shape {self.shape(name)}, not the "
                                           f"{self.num_tokens - start} tokens its header promises (corrupt file)")

    def token_ids(self) -> torch.Tensor:
        ids = self.tensor("token_ids")
        if token_digest(ids) != self._digest:
            raise CacheFormatError(f"{self.path}: token ids do not match the digest in the header (corrupt file)")
        return ids

    def tensor(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Read one tensor, verified against its checksum before it can be used (decoded, under a lossy codec); a
        K, V or E tensor holding NaN or Inf is refused (a checksum only proves the file is as written)."""
        if name == "token_ids":
            return self._verified(name).to(device)
        if self.codec.lossless:
            decoded = self._verified(name)
        else:
            if name not in self._logical:
                raise CacheFormatError(f"{self.path}: {name} is missing from the codec header (corrupt file)")
            shape, dtype = self._logical[name]
            parts = {part: self._verified(name if part == "data" else f"{name}.{part}") for part in self.codec.parts}
            decoded = self.codec.decode(Encoded(parts, shape, TORCH_DTYPES[dtype]), name.split(".")[0])
            if tuple(decoded.shape) != shape:
                raise CacheFormatError(f"{self.path}: {name} decodes to {tuple(decoded.shape)}, not its header's "
                                       f"{shape}")
        if not bool(torch.isfinite(decoded).all()):
            raise CacheFormatError(f"{self.path}: {name} holds NaN or Inf (a sender that diverged, or a bad write): "
                                   "not served; recompute this cache")
        return decoded.to(device)

    def _verified(self, name: str) -> torch.Tensor:
        try:
            tensor = self._file.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as err:
            raise CacheFormatError(f"{self.path}: cannot read {name} ({err})") from None
        if tensor_digest(tensor) != self._checksums.get(name):
            raise CacheFormatError(f"{self.path}: {name} fails its checksum (corrupt file); recompute this cache")
        return tensor

    def read(self, device: str | torch.device | None = "cpu", tensor=None) -> ContextCache:
        """The whole cache; ``tensor(name, device)`` reads one verified tensor (default: :meth:`tensor`)."""
        tensor = tensor or self.tensor
        return ContextCache(
            token_ids=self.token_ids(),
            keys=[tensor(f"k.{i}", device) for i in range(self.num_layers)],
            values=[tensor(f"v.{i}", device) for i in range(self.num_layers)],
            hidden={layer: tensor(f"e.{layer}", device) for layer in self.hidden_layers},
            sender=self.sender,
            meta=self.meta,
        )

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape from the header (as decoded, under a lossy codec), without reading it."""
        if name in self._logical:
            return self._logical[name][0]
        return tuple(self._file.get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        """A tensor's safetensors dtype code (``F32``, ``BF16``...; as decoded), without reading it."""
        if name in self._logical:
            return self._logical[name][1]
        return self._file.get_slice(name).get_dtype()

    def close(self) -> None:
        self._file = None

    def __enter__(self) -> "CacheFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TORCH_DTYPES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}
