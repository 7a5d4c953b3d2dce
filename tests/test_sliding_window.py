"""Sliding-window layers with contexts several times the window: every oracle of the engine, on a stack where every
layer slides (Mistral) and one of interleaved local and global layers with a RoPE base each (Gemma 3)."""

import pytest
import torch

from droidspeak.engine import receiver_prefill, tail_logits
from droidspeak.engine.loading import from_module
from droidspeak.engine.pipeline import pipelined_prefill
from droidspeak.engine.verify import probe
from droidspeak.errors import DroidSpeakError
from droidspeak.reuse import ReusePair
from droidspeak.store import DiskStore
from helpers import WINDOWED, fine_tune_of, random_ids, tiny_model

ATOL = 1e-5
WINDOW = 6
CONTEXTS, SUFFIX = (23, 9, 16), 4  # up to ~4 windows; the suffix crosses the window too


@pytest.fixture(scope="module", params=sorted(WINDOWED))
def windowed(request):
    base = from_module(tiny_model(request.param, seed=0), name="base")
    assert base.config.sliding_window == WINDOW and "sliding_attention" in base.stack.layer_types
    return base, from_module(fine_tune_of(base.model, seed=1), name="tuned")


def own_logits(model, context, suffix):
    """The model's own forward (its own sliding-window cache and masks) over context + suffix."""
    with torch.no_grad():
        return model.model(input_ids=torch.cat([context, suffix])[None]).logits[0, -suffix.numel():]


def own_greedy(model, context, suffix, n):
    with torch.no_grad():
        out = model.model.generate(
            torch.cat([context, suffix])[None], max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return out[0, context.numel() + suffix.numel():]


@pytest.mark.parametrize(
    "plan", ["recompute:0-5", "recompute:2-3", "recompute:1-1+4-5", "full_reuse", "cacheblend:0.3"]
)
def test_a_model_reusing_its_own_cache_beyond_the_window_is_its_own_prefill(windowed, plan):
    _, model = windowed
    pair = ReusePair(model, model)
    for context, suffix in zip(random_ids(CONTEXTS, seed=1), random_ids([SUFFIX] * 3, seed=2)):
        (cache,) = pair.prefill([context], full_sliding=plan.startswith("cacheblend"))
        logits = tail_logits(model, receiver_prefill(model, [cache], plan), [suffix])[0]
        torch.testing.assert_close(logits, own_logits(model, context, suffix), atol=ATOL, rtol=0)
        answer = pair.generate([cache], [suffix], plan, max_new_tokens=2 * WINDOW)[0]
        assert answer.tolist() == own_greedy(model, context, suffix, 2 * WINDOW).tolist()


def test_recomputing_every_layer_from_another_senders_cache_is_the_receivers_own_prefill(windowed):
    sender, receiver = windowed
    pair = ReusePair(sender, receiver)
    for context, suffix in zip(random_ids(CONTEXTS, seed=3), random_ids([SUFFIX] * 3, seed=4)):
        (cache,) = pair.prefill([context])
        logits = tail_logits(receiver, receiver_prefill(receiver, [cache], "recompute:0-5"), [suffix])[0]
        torch.testing.assert_close(logits, own_logits(receiver, context, suffix), atol=ATOL, rtol=0)
        reused = tail_logits(receiver, receiver_prefill(receiver, [cache], "full_reuse"), [suffix])[0]
        assert not torch.allclose(reused, logits, atol=1e-3)  # the sender's cache really is another model's


def test_contexts_of_one_length_batch_beyond_the_window_and_unequal_ones_are_refused(windowed):
    sender, receiver = windowed
    pair = ReusePair(sender, receiver)
    same = random_ids([20, 20], seed=5)
    suffixes = random_ids([SUFFIX, SUFFIX], seed=6)
    caches = pair.prefill(same)
    batched = pair.generate(caches, suffixes, "recompute:2-3", max_new_tokens=4)
    for i in range(2):
        assert (
            batched[i].tolist()
            == pair.generate([caches[i]], [suffixes[i]], "recompute:2-3", max_new_tokens=4)[0].tolist()
        )
    unequal = pair.prefill(random_ids([20, 9], seed=7))
    with pytest.raises(DroidSpeakError, match="span more than the sliding window .*one context at a time"):
        pair.generate(unequal, suffixes, "recompute:2-3", max_new_tokens=4)
    with pytest.raises(DroidSpeakError, match="span more than the sliding window"):  # tails of two lengths: a gap too
        pair.generate(caches, random_ids([SUFFIX, SUFFIX - 1], seed=6), "recompute:2-3", max_new_tokens=4)
    short = pair.prefill(random_ids([3, 2], seed=8))  # inside the window, padding is harmless
    assert len(pair.generate(short, random_ids([1, 1], seed=9), "full_reuse", max_new_tokens=1)) == 2


def test_pipeline_and_disk_store_give_the_same_cache_beyond_the_window(windowed, tmp_path):
    sender, receiver = windowed
    caches = ReusePair(sender, receiver).prefill(random_ids([23], seed=10))
    store = DiskStore(tmp_path)
    views = [store.view(store.put(c)) for c in caches]
    for plan in ("recompute:2-3", "recompute:0-1+4-5"):
        ours, theirs = pipelined_prefill(receiver, views, plan), receiver_prefill(receiver, caches, plan)
        for x, y in zip(ours.cache.layers, theirs.cache.layers):
            assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)


