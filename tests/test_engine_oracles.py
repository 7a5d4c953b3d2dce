"""Correctness oracles of the reuse engine, for every supported architecture, in float32."""

import pytest
import torch

from droidspeak.engine import receiver_prefill, tail_logits
from droidspeak.engine.arch import context_mask
from droidspeak.engine.loading import from_module
from droidspeak.engine.shared_passes import shared_prefills
from droidspeak.engine.verify import TOLERANCE, probe
from droidspeak.errors import DroidSpeakError, UnsupportedArchitectureError
from droidspeak.profile.candidates import single_layer_plan
from droidspeak.reuse import ReusePair
from helpers import fine_tune_of, random_ids, tiny_model

ATOL = 1e-5
CONTEXTS, SUFFIXES = (23, 9, 16), (4, 6, 1)


def own_logits(model, context, suffix):
    """The receiver's own full prefill over context + suffix: logits at the suffix positions."""
    with torch.no_grad():
        full = model.model(input_ids=torch.cat([context, suffix])[None]).logits[0]
    return full[-suffix.numel() :]


def own_greedy(model, context, suffix, n):
    with torch.no_grad():
        out = model.model.generate(
            torch.cat([context, suffix])[None], max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return out[0, context.numel() + suffix.numel() :]  # the new tokens, through an EOS if one came


@pytest.fixture
def inputs():
    return random_ids(CONTEXTS, seed=1), random_ids(SUFFIXES, seed=2)


def test_recompute_all_layers_equals_receiver_prefill(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(sender, receiver)
    caches = pair.prefill(contexts)
    last = pair.num_layers - 1
    logits = tail_logits(receiver, pair.prepare(caches, f"recompute:0-{last}"), suffixes)
    for row, (context, suffix) in enumerate(zip(contexts, suffixes)):
        ours = logits[row, -suffix.numel() :]
        torch.testing.assert_close(ours, own_logits(receiver, context, suffix), atol=ATOL, rtol=0)
    answers = pair.generate(caches, suffixes, f"recompute:0-{last}", max_new_tokens=6)
    for answer, context, suffix in zip(answers, contexts, suffixes):
        assert answer.tolist() == own_greedy(receiver, context, suffix, 6).tolist()


def test_full_prefill_plan_is_the_receivers_own_forward(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    prefilled = receiver_prefill(receiver, contexts, "full_prefill")  # token ids suffice: no cache involved
    logits = tail_logits(receiver, prefilled, suffixes)
    for row, (context, suffix) in enumerate(zip(contexts, suffixes)):
        torch.testing.assert_close(
            logits[row, -suffix.numel() :], own_logits(receiver, context, suffix), atol=ATOL, rtol=0
        )


def test_self_reuse_equals_full_prefill(family, inputs):
    _, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(receiver, receiver)
    logits = tail_logits(receiver, pair.prepare(pair.prefill(contexts), "full_reuse"), suffixes)
    for row, (context, suffix) in enumerate(zip(contexts, suffixes)):
        torch.testing.assert_close(
            logits[row, -suffix.numel() :], own_logits(receiver, context, suffix), atol=ATOL, rtol=0
        )


def test_group_plan_recomputes_from_sender_E_and_reuses_sender_KV_bit_exactly(family):
    sender, receiver = family
    pair = ReusePair(sender, receiver)
    (context,) = random_ids([19], seed=3)
    (cache,) = pair.prefill([context])
    prefilled = pair.prepare([cache], "recompute:2-3")
    layers = prefilled.cache.layers
    for layer in (0, 1, 4, 5):  # reused: bit-identical to the sender's
        assert torch.equal(layers[layer].keys[0], cache.keys[layer])
        assert torch.equal(layers[layer].values[0], cache.values[layer])
    # recomputed: the receiver's own layers 2..3 run directly on the sender's E[2]
    from transformers import DynamicCache

    direct = DynamicCache(config=receiver.config)
    positions = torch.arange(context.numel())[None]
    receiver.stack.run_layers(cache.hidden[2][None], 2, 3, attention_mask=None, position_ids=positions, cache=direct)
    for layer in (2, 3):
        torch.testing.assert_close(layers[layer].keys[0], direct.layers[layer].keys[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(layers[layer].values[0], direct.layers[layer].values[0], atol=ATOL, rtol=0)
        assert not torch.allclose(layers[layer].keys[0], cache.keys[layer], atol=1e-3)  # it really is the receiver's


def test_sender_cache_matches_an_unbatched_prefill(family):
    sender, _ = family
    contexts = random_ids(CONTEXTS, seed=4)
    batched = ReusePair(sender, sender).prefill(contexts, batch_size=3)
    for context, cache in zip(contexts, batched):
        (alone,) = ReusePair(sender, sender).prefill([context], batch_size=1)
        for layer in range(cache.num_layers):
            torch.testing.assert_close(cache.keys[layer], alone.keys[layer], atol=ATOL, rtol=0)
            torch.testing.assert_close(cache.values[layer], alone.values[layer], atol=ATOL, rtol=0)
        for layer in cache.hidden:
            torch.testing.assert_close(cache.hidden[layer], alone.hidden[layer], atol=ATOL, rtol=0)


@pytest.mark.parametrize("plan", ["full_reuse", "recompute:1-2+4-4", "full_prefill"])
def test_batched_equals_one_by_one(family, inputs, plan):
    sender, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(sender, receiver)
    caches = pair.prefill(contexts)
    continuations = random_ids([3, 1, 2], seed=5)
    batched_ll = pair.loglikelihood(caches, suffixes, continuations, plan)
    batched_gen = pair.generate(caches, suffixes, plan, max_new_tokens=5)
    for i in range(len(contexts)):
        (alone_ll,) = pair.loglikelihood([caches[i]], [suffixes[i]], [continuations[i]], plan)
        assert batched_ll[i][0] == pytest.approx(alone_ll[0], abs=1e-4)
        assert batched_ll[i][1] == alone_ll[1]
        (alone_gen,) = pair.generate([caches[i]], [suffixes[i]], plan, max_new_tokens=5)
        assert batched_gen[i].tolist() == alone_gen.tolist()


def test_loglikelihood_matches_the_receivers_own_scores(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(sender, receiver)
    continuations = random_ids([2, 3, 1], seed=6)
    ours = pair.loglikelihood(
        pair.prefill(contexts), [s[:0] if i == 0 else s for i, s in enumerate(suffixes)], continuations, "full_prefill"
    )
    for i, (context, suffix, continuation) in enumerate(zip(contexts, suffixes, continuations)):
        prompt = context if i == 0 else torch.cat([context, suffix])  # row 0: empty suffix
        with torch.no_grad():
            logits = receiver.model(input_ids=torch.cat([prompt, continuation])[None]).logits[0].log_softmax(-1)
        targets = logits[prompt.numel() - 1 : -1].gather(-1, continuation[:, None])
        assert ours[i][0] == pytest.approx(targets.sum().item(), abs=1e-4)


def test_sampled_generation_is_reproducible_from_a_seed(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(sender, receiver)
    caches = pair.prefill(contexts)
    kwargs = dict(max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    first = pair.generate(caches, suffixes, "recompute:0-1", **kwargs)
    second = pair.generate(caches, suffixes, "recompute:0-1", **kwargs)
    assert [a.tolist() for a in first] == [b.tolist() for b in second]


def test_reuse_changes_the_answer_when_sender_differs(family, inputs):
    """Guards the oracles above: a fine-tuned sender's cache must make a measurable difference."""
    sender, receiver = family
    contexts, suffixes = inputs
    pair = ReusePair(sender, receiver)
    caches = pair.prefill(contexts)
    reused = tail_logits(receiver, pair.prepare(caches, "full_reuse"), suffixes)
    own = tail_logits(receiver, pair.prepare(caches, "full_prefill"), suffixes)
    assert (reused - own).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_stays_close(arch, dtype):
    base = tiny_model(arch, seed=0, dtype=dtype)
    pair = ReusePair(from_module(base), from_module(fine_tune_of(base, seed=1)))
    contexts, suffixes = random_ids([12, 7], seed=8), random_ids([3, 2], seed=9)
    caches = pair.prefill(contexts)
    assert caches[0].keys[0].dtype == dtype
    last = pair.num_layers - 1
    ours = tail_logits(pair.receiver, pair.prepare(caches, f"recompute:0-{last}"), suffixes)
    own = tail_logits(pair.receiver, pair.prepare(caches, "full_prefill"), suffixes)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.float(), own.float(), atol=0.05, rtol=0.05)


def test_shared_prefills_equal_separate_prefills(family, inputs):
    """Every layer plan out of the shared passes is bitwise the cache of its own prefill, groups of one start,
    single-layer and multi-group plans alike (profiling relies on it), and costs what that prefill costs."""
    sender, receiver = family
    contexts, _ = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    layers = receiver.stack.num_layers
    last = layers - 1
    plans = ["full_reuse"] + [f"recompute:{s}-{e}" for s in (0, 1) for e in range(s, layers)]
    plans += [single_layer_plan(layer, layers) for layer in range(layers)] + [f"recompute:0-0+2-{last}"]
    shared = {item.plan: item for item in shared_prefills(receiver, caches, plans)}
    assert sorted(shared) == sorted(set(plans))
    for plan, item in shared.items():
        alone = receiver_prefill(receiver, caches, plan)
        assert item.batch.cost == alone.cost and item.seconds >= 0
        assert torch.equal(item.batch.attention_mask, alone.attention_mask)
        for ours, theirs in zip(item.batch.cache.layers, alone.cache.layers, strict=True):
            assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values), plan
    with pytest.raises(DroidSpeakError, match="layer plans that reuse the sender's cache"):
        next(shared_prefills(receiver, caches, ["full_prefill"]))
    with pytest.raises(DroidSpeakError, match="ContextCache"):
        next(shared_prefills(receiver, contexts, ["full_reuse"]))


def test_context_mask_drops_only_a_right_padding_mask():
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert context_mask(right) is None and context_mask(None) is None
    assert context_mask(left) is left


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_right_padded_batch_equals_each_context_alone_without_its_padding_mask(attention):
    """Prefill passes drop a right-padding mask (context_mask): every real position must still see exactly its
    own row's causal past, whichever attention the model runs, through every plan kind's pass."""
    sender = from_module(tiny_model("llama", seed=0, attention=attention), name="sender")
    receiver = from_module(fine_tune_of(sender.model, seed=3), name="receiver")
    assert receiver.config._attn_implementation == attention
    contexts = random_ids((17, 5, 11), seed=6)
    caches = ReusePair(sender, receiver).prefill(contexts)
    for plan in ("full_prefill", "recompute:0-1+3-4"):
        batched = receiver_prefill(receiver, caches, plan)
        for row, cache in enumerate(caches):
            alone = receiver_prefill(receiver, [cache], plan)
            n = cache.token_ids.numel()
            for layer in (1, 4):
                torch.testing.assert_close(
                    batched.cache.layers[layer].keys[row, :, :n], alone.cache.layers[layer].keys[0], atol=ATOL, rtol=0
                )


def test_every_family_passes_the_probe_with_room_to_spare(family):
    for model in family:
        checked = probe(model)
        assert checked.allowed == TOLERANCE[torch.float32]  # float32: the model's own noise is far below it
        for result in checked.results:
            assert result.raised is None and result.error < checked.allowed / 10, result


def test_a_model_whose_forward_does_more_than_its_layers_is_refused_by_name():
    """A forward that scales the embeddings outside the embedding module (as Gemma once did): the layers alone
    give other caches, and the probe must say which plans differ instead of serving wrong answers."""
    model = tiny_model("llama", seed=0)
    forward = model.model.forward

    def scaled_forward(input_ids=None, inputs_embeds=None, **kwargs):
        return forward(inputs_embeds=model.model.embed_tokens(input_ids) * 4.0, **kwargs)

    model.model.forward = scaled_forward
    with pytest.raises(
        UnsupportedArchitectureError, match=r"failed droidspeak's probe(.|\n)*recompute:0-5 \(every layer"
    ):
        ReusePair(from_module(model, name="scaled"), from_module(model, name="scaled"))
