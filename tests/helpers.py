"""Helpers shared by the tests (fixtures live in conftest.py): tiny random-init models of every supported
architecture (no download, built in milliseconds), a word tokenizer, checkpoints on disk, random token ids.

Imported as ``from helpers import ...`` (tests/ is on the path: ``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

CONF = Path(__file__).resolve().parents[1] / "conf"
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
    # mixture of experts: Mixtral-style (top-2 of 4) and Qwen-MoE-style (plus a shared expert)
    "mixtral": {"sliding_window": None, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 32},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 16},
    # scaled embeddings (Gemma), and interleaved local/global layers with one RoPE base each (Gemma 3; contexts
    # here stay inside its window)
    "gemma": {"head_dim": 16},
    "gemma3_text": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 256, "sliding_window_pattern": 3},
}
# sliding-window layers with contexts several times the window: every layer sliding (Mistral), and interleaved
# local/global layers (Gemma 3); tests/test_sliding_window.py
WINDOWED = {
    "mistral@window6": {"sliding_window": 6},
    "gemma3_text@window6": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 6},
}


def tiny_config(arch: str, **overrides):
    return AutoConfig.for_model(arch.split("@")[0], **{**TINY, **{**ARCHITECTURES, **WINDOWED}[arch], **overrides})


def tiny_model(arch: str, seed: int, dtype=torch.float32, attention: str = "sdpa", **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides), attn_implementation=attention)
    return model.to(dtype).eval()


def fine_tune_of(base: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """A 'fine-tune': the base weights plus a deterministic perturbation (embeddings included)."""
    tuned = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in tuned.parameters():
            noise = torch.randn(param.shape, generator=generator).to(param.dtype)
            param.add_(scale * param.std() * noise)
    return tuned


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


def compose_config(config_name: str, *overrides: str):
    """A config of conf/ composed as its entry point would (the caller imports the modules registering its schema)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def qa_rows(n_contexts: int = 2, questions: int = 2, seed: int = 0) -> list[dict]:
    """Zoo-shaped task rows over random word contexts, ``questions`` per context (answers the tiny models rarely
    give: the scores vary by plan)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for c in range(n_contexts):
        context = " ".join(f"w{int(i)}" for i in torch.randint(1, 99, (14,), generator=generator))
        for q in range(questions):
            question = " ".join(f"w{int(i)}" for i in torch.randint(1, 99, (3,), generator=generator))
            out.append({"id": f"c{c}-{q}", "context_id": f"c{c}", "context": context, "question": question,
                        "answers": [f"w{c + 1} w{q + 2}"]})
    return out
