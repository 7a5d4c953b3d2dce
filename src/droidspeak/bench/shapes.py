"""Model shapes for benchmarks, built with random weights directly on the target device (no download).

``llama3-8b`` is Llama-3-8B's shape (32 layers, hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocab 128256);
``tiny`` is a few-layer model of the same family for CPU smoke runs.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from droidspeak.engine.loading import Fingerprint, LoadedModel, resolve_dtype

SHAPES = {
    "llama3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    ),
}


def model_config(shape: str, **overrides) -> LlamaConfig:
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}: choose one of {sorted(SHAPES)}")
    return LlamaConfig(**{**SHAPES[shape], "attn_implementation": "sdpa", **overrides})


@torch.no_grad()
def random_model(shape: str | LlamaConfig, *, dtype: str | torch.dtype = "bfloat16", device: str | torch.device = "cpu",
                 seed: int = 0, name: str | None = None) -> LoadedModel:
    """A LoadedModel with random weights made on ``device`` (fingerprinted by shape and seed, not by hashing 16 GB)."""
    config = model_config(shape) if isinstance(shape, str) else shape
    dtype = resolve_dtype(dtype)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in the target dtype: no float32 copy of the weights
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    label = name or (shape if isinstance(shape, str) else "custom")
    fingerprint = Fingerprint(name=f"random-{label}", revision=f"seed-{seed}", adapter=None,
                              dtype=str(dtype).removeprefix("torch."))
    return LoadedModel(model, None, fingerprint)
