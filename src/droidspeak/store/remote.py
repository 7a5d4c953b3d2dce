"""Remote tier: the caches live in another process (the sender's, on this host or another) and travel layer by
layer over torch.distributed point-to-point messages — NCCL between GPUs, gloo between CPU processes.

The sender side runs ``CacheServer(store).serve(peer)`` over any local store; the receiver side uses
``RemoteStore(server_rank)``, which answers the same CacheStore interface, so a pipelined prefill reads E[s]
first and then the reused layers' K/V one message at a time. Both sides must already be in one process group
(``torch.distributed.init_process_group``); nothing here opens sockets of its own.

Messages: a request is 8 int64 ``[op, arg, key as 4 words, 0, 0]``; a reply is ``[status, count]`` then, per
tensor, a wire header (dtype, rank, shape) and the raw bytes. Payloads travel as bytes, so any dtype works on
any backend. A server given a lossy transfer codec (droidspeak.codec) sends each K, V and E as that codec's parts;
the receiver learns the codec from the cache's info and decodes on arrival.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.distributed as dist

from droidspeak.codec import Encoded, get_codec
from droidspeak.engine.cache import ContextCache
from droidspeak.errors import CacheFormatError
from droidspeak.store.base import CacheInfo, CacheStore, StoreError, checked_key
from droidspeak.store.serde import HEADER_LEN, WIRE_DTYPES, wire_empty, wire_header

OP_CONTAINS, OP_INFO, OP_TOKENS, OP_LAYER, OP_HIDDEN, OP_PUT, OP_REMOVE, OP_KEYS, OP_CLOSE = range(1, 10)
REQUEST_LEN = 8
OK, ERROR = 0, 1


def _key_words(key: str) -> torch.Tensor:
    raw = bytes.fromhex(key)
    if len(raw) != 32:
        raise StoreError(f"store keys are sha256 hex digests (64 characters), got {key!r}")
    return torch.from_numpy(np.frombuffer(raw, dtype="<i8").copy())


def _words_key(words: torch.Tensor) -> str:
    return words.numpy().astype("<i8").tobytes().hex()


def _text(value: str) -> torch.Tensor:
    return (
        torch.frombuffer(bytearray(value.encode()), dtype=torch.uint8) if value else torch.zeros(0, dtype=torch.uint8)
    )


def _untext(tensor: torch.Tensor) -> str:
    return bytes(tensor.cpu().numpy().tobytes()).decode()


class _Channel:
    """Tensor messages to one peer: headers first, then payloads as raw bytes, on ``device`` (cuda for NCCL)."""

    def __init__(self, peer: int, device: torch.device, group=None):
        self.peer, self.device, self.group = peer, device, group

    def send(self, tensor: torch.Tensor) -> None:
        dist.send(tensor.to(self.device).contiguous(), self.peer, group=self.group)

    def recv_into(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.recv(tensor, self.peer, group=self.group)
        return tensor

    def send_tensors(self, tensors: list[torch.Tensor], status: int = OK) -> None:
        self.send(torch.tensor([status, len(tensors)], dtype=torch.int64))
        for tensor in tensors:
            self.send(wire_header(tensor))
            if tensor.numel():
                self.send(tensor.detach().contiguous().reshape(-1).view(torch.uint8))

    def recv_tensors(self, device: torch.device | None = None) -> tuple[int, list[torch.Tensor]]:
        status, count = self.recv_into(torch.zeros(2, dtype=torch.int64, device=self.device)).cpu().tolist()
        tensors = []
        for _ in range(count):
            header = self.recv_into(torch.zeros(HEADER_LEN, dtype=torch.int64, device=self.device)).cpu()
            like = wire_empty(header, "meta")
            payload = torch.empty(like.numel() * like.element_size(), dtype=torch.uint8, device=device or self.device)
            if payload.numel():
                self.recv_into(payload)
            tensors.append(payload.view(like.dtype).reshape(like.shape))
        return status, tensors


class CacheServer:
    """Answers a RemoteStore's requests from a local store, until the peer closes (sender side)."""

    def __init__(self, store: CacheStore, *, device: str | torch.device = "cpu", group=None, codec: str = "lossless"):
        self.store, self.device, self.group = store, torch.device(device), group
        self.codec = get_codec(codec)  # how K, V and E cross the wire

    def serve(self, peer: int) -> None:
        channel = _Channel(peer, self.device, self.group)
        while True:
            request = channel.recv_into(torch.zeros(REQUEST_LEN, dtype=torch.int64, device=self.device)).cpu()
            op, arg, key = int(request[0]), int(request[1]), _words_key(request[2:6])
            if op == OP_CLOSE:
                return
            try:
                reply = self._answer(channel, op, arg, key)
            except Exception as err:  # every failure goes back to the client as a message, never kills the loop
                channel.send_tensors([_text(f"{type(err).__name__}: {err}")], status=ERROR)
            else:
                channel.send_tensors(reply)

    def _answer(self, channel: _Channel, op: int, arg: int, key: str) -> list[torch.Tensor]:
        store = self.store
        if op == OP_CONTAINS:
            return [torch.tensor([int(store.contains(key))])]
        if op == OP_REMOVE:
            return [torch.tensor([int(store.remove(key))])]
        if op == OP_KEYS:
            return [_text(",".join(store.keys()))]
        if op == OP_TOKENS:
            return [store.get_tokens(key)]
        if op == OP_LAYER:
            k, v = store.get_layer(key, arg)
            return self._encoded(k, "k") + self._encoded(v, "v")
        if op == OP_HIDDEN:
            return self._encoded(store.get_hidden(key, arg), "e")
        if op == OP_INFO:
            info = store.info(key)
            numbers = [info.num_tokens, info.num_layers, info.kv_heads, info.head_dim, info.hidden_size or -1,
                       WIRE_DTYPES.index(info.dtype), info.nbytes]
            return [torch.tensor(numbers), torch.tensor(info.hidden_layers, dtype=torch.int64), _text(info.sender),
                    _text(json.dumps(info.meta, sort_keys=True)), _text(self.codec.name)]
        if op == OP_PUT:
            status, parts = channel.recv_tensors()
            parts = [p.cpu() for p in parts]
            count = int(parts[0][0])
            tokens, sender, meta, hidden_layers = (
                parts[1],
                _untext(parts[2]),
                json.loads(_untext(parts[3])),
                parts[4].tolist(),
            )
            kv = parts[5 : 5 + 2 * count]
            hidden = parts[5 + 2 * count :]
            cache = ContextCache(tokens, kv[0::2], kv[1::2], dict(zip(hidden_layers, hidden)), sender, meta)
            return [_text(store.put(cache, key))]
        raise StoreError(f"unknown remote store operation {op}")

    def _encoded(self, tensor: torch.Tensor, role: str) -> list[torch.Tensor]:
        """The parts of one tensor as this server's codec sends them (data, then scale and minimum if any)."""
        return list(self.codec.encode(tensor, role).parts.values())


