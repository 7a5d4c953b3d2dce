"""Drive a Hugging Face decoder one layer at a time.

The engine never re-implements attention: it calls the model's own embedding, rotary embedding and decoder
layers, and builds masks with transformers' own mask functions, exactly as the model's forward does. What it
needs from an architecture is checked here, once, so an unsupported model fails with a clear message instead
of a silently wrong answer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from droidspeak.errors import UnsupportedArchitectureError
from droidspeak.hf_compat import CACHE_KW, accepts_cache, cache_arg

# What the engine drives: a *ForCausalLM whose forward is embed_tokens -> rotary_emb (per layer type, if it takes
# one) -> layers (mask per layer type) -> norm -> lm_head. Whether a model really is that is not decided by its
# name: droidspeak.engine.verify probes every model before a pair computes anything.
_REQUIRED_PARTS = ("embed_tokens", "layers", "norm", "rotary_emb")


@dataclass(frozen=True)
class DecoderStack:
    """The parts of a causal LM the engine drives, plus the shape facts caches must agree with."""

    model: nn.Module  # the *ForCausalLM
    embed_tokens: nn.Module
    layers: nn.ModuleList
    rotary_emb: nn.Module
    layer_types: tuple[str, ...]
    rope_per_type: bool = False  # the rotary embedding takes the layer type (one RoPE base per attention type)

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def rope(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Rotary (cos, sin) per attention type: one for every layer (Llama, Qwen, Mistral...), or one per type
        where local and global layers use different RoPE bases (Gemma 3's rotary takes the layer type)."""
        if self.rope_per_type:
            return {kind: self.rotary_emb(hidden, position_ids, kind) for kind in set(self.layer_types)}
        shared = self.rotary_emb(hidden, position_ids=position_ids)
        return dict.fromkeys(set(self.layer_types), shared)

    def layer_rope(
        self, hidden: torch.Tensor, position_ids: torch.Tensor, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary (cos, sin) of one layer."""
        return self.rope(hidden, position_ids)[self.layer_types[layer]]

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
        rope = self.rope(hidden, position_ids)
        for index in range(start, end + 1):
            hidden = self.run_layer(index, hidden, masks=masks, rope=rope, position_ids=position_ids, cache=cache)
        return hidden

    def run_layer(self, index: int, hidden: torch.Tensor, *, masks: dict, rope: dict, position_ids: torch.Tensor,
                  cache) -> torch.Tensor:
        """Decoder layer ``index`` on ``hidden``, with the mask and rotary embedding of its attention type."""
        kind = self.layer_types[index]
        return self.layers[index](hidden, attention_mask=masks[kind], position_embeddings=rope[kind],
                                  position_ids=position_ids, use_cache=True, **cache_arg(cache))


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
            f"unsupported architecture {type(model).__name__} ({model_type}): "
            + "; ".join(problems)
            + ". The engine drives a decoder-only model's own embedding, rotary embedding and decoder layers one by"
            " one."
        )
    layers = inner.layers
    return DecoderStack(
        model=model,
        embed_tokens=inner.embed_tokens,
        layers=layers,
        rotary_emb=inner.rotary_emb,
        layer_types=_layer_types(config, len(layers)),
        rope_per_type="layer_type" in inspect.signature(inner.rotary_emb.forward).parameters,
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
