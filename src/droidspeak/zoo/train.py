"""Optimisation of the family: build a small Llama (GQA), train it on example batches, LoRA adapters.

Deterministic: the model's init comes from ``torch.manual_seed(seed)``, every batch from a seeded
``random.Random``; no dropout. Same seed on the same machine (and thread count) gives identical weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from droidspeak.zoo.corpus import Example

# the modules every adapter wraps: every linear layer of the decoder, lm_head excluded (the study pages name them)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ModelConfig:
    layers: int = 8
    hidden: int = 128
    intermediate: int = 256
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 1024
    rope_theta: float = 10000.0
    tie_embeddings: bool = (
        True  # a shared embedding makes the copy circuit one map for all tokens: it appears far sooner
    )


def new_model(cfg: ModelConfig, tokenizer, seed: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.where(torch.tensor(e.mask), ids[row, :n], torch.tensor(-100))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class Schedule:
    steps: int
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    batch_size: int = 16
    grad_clip: float = 1.0


@dataclass
class Curve:
    """The learning curve of one training phase: (step, loss, seconds) every ``every`` steps."""

    phase: str
    points: list[tuple[int, float, float]] = field(default_factory=list)


def train(
    model: nn.Module,
    batch: Callable[[int], list[Example]],
    schedule: Schedule,
    *,
    pad_id: int,
    phase: str,
    log_every: int = 50,
    on_step: Callable[[int, float], None] | None = None,
) -> Curve:
    """Adam at a constant LR after a linear warm-up (cosine decay hurt the lookup circuit); ``batch(step)``
    gives the step's examples."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay, betas=(0.9, 0.98))
    curve, start, running = Curve(phase), time.perf_counter(), []
    model.train()
    for step in range(schedule.steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr * min(1.0, (step + 1) / max(1, schedule.warmup))
        loss = model(**collate(batch(step), pad_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, schedule.grad_clip)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == schedule.steps:
            curve.points.append((step + 1, sum(running) / len(running), round(time.perf_counter() - start, 2)))
            running = []
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return curve


def add_lora(model: nn.Module, rank: int, alpha: int, seed: int, invocation: list[int] | None = None) -> nn.Module:
    """Wrap ``model`` with a peft LoRA adapter on every linear layer of the decoder (lm_head excluded); with
    ``invocation`` an activated LoRA, applied from the last occurrence of those tokens on."""
    import peft
    from peft import LoraConfig, get_peft_model

    activated = {"alora_invocation_tokens": list(invocation)} if invocation else {}  # peft 0.17 knows no such key
    if activated and "alora_invocation_tokens" not in LoraConfig.__dataclass_fields__:
        raise RuntimeError(f"training an activated LoRA needs peft >= 0.18 (this is peft {peft.__version__}): "
                           "pip install -U peft")
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",  # aLoRA needs it: without, peft silently applies no adapter
        **activated,
    )
    return get_peft_model(model, config)