class RemoteStore(CacheStore):
    """The CacheStore interface over a CacheServer in another process (receiver side).

    Bounds and eviction are the server store's; ``device`` is where payloads land (cuda with NCCL: straight into
    the receiver's GPU memory).
    """

    name = "remote store"

    def __init__(self, server_rank: int, *, device: str | torch.device = "cpu", group=None):
        super().__init__(None)
        if not dist.is_available() or not dist.is_initialized():
            raise StoreError("a remote store needs an initialised torch.distributed process group")
        self.device = torch.device(device)
        self._channel = _Channel(server_rank, self.device, group)
        self._infos: dict[str, CacheInfo] = {}

    def _call(self, op: int, key: str | None = None, arg: int = 0, payload: list[torch.Tensor] | None = None):
        self._check_open()
        request = torch.zeros(REQUEST_LEN, dtype=torch.int64)
        request[0], request[1] = op, arg
        if key is not None:
            request[2:6] = _key_words(key)
        self._channel.send(request)
        if payload is not None:
            self._channel.send_tensors(payload)
        status, tensors = self._channel.recv_tensors()
        if status != OK:
            message = _untext(tensors[0])
            error = CacheFormatError if message.startswith("CacheFormatError") else StoreError
            raise error(f"{self.name} (rank {self._channel.peer}): {message}")
        return tensors

    # the server owns the entries: membership, order and eviction are asked for, not kept here
    def contains(self, key: str) -> bool:
        return bool(self._call(OP_CONTAINS, key)[0][0])

    def keys(self) -> list[str]:
        text = _untext(self._call(OP_KEYS)[0])
        return text.split(",") if text else []

    def __len__(self) -> int:
        return len(self.keys())

    def _touch(self, key: str, recent: bool = True) -> None:
        self._check_open()

    def put(self, cache: ContextCache, key: str | None = None) -> str:
        key = checked_key(cache, key)
        layers = sorted(cache.hidden)
        payload = [torch.tensor([cache.num_layers]), cache.token_ids.cpu(), _text(cache.sender),
                   _text(json.dumps(cache.meta, sort_keys=True)), torch.tensor(layers, dtype=torch.int64)]
        payload += [t for kv in zip(cache.keys, cache.values) for t in kv] + [cache.hidden[layer] for layer in layers]
        self._call(OP_PUT, key, payload=payload)
        self._infos.pop(key, None)
        return key

    def remove(self, key: str) -> bool:
        self._infos.pop(key, None)
        return bool(self._call(OP_REMOVE, key)[0][0])

    def _read(self, key: str, device) -> ContextCache:
        info = self.info(key)
        place = (lambda t: t) if device is None else (lambda t: t.to(device))  # noqa: E731
        layers = [self._read_layer(key, layer, device) for layer in range(info.num_layers)]
        return ContextCache(
            token_ids=self._read_tokens(key),
            keys=[place(k) for k, _ in layers],
            values=[place(v) for _, v in layers],
            hidden={layer: self._read_hidden(key, layer, device) for layer in info.hidden_layers},
            sender=info.sender,
            meta=info.meta,
        )

    def _read_layer(self, key: str, layer: int, device):
        info = self.info(key)
        parts = self._call(OP_LAYER, key, layer)
        shape = (info.kv_heads, info.num_tokens - info.held_from[layer], info.head_dim)
        half = len(parts) // 2
        k, v = self._decoded(info, parts[:half], shape, "k"), self._decoded(info, parts[half:], shape, "v")
        return (k, v) if device is None else (k.to(device), v.to(device))

    def _read_hidden(self, key: str, layer: int, device):
        info = self.info(key)
        e = self._decoded(info, self._call(OP_HIDDEN, key, layer), (info.num_tokens, info.hidden_size), "e")
        return e if device is None else e.to(device)

    @staticmethod
    def _decoded(info: CacheInfo, parts: list[torch.Tensor], shape: tuple[int, ...], role: str) -> torch.Tensor:
        codec = get_codec(info.codec)
        if codec.lossless:
            return parts[0]
        if len(parts) != len(codec.parts):
            raise CacheFormatError(
                f"a {codec.name} {role} tensor arrived in {len(parts)} parts, not {len(codec.parts)}"
            )
        return codec.decode(Encoded(dict(zip(codec.parts, parts)), shape, info.dtype), role)

    def _read_tokens(self, key: str) -> torch.Tensor:
        return self._call(OP_TOKENS, key)[0].cpu()

    def _info(self, key: str) -> CacheInfo:
        if key not in self._infos:
            numbers, hidden_layers, sender, meta, codec = self._call(OP_INFO, key)
            tokens, layers, kv_heads, head_dim, hidden, dtype, nbytes = numbers.cpu().tolist()
            self._infos[key] = CacheInfo(key, _untext(sender), tokens, layers, kv_heads, head_dim,
                                         None if hidden < 0 else hidden, tuple(hidden_layers.cpu().tolist()),
                                         WIRE_DTYPES[dtype], nbytes, json.loads(_untext(meta)), codec=_untext(codec))
        return self._infos[key]

    def _write(self, key, cache) -> None:  # put() is overridden: the server writes
        raise AssertionError("unreachable")

    def _delete(self, key) -> None:
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Tell the server to stop serving this peer (its store stays open on its side)."""
        if not self._closed:
            request = torch.zeros(REQUEST_LEN, dtype=torch.int64)
            request[0] = OP_CLOSE
            self._channel.send(request)
        super().close()
