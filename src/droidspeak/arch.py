"""Drive a Hugging Face decoder one layer at a time.

The engine never re-implements attention: it calls the model's own embedding, rotary embedding and decoder
layers, and builds masks with transformers' own mask functions, exactly as the model's forward does. What it
needs from an architecture is checked here, once, so an unsupported model fails with a clear message instead
of a silently wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from droidspeak.errors import UnsupportedArchitectureError
from droidspeak.hf_compat import CACHE_KW, accepts_cache, cache_arg

# Families whose ForCausalLM forward is exactly: embed_tokens -> rotary_emb -> layers (mask per layer type)
# -> norm -> lm_head, with nothing else applied to the embeddings (Gemma, for one, scales them).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")
_REQUIRED_PARTS = ("embed_tokens", "layers", "norm", "rotary_emb")


@dataclass(frozen=True)
class DecoderStack:
    """The parts of a causal LM the engine drives, plus the shape facts caches must agree with."""

    model: nn.Module  # the *ForCausalLM
    embed_tokens: nn.Module
    layers: nn.ModuleList
    rotary_emb: nn.Module
    layer_types: tuple[str, ...]

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def layer_masks(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
        """One mask per attention type, built by transformers as the model's forward builds it (no past).

        A context's positions are always 0..T-1 (contexts are right-padded), so no ``position_ids`` are passed:
        with no mask they would only trigger transformers' packed-sequence check, which syncs the device.
        """
        kwargs = dict(config=self.config, inputs_embeds=hidden, attention_mask=context_mask(attention_mask),
                      **cache_arg(None))
        masks: dict[str, torch.Tensor | None] = {}
        for kind in set(self.layer_types):
            build = create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
            masks[kind] = build(**kwargs)
        return masks

    def run_layers(
        self,
        hidden: torch.Tensor,
        start: int,
        end: int,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache,
    ) -> torch.Tensor:
        """Run decoder layers ``start..end`` (inclusive) on ``hidden``; each writes its K/V into ``cache``."""
        masks = self.layer_masks(hidden, attention_mask)
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids)
        for index in range(start, end + 1):
            hidden = self.layers[index](
                hidden,
                attention_mask=masks[self.layer_types[index]],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                use_cache=True,
                **cache_arg(cache),
            )
        return hidden


def context_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The padding mask a pass over contexts from position 0 needs: none for a right-padded batch.

    Causal (and sliding-window) masking already keeps every real position off its row's right padding, so the
    padding mask changes only the padded positions' own outputs, which nothing reads. Without it, transformers
    lets sdpa take its ``is_causal`` path, which skips the masked upper triangle: on CPU half the attention time
    of a 2K-token batch, and the same kernel a batch of one runs (so a batched row matches its own prefill).
    """
    if attention_mask is None:
        return None
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    right_padded = (positions < attention_mask.sum(-1, keepdim=True)) == attention_mask.bool()
    return None if bool(right_padded.all()) else attention_mask


def decoder_stack(model: nn.Module) -> DecoderStack:
    """Check that the engine can drive ``model`` and return its parts, or say exactly what is missing."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    problems = []
    if model_type not in SUPPORTED_MODEL_TYPES:
        problems.append(f"model_type {model_type!r} is not one of the verified families {SUPPORTED_MODEL_TYPES}")
    inner = getattr(model, "model", None)
    if inner is None:
        problems.append("no `.model` attribute holding the decoder (expected a *ForCausalLM)")
    else:
        problems += [f"decoder has no `.{part}`" for part in _REQUIRED_PARTS if not hasattr(inner, part)]
        layers = getattr(inner, "layers", None) or ()
        if layers and not accepts_cache(layers[0]):
            problems.append(f"its decoder layers do not take `{CACHE_KW}=`, the cache keyword of this transformers")
    if getattr(config, "is_encoder_decoder", False):
        problems.append("encoder-decoder models have no single causal KV cache to share")
    if problems:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {type(model).__name__}: " + "; ".join(problems)
            + ". The engine drives the model's own decoder layers one by one and supports "
            + ", ".join(SUPPORTED_MODEL_TYPES)
            + "; adding a family means checking its forward applies nothing between embeddings and layers."
        )
    layers = inner.layers
    return DecoderStack(
        model=model,
        embed_tokens=inner.embed_tokens,
        layers=layers,
        rotary_emb=inner.rotary_emb,
        layer_types=_layer_types(config, len(layers)),
    )


def kv_shape(config) -> tuple[int, int]:
    """(kv heads, head dim) of a config: GQA configs name the first, some name the second explicitly."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


def _layer_types(config, num_layers: int) -> tuple[str, ...]:
    """Attention type of each layer, as the model's forward picks its mask."""
    declared = getattr(config, "layer_types", None)
    if declared:
        return tuple(declared)
    sliding = getattr(config, "sliding_window", None)
    return ("sliding_attention" if sliding else "full_attention",) * num_layers
