"""Loading pairs from local HF directories and peft adapters (the path real models take, minus the download)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from droidspeak.engine.loading import load_model, merge_adapter
from droidspeak.errors import DroidSpeakError
from droidspeak.reuse import ReusePair
from helpers import tiny_model


@pytest.fixture(scope="module")
def checkpoints(llama_checkpoints):
    """The session's base/ and tuned/ directories, and beside them lora/: a LoRA adapter of the base."""
    root = llama_checkpoints
    lora = get_peft_model(
        tiny_model("llama", seed=0), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(root / "lora")
    return root


def test_local_directories_and_adapters_load_into_a_working_pair(checkpoints):
    pair = ReusePair.from_pretrained(
        receiver=str(checkpoints / "base"),
        receiver_adapter=str(checkpoints / "lora"),
        sender=str(checkpoints / "tuned"),
    )
    assert pair.receiver.fingerprint.adapter.startswith(str(checkpoints / "lora"))
    caches = pair.prefill(["w1 w2 w3 w4 w5 w6"])
    assert caches[0].num_tokens == 6
    answer = pair.generate(caches, ["w7 w8"], "recompute:0-1", max_new_tokens=3)
    assert isinstance(answer[0], str)


def test_the_adapter_changes_weights_and_fingerprint(checkpoints):
    plain = load_model(str(checkpoints / "base"))
    adapted = load_model(str(checkpoints / "base"), adapter=str(checkpoints / "lora"))
    assert plain.fingerprint.digest != adapted.fingerprint.digest
    q_plain = plain.model.model.layers[0].self_attn.q_proj.weight
    q_adapted = adapted.model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_plain, q_adapted)


def test_fingerprints_are_stable_across_loads_and_distinguish_checkpoints(checkpoints):
    first, second = load_model(str(checkpoints / "base")), load_model(str(checkpoints / "base"))
    assert first.fingerprint == second.fingerprint
    assert load_model(str(checkpoints / "tuned")).fingerprint.digest != first.fingerprint.digest
    assert load_model(str(checkpoints / "base"), dtype="bfloat16").fingerprint.digest != first.fingerprint.digest


def test_missing_model_or_adapter_is_a_clear_error(tmp_path, checkpoints):
    with pytest.raises(DroidSpeakError, match="cannot load model"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(DroidSpeakError, match="cannot load adapter"):
        load_model(str(checkpoints / "base"), adapter=str(tmp_path / "no-adapter"))
    with pytest.raises(DroidSpeakError, match="unknown dtype"):
        load_model(str(checkpoints / "base"), dtype="float8")


def test_an_activated_lora_is_never_merged_into_weights_that_compute_contexts(tmp_path, checkpoints):
    """aLoRA adapts only the tokens from its invocation on: merged weights would change every context token, so
    merging it as such is refused by name, and load_model keeps the base for the contexts."""
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], alora_invocation_tokens=[7, 8], task_type="CAUSAL_LM",
                        init_lora_weights=False)
    get_peft_model(tiny_model("llama", seed=0), config).save_pretrained(tmp_path / "alora")
    with pytest.raises(DroidSpeakError, match=r"activated LoRA \(aLoRA, invocation tokens \[7, 8\]\)"):
        merge_adapter(tiny_model("llama", seed=0), str(tmp_path / "alora"))
    loaded = load_model(str(checkpoints / "base"), adapter=str(tmp_path / "alora"))
    base = load_model(str(checkpoints / "base"))
    assert loaded.invocation == (7, 8)
    assert loaded.context.fingerprint == base.fingerprint
    weight = lambda m: m.model.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(weight(loaded.context), weight(base)) and not torch.equal(weight(loaded), weight(base))
