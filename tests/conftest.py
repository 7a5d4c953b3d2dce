"""Tiny random-init models of every supported architecture (no download), built in milliseconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; set before transformers reads it

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from droidspeak.loading import LoadedModel, from_module

VOCAB = 101
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
ARCHITECTURES = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "phi3": {"sliding_window": None, "pad_token_id": 0},
}


def tiny_config(arch: str, **overrides):
    return AutoConfig.for_model(arch, **{**TINY, **ARCHITECTURES[arch], **overrides})


def tiny_model(arch: str, seed: int, dtype=torch.float32, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides), attn_implementation="sdpa")
    return model.to(dtype).eval()


def fine_tune_of(base: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """A 'fine-tune': the base weights plus a deterministic perturbation (embeddings included)."""
    import copy

    tuned = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in tuned.parameters():
            noise = torch.randn(param.shape, generator=generator).to(param.dtype)
            param.add_(scale * param.std() * noise)
    return tuned


@pytest.fixture(params=sorted(ARCHITECTURES))
def arch(request) -> str:
    return request.param


@pytest.fixture
def family(arch) -> tuple[LoadedModel, LoadedModel]:
    """(sender, receiver) of one architecture: a base and a fine-tune of it."""
    base = tiny_model(arch, seed=0)
    return from_module(base, name=f"{arch}-base"), from_module(fine_tune_of(base, seed=1), name=f"{arch}-tuned")


def word_tokenizer():
    """A real `tokenizers` WordLevel tokenizer over words w1..w100 (whitespace split, so prompts split exactly)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[UNK]", eos_token="w100")


def save_checkpoint(model, path):
    """A standard HF directory (weights + tokenizer), as a user's local model would be."""
    model.save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return str(path)


def random_ids(lengths, seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=generator) for n in lengths]