def test_the_probe_passes_beyond_the_window(windowed):
    for model in windowed:
        checked = probe(model)
        assert not checked.failed, checked


def test_a_sliding_layer_keeps_exactly_what_the_models_own_cache_keeps(windowed):
    _, model = windowed
    context = random_ids([23], seed=11)[0]
    (cache,) = ReusePair(model, model).prefill([context])
    with torch.no_grad():
        own = model.model(input_ids=context[None], use_cache=True).past_key_values
    for layer, kind in enumerate(model.stack.layer_types):
        assert torch.equal(cache.keys[layer], own.layers[layer].keys[0])
        assert torch.equal(cache.values[layer], own.layers[layer].values[0])
        assert cache.keys[layer].shape[1] == (WINDOW - 1 if kind == "sliding_attention" else 23)
    (whole,) = ReusePair(model, model).prefill([context], full_sliding=True)
    assert whole.held_from == (0,) * model.stack.num_layers and cache.nbytes() < whole.nbytes()
    moved = lambda c: receiver_prefill(model, [c], "full_reuse").cost.kv_bytes  # noqa: E731  (bytes a receiver loads)
    held, layers = sum(k.shape[1] for k in cache.keys), model.stack.num_layers
    assert moved(cache) * 23 * layers == moved(whole) * held


def test_a_cache_cut_to_its_window_is_refused_where_it_holds_too_little(windowed):
    sender, receiver = windowed
    context = random_ids([23], seed=12)[0]
    (cache,) = ReusePair(sender, receiver).prefill([context])
    with pytest.raises(DroidSpeakError, match="full_sliding=True"):  # CacheBlend reads the whole context per layer
        receiver_prefill(receiver, [cache], "cacheblend:0.3")
    with pytest.raises(DroidSpeakError, match="not the window before token 22.*full_sliding=True"):
        cache.prefix(22)
    assert cache.prefix(23).held_from == cache.held_from
    arch = sorted(WINDOWED)[0]  # a sender whose window is smaller than the receiver's (allow_mismatch's case)
    narrow = from_module(tiny_model(arch, seed=0, sliding_window=WINDOW - 2), name="narrow")
    (short,) = ReusePair(narrow, narrow).prefill([context])
    wide = from_module(tiny_model(arch, seed=0), name="wide")
    with pytest.raises(DroidSpeakError, match="holds the K/V of tokens 20.. only.*sliding window of 6"):
        receiver_prefill(wide, [short], "full_reuse")
    assert receiver_prefill(narrow, [short], "full_reuse") is not None  # the window it was cut for is enough


def test_a_cut_cache_survives_the_disk_and_a_header_that_lies_is_corrupt(windowed, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from droidspeak.engine.cache import CacheFile, ContextCache
    from droidspeak.errors import CacheFormatError

    _, model = windowed
    (cache,) = ReusePair(model, model).prefill(random_ids([23], seed=14))
    loaded = ContextCache.load(cache.save(tmp_path / "c.safetensors"))
    assert loaded.held_from == cache.held_from and any(loaded.held_from)
    assert all(torch.equal(a, b) for a, b in zip(loaded.keys, cache.keys))
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:  # claim a wider window than was kept
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    meta["meta"] = meta["meta"].replace(f'"sliding_window": {WINDOW}', f'"sliding_window": {WINDOW + 2}')
    save_file(tensors, str(tmp_path / "lies.safetensors"), metadata=meta)
    with pytest.raises(CacheFormatError, match="not the 7 tokens its header promises"):
        CacheFile(tmp_path / "lies.safetensors")
