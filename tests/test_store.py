"""Cache store tiers: keys, bounded LRU eviction, layer-by-layer reads, corruption rejection, the remote tier."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from droidspeak.engine.cache import ContextCache, cache_key
from droidspeak.errors import CacheFormatError, CacheMismatchError
from droidspeak.store import DiskStore, MemoryStore, RemoteStore, StoreError, TieredStore, gpu_store, host_store

TESTS = Path(__file__).parent


def make_cache(seed: int = 0, layers: int = 4, tokens: int = 10, kv_heads: int = 2, head_dim: int = 8,
               hidden: int = 16, dtype=torch.float32, sender: str = "s" * 64) -> ContextCache:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    return ContextCache(
        token_ids=torch.randint(0, 100, (tokens,), generator=g),
        keys=[rand(kv_heads, tokens, head_dim) for _ in range(layers)],
        values=[rand(kv_heads, tokens, head_dim) for _ in range(layers)],
        hidden={1: rand(tokens, hidden), 3: rand(tokens, hidden)},
        sender=sender,
        meta={"sender_name": "tiny"},
    )


def assert_same(a: ContextCache, b: ContextCache) -> None:
    assert torch.equal(a.token_ids, b.token_ids) and a.sender == b.sender
    for x, y in zip(a.keys + a.values, b.keys + b.values):
        assert x.dtype == y.dtype and torch.equal(x, y)
    assert sorted(a.hidden) == sorted(b.hidden)
    assert all(torch.equal(a.hidden[layer], b.hidden[layer]) for layer in a.hidden)


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    s = host_store() if request.param == "memory" else DiskStore(tmp_path / "caches")
    yield s
    s.close()


def test_keys_are_sha256_of_sender_and_tokens(store):
    cache = make_cache()
    key = store.put(cache)
    assert key == cache_key(cache.sender, cache.token_ids) and len(key) == 64
    assert store.contains(key) and key in store and store.keys() == [key]
    with pytest.raises(CacheMismatchError):
        store.put(cache, key="0" * 64)


def test_roundtrip_whole_and_layer_by_layer(store):
    cache = make_cache(dtype=torch.bfloat16)
    key = store.put(cache)
    assert_same(store.get(key), cache)
    for layer in range(cache.num_layers):
        k, v = store.get_layer(key, layer)
        assert torch.equal(k, cache.keys[layer]) and torch.equal(v, cache.values[layer])
    assert torch.equal(store.get_hidden(key, 3), cache.hidden[3])
    assert torch.equal(store.get_tokens(key), cache.token_ids)
    info = store.info(key)
    assert (info.num_layers, info.num_tokens, info.kv_heads, info.head_dim, info.hidden_size) == (4, 10, 2, 8, 16)
    assert info.hidden_layers == (1, 3) and info.dtype == torch.bfloat16
    view = store.view(key)
    assert torch.equal(view.kv(2)[0], cache.keys[2]) and torch.equal(view.token_ids, cache.token_ids)


def test_remove_and_missing_key(store):
    key = store.put(make_cache())
    assert store.remove(key) and not store.contains(key) and not store.remove(key)
    with pytest.raises(StoreError, match="no cache under key"):
        store.get_layer(key, 0)


def test_bounded_lru_eviction(store):
    caches = [make_cache(seed) for seed in range(3)]
    size = caches[0].nbytes()
    store.capacity_bytes = 2 * size
    k0, k1 = store.put(caches[0]), store.put(caches[1])
    store.get_layer(k0, 0)  # k0 becomes most recently used, so k1 is the one evicted
    k2 = store.put(caches[2])
    assert store.contains(k0) and store.contains(k2) and not store.contains(k1)
    assert store.evictions == 1 and store.nbytes <= 2 * size
    with pytest.raises(StoreError, match="does not fit"):
        store.put(make_cache(tokens=100))


def test_gpu_tier_needs_cuda():
    if torch.cuda.is_available():
        s = gpu_store()
        key = s.put(make_cache())
        assert s.get_layer(key, 0)[0].is_cuda
    else:
        with pytest.raises(StoreError, match="needs CUDA"):
            gpu_store()
        assert not host_store().pinned  # pinning needs a CUDA runtime; the host tier still works


def test_disk_lru_survives_reopen(tmp_path):
    first = DiskStore(tmp_path)
    keys = [first.put(make_cache(seed)) for seed in range(2)]
    os.utime(first.path(keys[0]), (1, 1))  # make keys[0] the oldest on disk
    reopened = DiskStore(tmp_path)
    assert reopened.keys() == keys and reopened.contains(keys[1])
    assert_same(reopened.get(keys[1]), make_cache(1))


def _flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_cache_stored_again_is_replaced_never_missing_for_another_process(tmp_path, monkeypatch):
    """Two sweep jobs share one disk tier: while one stores a context again (with more E layers), the other, whose
    index lists it, must find the old file or the new one — never none (a cold `make demo` once read it gone)."""
    writer, cache = DiskStore(tmp_path), make_cache(0)
    key = writer.put(cache)
    reader = DiskStore(tmp_path)  # another process: its index comes from the folder
    dump = writer.serde.dump

    def dump_while_read(richer, path):
        assert_same(reader.get(key), cache)  # mid-replacement, the other process still reads a whole cache
        return dump(richer, path)

    monkeypatch.setattr(writer.serde, "dump", dump_while_read)
    richer = make_cache(0)
    richer.hidden[2] = torch.ones_like(richer.hidden[1])
    writer.put(richer, key)
    assert 2 in DiskStore(tmp_path).get(key).hidden and writer.nbytes == writer.serde.nbytes(richer)


def test_disk_rejects_flipped_byte(tmp_path):
    store = DiskStore(tmp_path)
    key = store.put(make_cache())
    _flip_byte(store.path(key), 5)  # inside the last tensor's data
    with pytest.raises(CacheFormatError, match="checksum"):
        store.get(key)
    assert not store.contains(key)
    assert store.path(key).with_name(store.path(key).name + ".corrupt").exists()
    with pytest.raises(StoreError):
        store.get(key)  # never served again


def test_disk_rejects_flipped_byte_on_layer_read(tmp_path):
    store = DiskStore(tmp_path)
    cache = make_cache()
    key = store.put(cache)
    store.get_layer(key, 0)  # file already open when the damage happens
    _flip_byte(store.path(key), 5)
    store._open.clear()  # a fresh handle, as after a restart
    hits = []
    with pytest.raises(CacheFormatError):
        for layer in range(4):
            hits.append(store.get_layer(key, layer))
        for layer in (1, 3):
            store.get_hidden(key, layer)
    assert not store.contains(key)


def test_disk_rejects_truncated_file(tmp_path):
    store = DiskStore(tmp_path)
    key = store.put(make_cache())
    path = store.path(key)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CacheFormatError):
        store.get_layer(key, 0)
    assert not store.contains(key)


def test_disk_rejects_file_under_wrong_name(tmp_path):
    store = DiskStore(tmp_path)
    a, b = make_cache(0), make_cache(1)
    key_a, key_b = store.put(a), store.put(b)
    os.replace(store.path(key_b), store.path(key_a))
    store._lru.pop(key_b)
    with pytest.raises(CacheFormatError, match="not the one its name says"):
        store.get_layer(key_a, 0)


def test_disk_rejects_garbage(tmp_path):
    (tmp_path / ("a" * 64 + ".safetensors")).write_bytes(b"not a cache at all")
    store = DiskStore(tmp_path)
    with pytest.raises(CacheFormatError, match="not a readable safetensors cache"):
        store.info("a" * 64)


def test_tiered_promotes_hits(tmp_path):
    fast, slow = MemoryStore("cpu", capacity_bytes=10**6), DiskStore(tmp_path)
    cache = make_cache()
    key = slow.put(cache)
    tiered = TieredStore([fast, slow])
    assert tiered.contains(key) and not fast.contains(key)
    assert torch.equal(tiered.get_layer(key, 1)[1], cache.values[1])
    assert_same(tiered.get(key), cache)
    assert fast.contains(key)



def test_tiered_writes_through_every_tier_or_only_the_fastest(tmp_path):
    cache = make_cache()
    through = TieredStore([MemoryStore("cpu", pin=False), DiskStore(tmp_path / "a")])
    key = through.put(cache)
    assert all(tier.contains(key) for tier in through.tiers)
    fastest = TieredStore([MemoryStore("cpu", pin=False), DiskStore(tmp_path / "b")], write_through=False)
    fastest.put(cache)
    assert fastest.tiers[0].contains(key) and not fastest.tiers[1].contains(key)


def test_tiered_find_serves_only_a_cache_that_holds_what_the_reader_needs(tmp_path):
    store = TieredStore([MemoryStore("cpu", pin=False), DiskStore(tmp_path)])
    cache = make_cache()  # E at layers 1 and 3, every token's K/V
    key = store.put(cache)
    assert store.find("f" * 64) is None
    assert_same(store.find(key, e_layers=[1, 3], whole=True), cache)
    assert store.find(key, e_layers=[2]) is None  # short of an E layer the plan needs: prefill again
    windowed = make_cache(seed=1)
    windowed.meta["sliding_window"], windowed.meta["sliding_layers"] = 4, [0, 2]  # layers 0 and 2 keep a window
    for layer in (0, 2):  # of window - 1 = 3 tokens
        windowed.keys[layer], windowed.values[layer] = windowed.keys[layer][:, -3:], windowed.values[layer][:, -3:]
    assert store.find(store.put(windowed), whole=True) is None and store.find(windowed.key) is not None


def test_tiered_put_keeps_the_e_layers_of_the_stored_copy(tmp_path):
    store = TieredStore([MemoryStore("cpu", pin=False), DiskStore(tmp_path)])
    first = make_cache()
    key = store.put(first)
    again = make_cache()
    again.hidden = {2: torch.zeros_like(first.hidden[1])}  # the same context, prefilled for another plan
    store.put(again, key)
    for tier in store.tiers:
        assert sorted(tier.get(key).hidden) == [1, 2, 3]


def test_tiered_find_reads_a_corrupt_copy_as_absent_and_counts_it(tmp_path):
    disk = DiskStore(tmp_path)
    key = disk.put(make_cache())
    data = bytearray(disk.path(key).read_bytes())
    data[-10] ^= 0xFF
    disk.path(key).write_bytes(bytes(data))
    store = TieredStore([MemoryStore("cpu", pin=False), disk])
    assert store.find(key) is None and store.rejected == 1 and not store.contains(key)


# ---- remote tier over torch.distributed (gloo, two local processes) ----------------------------------------
SERVER = textwrap.dedent(
    """
    import sys, datetime, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_store import make_cache
    from droidspeak.store import CacheServer, MemoryStore
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=2,
                            timeout=datetime.timedelta(seconds=30))
    store = MemoryStore("cpu", capacity_bytes=3 * make_cache().nbytes())
    store.put(make_cache(7, dtype=__import__("torch").bfloat16))  # the sender's own cache
    CacheServer(store, codec={codec!r}).serve(peer=1)
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _remote(codec: str = "lossless"):
    """(RemoteStore, server process): a CacheServer in a second process, sending through ``codec``."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(TESTS), port=port, codec=codec)], env=env)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2,
                                timeout=timedelta(seconds=30))
        yield RemoteStore(server_rank=0), server
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        if server.poll() is None:
            server.kill()


@pytest.mark.slow
def test_remote_tier_over_gloo():
    with _remote() as (remote, server):
        sender_cache = make_cache(7, dtype=torch.bfloat16)
        key = sender_cache.key
        assert remote.contains(key) and remote.keys() == [key]
        info = remote.info(key)
        assert info.dtype == torch.bfloat16 and info.hidden_layers == (1, 3) and info.num_layers == 4
        # layer-by-layer fetch, E first, as the pipelined prefill reads it
        assert torch.equal(remote.get_hidden(key, 3), sender_cache.hidden[3])
        for layer in range(4):
            k, v = remote.get_layer(key, layer)
            assert torch.equal(k, sender_cache.keys[layer]) and torch.equal(v, sender_cache.values[layer])
        assert_same(remote.get(key), sender_cache)
        # the receiver can push too; the server's bounded LRU store evicts
        pushed = [make_cache(seed) for seed in range(3)]
        keys = [remote.put(c) for c in pushed]
        assert not remote.contains(key) and all(remote.contains(k) for k in keys)
        assert_same(remote.get(keys[1]), pushed[1])
        with pytest.raises(StoreError, match="no cache under key"):
            remote.get_layer(key, 0)  # errors cross the wire as messages; the server keeps serving
        assert remote.remove(keys[0]) and not remote.contains(keys[0])
        remote.close()
        assert server.wait(timeout=30) == 0


@pytest.mark.slow
def test_a_remote_server_sends_through_its_codec_and_the_receiver_decodes():
    from droidspeak.codec import get_codec

    with _remote("int4") as (remote, server):
        sender_cache = make_cache(7, dtype=torch.bfloat16)
        key = sender_cache.key
        assert remote.info(key).codec == "int4"
        codec = get_codec("int4")
        k, v = remote.get_layer(key, 2)
        assert k.dtype == torch.bfloat16 and torch.equal(k, codec.roundtrip(sender_cache.keys[2], "k")[0])
        assert torch.equal(v, codec.roundtrip(sender_cache.values[2], "v")[0])
        assert torch.equal(remote.get_hidden(key, 3), codec.roundtrip(sender_cache.hidden[3], "e")[0])
        remote.close()
        assert server.wait(timeout=30) == 0
