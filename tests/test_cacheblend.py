"""Oracles of the CacheBlend cross-model baseline and the layer-group + token hybrid, in float32."""

import pytest
import torch

import droidspeak.sweep.config  # noqa: F401  (registers the config schemas)
from droidspeak.engine import receiver_prefill, tail_logits
from droidspeak.engine.batch import context_batch
from droidspeak.engine.cacheblend import cacheblend_prefill, layer_kv, select_tokens
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.points import ProfilePoint
from droidspeak.profile.profile_file import Profile, save_profile
from droidspeak.reuse import ReusePair
from droidspeak.sweep.point import settle_method
from helpers import compose_config, random_ids

ATOL = 1e-5
CONTEXTS, SUFFIXES = (23, 9, 16), (4, 6, 1)


@pytest.fixture
def inputs():
    return random_ids(CONTEXTS, seed=1), random_ids(SUFFIXES, seed=2)


def logits_of(receiver, prefilled, suffixes):
    out = tail_logits(receiver, prefilled, suffixes)
    return [out[row, -s.numel() :] for row, s in enumerate(suffixes)]


def assert_rows_close(a, b, atol=ATOL):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


def test_ratio_one_is_the_receivers_full_prefill(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    ours = logits_of(receiver, receiver_prefill(receiver, caches, "cacheblend:1"), suffixes)
    assert_rows_close(ours, logits_of(receiver, receiver_prefill(receiver, contexts, "full_prefill"), suffixes))


def test_ratio_zero_is_full_reuse_bit_exactly(family, inputs):
    sender, receiver = family
    contexts, _ = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    ours, theirs = receiver_prefill(receiver, caches, "cacheblend:0"), receiver_prefill(receiver, caches, "full_reuse")
    for a, b in zip(ours.cache.layers, theirs.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert ours.cost.compute_fraction == 0


def test_self_reuse_is_full_prefill_at_any_ratio(family, inputs):
    _, receiver = family
    contexts, suffixes = inputs
    caches = ReusePair(receiver, receiver).prefill(contexts)
    own = logits_of(receiver, receiver_prefill(receiver, contexts, "full_prefill"), suffixes)
    for ratio in (0.2, 0.5):
        assert_rows_close(logits_of(receiver, receiver_prefill(receiver, caches, f"cacheblend:{ratio}"), suffixes), own)


def test_batched_equals_one_context_at_a_time(family, inputs):
    sender, receiver = family
    contexts, suffixes = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    batched = logits_of(receiver, cacheblend_prefill(receiver, caches, 0.3, groups=[(2, 3)]), suffixes)
    for row, (cache, suffix) in enumerate(zip(caches, suffixes)):
        (alone,) = logits_of(receiver, cacheblend_prefill(receiver, [cache], 0.3, groups=[(2, 3)]), [suffix])
        torch.testing.assert_close(batched[row], alone, atol=ATOL, rtol=0)


def test_hybrid_endpoints(family, inputs):
    """groups + ratio 0 = the groups-only plan; groups + ratio 1 = full prefill."""
    sender, receiver = family
    contexts, suffixes = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    groups_only = logits_of(receiver, receiver_prefill(receiver, caches, "recompute:2-3"), suffixes)
    assert_rows_close(
        logits_of(receiver, cacheblend_prefill(receiver, caches, 0.0, groups=[(2, 3)]), suffixes), groups_only
    )
    own = logits_of(receiver, receiver_prefill(receiver, contexts, "full_prefill"), suffixes)
    assert_rows_close(logits_of(receiver, cacheblend_prefill(receiver, caches, 1.0, groups=[(2, 3)]), suffixes), own)


def test_only_chosen_tokens_change_and_sender_caches_stay_intact(family):
    sender, receiver = family
    (context,) = random_ids([20], seed=4)
    (cache,) = ReusePair(sender, receiver).prefill([context])
    before = [k.clone() for k in cache.keys]
    ids, mask = context_batch([cache.token_ids], receiver.device)
    index, valid = select_tokens(receiver, [cache], 0.25, ids, mask)
    assert int(valid.sum()) == 5  # ceil(0.25 * 20)
    prefilled = cacheblend_prefill(receiver, [cache], 0.25)
    chosen = set(index[0].tolist())
    for layer, kv in enumerate(prefilled.cache.layers):
        changed = (kv.keys[0] != cache.keys[layer]).any(-1).any(0).nonzero().flatten().tolist()
        assert set(changed) <= chosen
    assert all(torch.equal(a, b) for a, b in zip(before, cache.keys))
    assert prefilled.cost.compute_fraction == pytest.approx(5 / 20)


def test_bad_ratio_and_missing_E_are_refused(family):
    sender, receiver = family
    (context,) = random_ids([12], seed=5)
    (cache,) = ReusePair(sender, receiver).prefill([context], e_layers=[])
    with pytest.raises(DroidSpeakError):
        cacheblend_prefill(receiver, [cache], 1.5)
    with pytest.raises(DroidSpeakError, match="E only for layers"):
        cacheblend_prefill(receiver, [cache], 0.1, groups=[(2, 3)])


@pytest.mark.parametrize("check", [1, 3])
def test_a_check_layer_keeps_every_oracle_and_counts_the_layers_below_it(family, inputs, check):
    """cacheblend:R@L: ratio 1 is the receiver's own prefill, ratio 0 is exactly recompute:0-(L-1), a sender
    reusing its own cache is its prefill at any ratio, batched equals one context at a time, and the cost
    counts L whole layers plus the chosen tokens in the others."""
    sender, receiver = family
    contexts, suffixes = inputs
    caches = ReusePair(sender, receiver).prefill(contexts)
    own = logits_of(receiver, receiver_prefill(receiver, contexts, "full_prefill"), suffixes)
    assert_rows_close(logits_of(receiver, receiver_prefill(receiver, caches, f"cacheblend:1@{check}"), suffixes), own)
    zero, below = (
        receiver_prefill(receiver, caches, f"cacheblend:0@{check}"),
        receiver_prefill(receiver, caches, f"recompute:0-{check - 1}"),
    )
    for a, b in zip(zero.cache.layers, below.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    self_caches = ReusePair(receiver, receiver).prefill(contexts)
    assert_rows_close(
        logits_of(receiver, receiver_prefill(receiver, self_caches, f"cacheblend:0.3@{check}"), suffixes), own
    )
    batched = receiver_prefill(receiver, caches, f"cacheblend:0.3@{check}")
    for row, cache in enumerate(caches):
        alone = receiver_prefill(receiver, [cache], f"cacheblend:0.3@{check}")
        n = cache.token_ids.numel()
        for a, b in zip(batched.cache.layers, alone.cache.layers):
            torch.testing.assert_close(a.keys[row, :, :n], b.keys[0], atol=ATOL, rtol=0)
    tokens, layers = sum(CONTEXTS), receiver.stack.num_layers
    chosen = sum(-(-3 * n // 10) for n in CONTEXTS)  # ceil(0.3 n)
    assert batched.cost.recomputed_layer_tokens == check * tokens + (layers - check) * chosen


def test_the_check_layer_reads_the_context_where_layer_zero_cannot(family):
    """What CacheBlend ranks tokens by: at layer 0 a token's deviation is a function of its id and position alone,
    so the same tokens after two different prefixes deviate identically; at a deeper check layer they do not."""
    sender, receiver = family
    shared = random_ids([8], seed=11)[0]
    contexts = [torch.cat([prefix, shared]) for prefix in random_ids([8, 8], seed=12)]
    caches = ReusePair(sender, receiver).prefill(contexts)
    ids, mask = context_batch([c.token_ids for c in caches], receiver.device)
    positions = torch.arange(ids.shape[1])[None].expand(2, -1)
    deviations = {}
    for layer in (0, 3):
        hidden = receiver.stack.embed(ids)
        if layer:
            scratch = receiver_prefill(receiver, caches, f"recompute:0-{layer - 1}").cache
            hidden = receiver.stack.run_layers(hidden, 0, layer - 1, attention_mask=mask, position_ids=positions,
                                               cache=scratch)
        keys, _ = layer_kv(receiver, layer, hidden, positions)
        deviations[layer] = [(keys[row, :, 8:] - cache.keys[layer][:, 8:]).pow(2).sum((0, 2))
                             for row, cache in enumerate(caches)]
    torch.testing.assert_close(deviations[0][0], deviations[0][1], atol=1e-6, rtol=0)
    assert not torch.allclose(deviations[3][0], deviations[3][1], atol=1e-4)


def test_a_check_layer_out_of_range_or_with_groups_is_refused(family):
    sender, receiver = family
    caches = ReusePair(sender, receiver).prefill(random_ids([9], seed=13))
    with pytest.raises(DroidSpeakError, match="check layer 6 is out of range"):
        receiver_prefill(receiver, caches, "cacheblend:0.2@6")
    with pytest.raises(DroidSpeakError, match="layer index"):
        receiver_prefill(receiver, caches, "cacheblend:0.2@x")
    with pytest.raises(DroidSpeakError, match="takes no other groups"):
        cacheblend_prefill(receiver, caches, 0.2, groups=[(2, 3)], check_layer=1)



def _blend_config(profile_path, *overrides, method="cacheblend"):
    return compose_config("evaluate", "pair=mdqa_from_base", f"method={method}",
                          f"method.compute_of=profile:{profile_path}@0.05@point", *overrides)


def test_cacheblend_at_equal_compute_spends_the_compute_of_the_plan_the_profile_chooses(tmp_path):
    layers, n = 30, 8
    points = [ProfilePoint.from_plan(plan, quality, num_layers=layers, per_input=[quality] * n)
              for plan, quality in (("full_reuse", 0.5), ("recompute:10-19", 1.0))]
    profile = Profile(receiver="ft-mdqa", sender="base", task="mdqa", metric="f1", num_layers=layers,
                      reference_quality=1.0, reference_per_input=[1.0] * n, points=points, n_samples=n,
                      inputs=[f"q{i}" for i in range(n)])
    path = save_profile(tmp_path / "p.json", profile)
    for layer, plan in ((0, "cacheblend:0.3333"), (1, "cacheblend:0.3103@1"), (6, "cacheblend:0.1667@6")):
        cfg = _blend_config(path, f"method.check_layer={layer}")
        assert settle_method(cfg) is None and cfg.method.plan == plan
        fraction = (layer + float(plan.split(":")[1].split("@")[0]) * (layers - layer)) / layers
        assert abs(fraction - 10 / layers) < 1e-3  # (L + R (N - L)) / N: the plan's 10 of 30 layers
    assert "cost more" in settle_method(_blend_config(path, "method.check_layer=12"))  # 12 full layers > 10
    with pytest.raises(DroidSpeakError, match="check_layer=30: the model has layers 0-29"):
        settle_method(_blend_config(path, "method.check_layer=30"))
    nothing_holds = save_profile(tmp_path / "n.json", Profile(**{**profile.__dict__, "points": points[:1]}))
    cfg = _blend_config(nothing_holds, "method.check_layer=1")  # the profile falls back to full prefill: all of it
    assert settle_method(cfg) is None and cfg.method.plan == "cacheblend:1@1"
    foreign = save_profile(tmp_path / "f.json", Profile(**{**profile.__dict__, "receiver": "ft-twohop"}))
    with pytest.raises(DroidSpeakError, match="a profile of ft-twohop<-base, not of ft-mdqa<-base"):
        settle_method(_blend_config(foreign))
    elsewhere = save_profile(tmp_path / "e.json", Profile(**{**profile.__dict__,
                                                             "extra": {"job": {"family": "zoo-default-0000"}}}))
    with pytest.raises(DroidSpeakError, match="measured on the family zoo-default-0000, not on the one configured"):
        settle_method(_blend_config(elsewhere))  # same model names, another family's models
    with pytest.raises(DroidSpeakError, match="does not read method.compute_of"):
        settle_method(_blend_config(path, "method.layers=0-1", method="recompute"))
