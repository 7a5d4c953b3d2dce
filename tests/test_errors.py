"""Bad input fails early with a message a user can act on, never deep inside transformers."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import from_module
from droidspeak.errors import (
    CacheFormatError,
    CacheMismatchError,
    DroidSpeakError,
    PairMismatchError,
    PlanError,
    UnsupportedArchitectureError,
)
from droidspeak.reuse import ReusePair
from helpers import fine_tune_of, random_ids, tiny_model


@pytest.fixture
def pair(llama_pair):
    return ReusePair(*llama_pair)


def test_mismatched_pair_lists_every_mismatch_in_one_error():
    sender = from_module(tiny_model("llama", seed=0), name="small")
    other = tiny_model(
        "llama", seed=0, num_hidden_layers=4, hidden_size=96, num_attention_heads=6, num_key_value_heads=3,
        vocab_size=120, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )
    with pytest.raises(PairMismatchError) as err:
        ReusePair(sender, from_module(other, name="big"))
    message = str(err.value)
    for fact in ("layers: sender 6 vs receiver 4", "hidden size", "attention heads", "kv heads", "RoPE", "vocab size"):
        assert fact in message


def test_a_rope_mismatch_is_refused_unless_the_pair_allows_it_and_then_every_use_records_it():
    """The paper's MistralLite <- Mistral-7B pair differs in RoPE theta: refused by default with the option
    named, accepted only when asked for, with a warning that results carry; other mismatches stay refused."""
    sender = from_module(tiny_model("llama", seed=0), name="theta-1e4")
    receiver = from_module(tiny_model("llama", seed=0, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
                           name="theta-1e6")
    with pytest.raises(PairMismatchError, match="allow_mismatch=rope accepts the RoPE difference"):
        ReusePair(sender, receiver)
    pair = ReusePair(sender, receiver, allow_mismatch=["rope"])
    assert len(pair.warnings) == 1 and "allowed mismatch, RoPE" in pair.warnings[0] and "1000000" in pair.warnings[0]
    assert ReusePair(sender, sender, allow_mismatch=["rope"]).warnings == []  # nothing differs: nothing to record
    with pytest.raises(PairMismatchError, match="only \\['rope', 'sliding_window'\\] can be allowed"):
        ReusePair(sender, receiver, allow_mismatch=["layers"])
    deeper = from_module(tiny_model("llama", seed=0, num_hidden_layers=4, rope_parameters={"rope_type": "default",
                                                                                           "rope_theta": 1e6}))
    with pytest.raises(PairMismatchError, match="layers: sender 6 vs receiver 4"):
        ReusePair(sender, deeper, allow_mismatch=["rope"])


def test_head_dim_and_architecture_mismatch_are_named():
    llama = from_module(tiny_model("llama", seed=0))
    qwen = from_module(tiny_model("qwen3", seed=0, head_dim=32))
    with pytest.raises(PairMismatchError, match="architecture: sender llama vs receiver qwen3") as err:
        ReusePair(llama, qwen)
    assert "head dim: sender 16 vs receiver 32" in str(err.value)


def test_tokenizer_vocabulary_mismatch_is_detected():
    class Vocab:
        def __init__(self, words):
            self.words = words

        def get_vocab(self):
            return {w: i for i, w in enumerate(self.words)}

    base = tiny_model("llama", seed=0)
    sender = from_module(base, tokenizer=Vocab(["a", "b"]))
    receiver = from_module(fine_tune_of(base, 1), tokenizer=Vocab(["b", "a"]))
    with pytest.raises(PairMismatchError, match="tokenizer vocabulary"):
        ReusePair(sender, receiver)


def test_unsupported_architecture_says_what_is_missing():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedArchitectureError, match=r"GPT2LMHeadModel \(gpt2\).*no `.model`"):
        from_module(gpt2)


def test_plan_out_of_range_names_layer_count(pair):
    caches = pair.prefill(random_ids([8]))
    with pytest.raises(PlanError, match="6 layers"):
        pair.generate(caches, random_ids([2]), "recompute:3-9")
    with pytest.raises(PlanError, match="overlap"):
        pair.generate(caches, random_ids([2]), "recompute:0-3+2-4")


def test_cache_from_another_sender_is_refused(pair):
    stranger = ReusePair(pair.receiver, pair.receiver)  # receiver acting as sender
    caches = stranger.prefill(random_ids([8]))
    with pytest.raises(CacheMismatchError, match="not by this pair's sender"):
        pair.generate(caches, random_ids([2]), "full_reuse")


def test_cache_of_another_context_is_refused(pair):
    context, other = random_ids([8, 8], seed=3)
    caches = pair.prefill([context])
    pair.generate(caches, random_ids([2]), "full_reuse", contexts=[context])  # the right context passes
    with pytest.raises(CacheMismatchError, match="another context"):
        pair.generate(caches, random_ids([2]), "full_reuse", contexts=[other])


def test_plan_needing_E_that_was_not_kept_is_refused(pair):
    caches = pair.prefill(random_ids([8]), e_layers="recompute:2-3")
    assert sorted(caches[0].hidden) == [2]
    pair.generate(caches, random_ids([2]), "recompute:2-5", max_new_tokens=1)
    with pytest.raises(CacheMismatchError, match="layers \\[4\\]"):
        pair.generate(caches, random_ids([2]), "recompute:4-5")


def test_token_ids_outside_the_vocabulary_are_refused(pair):
    with pytest.raises(DroidSpeakError, match="token ids must lie in"):
        pair.prefill([torch.tensor([1, 2, 500])])
    with pytest.raises(DroidSpeakError, match="at least one token"):
        pair.prefill([torch.tensor([], dtype=torch.long)])


def test_cache_of_a_differently_shaped_model_is_refused(pair):
    other = from_module(tiny_model("llama", seed=0, num_key_value_heads=4))
    foreign = ReusePair(other, other).prefill(random_ids([8]))[0]
    foreign.sender = pair.sender.fingerprint.digest  # even when provenance is forged
    with pytest.raises(CacheMismatchError, match="shape"):
        pair.generate([foreign], random_ids([2]), "full_reuse")


def test_cache_round_trips_through_safetensors(pair, tmp_path):
    (cache,) = pair.prefill(random_ids([11]))
    path = cache.save(tmp_path / "c.safetensors")
    loaded = ContextCache.load(path)
    assert loaded.sender == cache.sender and torch.equal(loaded.token_ids, cache.token_ids)
    assert all(torch.equal(a, b) for a, b in zip(loaded.keys, cache.keys))
    assert sorted(loaded.hidden) == sorted(cache.hidden)
    assert pair.generate([loaded], random_ids([2]), "recompute:2-3", max_new_tokens=3)[0].tolist() == pair.generate(
        [cache], random_ids([2]), "recompute:2-3", max_new_tokens=3
    )[0].tolist()


def test_corrupt_and_truncated_cache_files_are_rejected(pair, tmp_path):
    (cache,) = pair.prefill(random_ids([11]))
    path = cache.save(tmp_path / "c.safetensors")
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-5] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(CacheFormatError, match="checksum"):
        ContextCache.load(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CacheFormatError):
        ContextCache.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a cache at all")
    with pytest.raises(CacheFormatError, match="not a readable safetensors"):
        ContextCache.load(garbage)


def test_verify_model_checks_a_checkpoint_in_one_command_and_says_when_it_cannot(llama_checkpoints, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "verify_model.py"
    report = tmp_path / "verify.md"
    ok = subprocess.run([sys.executable, str(script), f"model={llama_checkpoints / 'tuned'}", "long_context=40",
                         f"out={report}", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    text = report.read_text()
    assert "verified" in text and text.count("| ok |") == 6 and "| 40 |" in text
    missing = subprocess.run([sys.executable, str(script), f"model={tmp_path / 'nowhere'}",
                              f"hydra.run.dir={tmp_path / 'run2'}"], capture_output=True, text=True)
    assert missing.returncode == 1 and "refused: cannot load model" in missing.stderr
