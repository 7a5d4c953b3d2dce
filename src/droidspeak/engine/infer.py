"""Receiver-side inference on top of a prefilled context batch: log-likelihoods and generation.

The tail (query suffix, then any continuation) is receiver-only: it runs through the receiver's own forward
against the mixed cache. Tails are left-padded after the right-padded contexts, so every row ends on a real
token (generation appends there) and no query row is ever fully masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from droidspeak.engine.batch import PrefilledBatch, adopt, context_cache
from droidspeak.engine.loading import LoadedModel
from droidspeak.errors import DroidSpeakError
from droidspeak.hf_compat import cache_arg


@dataclass
class TailBatch:
    input_ids: torch.Tensor  # [B, S] left-padded tail ids
    attention_mask: torch.Tensor  # [B, T + S] context mask then tail mask
    position_ids: torch.Tensor  # [B, S] true positions (context length + offset)


def tail_batch(prefilled: PrefilledBatch, tails: Sequence[torch.Tensor], pad_id: int = 0) -> TailBatch:
    if len(tails) != prefilled.token_ids.shape[0]:
        raise ValueError(f"{len(tails)} tails for a batch of {prefilled.token_ids.shape[0]} contexts")
    if any(t.numel() == 0 for t in tails):
        raise ValueError("every tail needs at least one token")
    device = prefilled.token_ids.device
    longest = max(t.numel() for t in tails)
    ids = torch.full((len(tails), longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, tail in enumerate(tails):
        ids[row, longest - tail.numel() :] = tail.to(device)
        mask[row, longest - tail.numel() :] = 1
    positions = prefilled.lengths[:, None] + (mask.cumsum(-1) - 1).clamp(min=0)
    return TailBatch(ids, torch.cat([prefilled.attention_mask, mask], dim=-1), positions)


def check_window(receiver: LoadedModel, prefilled: PrefilledBatch, batch: TailBatch, new_tokens: int = 0) -> None:
    """Refuse a batch whose tails sliding-window layers would mask wrongly.

    transformers measures a sliding window in cache slots, not positions. Contexts are right-padded and tails
    left-padded, so a shorter row's tail sits after padding, and once the batch spans more than the window that
    padding counts as distance: the row would lose keys its own window holds. Rows whose contexts and tails have
    one length each, or a batch inside the window, are exact; anything else runs one context at a time.
    """
    window = getattr(receiver.config, "sliding_window", None)
    if not window or "sliding_attention" not in receiver.stack.layer_types:
        return
    context, tail = prefilled.lengths, batch.attention_mask[:, prefilled.token_ids.shape[1]:]
    gapless = int(context.min()) == int(context.max()) and bool(tail.all())
    span = batch.attention_mask.shape[1] + new_tokens
    if not gapless and span > window:
        raise DroidSpeakError(
            f"contexts of {int(context.min())}-{int(context.max())} tokens with tails of {int(tail.sum(-1).min())}-"
            f"{tail.shape[1]} (+{new_tokens} new) span more than the sliding window ({window}) in one batch: padding "
            "would count against a row's window. Run them one context at a time (batch_size=1), or batch rows of "
            "one context length and one tail length")


def check_positions(receiver: LoadedModel, prefilled: PrefilledBatch, batch: TailBatch, new_tokens: int = 0) -> None:
    """Context + tail + new tokens must fit the model's trained positions: past them RoPE extrapolates silently."""
    limit = getattr(receiver.config, "max_position_embeddings", None)
    tails = batch.attention_mask[:, prefilled.token_ids.shape[1]:].sum(-1)
    longest = int((prefilled.lengths + tails).max()) + new_tokens
    if limit and longest > limit:
        raise DroidSpeakError(
            f"a context of up to {int(prefilled.lengths.max())} tokens, a tail of up to {int(tails.max())} and "
            f"{new_tokens} new tokens need {longest} positions; the model has {limit} (max_position_embeddings): "
            "shorten the context or ask for fewer new tokens")


def check_finite(logits: torch.Tensor, what: str) -> torch.Tensor:
    """A NaN (or +Inf) logit is refused, not turned into an empty answer or a log-likelihood of nan."""
    if bool(torch.isnan(logits).any() or torch.isposinf(logits).any()):
        raise DroidSpeakError(f"the receiver's logits turned NaN or Inf ({what}): a cache or weights that diverged; "
                              "this point is not scored")
    return logits


class _FiniteLogits(LogitsProcessor):
    """Stops generation at the first step whose logits are not finite (greedy would answer with token 0)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return check_finite(scores, f"at generated token {input_ids.shape[1]}")


class RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` that appends into room reserved up front instead of concatenating.

    Why: ``DynamicLayer.update`` copies the whole cache at every decode step; over a 2K-token context that copy
    was ~40% of generation time on CPU. Here a step writes only its new tokens. Anything that replaces the
    tensors (a batch reorder, a cache that outgrew its room) falls back to ``DynamicLayer``'s own update.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int):
        super().__init__()
        length = keys.shape[-2]
        self._keys = keys.new_empty((*keys.shape[:-2], length + room, keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:-2], length + room, values.shape[-1]))
        self._keys[..., :length, :].copy_(keys)
        self._values[..., :length, :].copy_(values)
        adopt(self, self._keys[..., :length, :], self._values[..., :length, :])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        length, new = self.keys.shape[-2], key_states.shape[-2]
        if self.keys.data_ptr() != self._keys.data_ptr() or length + new > self._keys.shape[-2]:
            return super().update(key_states, value_states, *args, **kwargs)
        self._keys[..., length : length + new, :].copy_(key_states)
        self._values[..., length : length + new, :].copy_(value_states)
        self.keys, self.values = self._keys[..., : length + new, :], self._values[..., : length + new, :]
        return self.keys, self.values


def roomy_cache(cache: DynamicCache, room: int) -> DynamicCache:
    """A copy of ``cache`` (a context batch's: plain layers, engine.batch.context_cache) for generation: every layer
    appends ``room`` tokens in place; ``cache`` itself is left as it was, ready for the next tails."""
    copy = context_cache()
    copy.layers = [RoomyLayer(layer.keys, layer.values, room) for layer in cache.layers]
    return copy


def rewind(prefilled: PrefilledBatch) -> None:
    """Drop whatever a tail appended, so the context cache can serve the next tails of the same contexts."""
    extra = prefilled.cache.get_seq_length() - prefilled.token_ids.shape[1]
    if extra > 0:
        prefilled.cache.crop(-extra)


@torch.inference_mode()
def tail_logits(receiver: LoadedModel, prefilled: PrefilledBatch, tails: Sequence[torch.Tensor],
                last: int = 0) -> torch.Tensor:
    """Logits of every tail position, [B, S, vocab] (``last`` > 0: of the last ``last`` positions only); the cache is
    cropped back so it can serve the next tails."""
    receiver.check_tails(tails)
    batch = tail_batch(prefilled, tails)
    check_window(receiver, prefilled, batch)
    check_positions(receiver, prefilled, batch)
    out = receiver.model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=True,
        logits_to_keep=last,
        **cache_arg(prefilled.cache),
    )
    rewind(prefilled)
    return check_finite(out.logits, "over the tails")


# generation settings under which greedy decoding is no longer the argmax of the model's own logits
_LOGITS_SETTINGS = ("repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
                    "begin_suppress_tokens", "min_length", "min_new_tokens", "forced_bos_token_id",
                    "forced_eos_token_id", "sequence_bias", "encoder_repetition_penalty",
                    "exponential_decay_length_penalty")


def greedy_is_argmax(model: LoadedModel) -> bool:
    """Whether ``generate``'s greedy tokens are the argmax of the model's logits: no generation setting alters them
    (an activated LoRA is left out too: a draft may hold its invocation, which check_tails refuses in a tail)."""
    config, default = model.model.generation_config, type(model.model.generation_config)()
    return not model.invocation and all(getattr(config, k, None) == getattr(default, k, None) for k in _LOGITS_SETTINGS)


@torch.inference_mode()
def checked_drafts(receiver: LoadedModel, prefilled: PrefilledBatch, suffixes: Sequence[torch.Tensor],
                   drafts: Sequence[torch.Tensor], max_new_tokens: int) -> list[torch.Tensor | None]:
    """Each row's greedy answer where ``drafts[row]`` is it, else None, from one forward over suffix + draft.

    Why: greedy decoding reads the whole cache once per new token, and in a profile most plans answer as the
    receiver does; teacher-forcing the receiver's own answer reads it once for all of them. A draft is the greedy
    answer when each of its tokens is the argmax after the ones before it and it ends where ``generate`` stops: at
    its first EOS, or after ``max_new_tokens`` tokens. (One forward over many positions may round differently from
    one position at a time: bench.profile_cost counts the answers that differ.)"""
    if not greedy_is_argmax(receiver):
        return [None] * len(drafts)
    stop = eos_ids(receiver)
    ends = [0 < d.numel() <= max_new_tokens and (int(d[-1]) in stop or d.numel() == max_new_tokens) for d in drafts]
    longest = max(d.numel() for d in drafts)
    logits = tail_logits(receiver, prefilled, [torch.cat([s, d]) for s, d in zip(suffixes, drafts)], last=longest + 1)
    width = logits.shape[1]
    checked = []
    for row, (draft, ends_right) in enumerate(zip(drafts, ends)):
        greedy = logits[row, width - draft.numel() - 1 : width - 1].argmax(-1).cpu()
        checked.append(draft if ends_right and torch.equal(greedy, draft) else None)
    return checked


def continuation_logprobs(
    receiver: LoadedModel,
    prefilled: PrefilledBatch,
    suffixes: Sequence[torch.Tensor],
    continuations: Sequence[torch.Tensor],
) -> list[tuple[float, bool]]:
    """log P(continuation | context, suffix) and whether it is the greedy continuation, per row (lm-eval's pair)."""
    tails = [torch.cat([s, c]) for s, c in zip(suffixes, continuations)]
    logits = tail_logits(receiver, prefilled, tails).float()
    width = logits.shape[1]
    results = []
    for row, continuation in enumerate(continuations):
        n = continuation.numel()
        predicted = logits[row, width - n - 1 : width - 1].log_softmax(-1)
        target = continuation.to(predicted.device)
        logprob = predicted.gather(-1, target[:, None]).sum().item()
        results.append((logprob, bool((predicted.argmax(-1) == target).all())))
    return results


@torch.inference_mode()
def generate(
    receiver: LoadedModel,
    prefilled: PrefilledBatch,
    suffixes: Sequence[torch.Tensor],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    seed: int | None = None,
    **generation_kwargs,
) -> list[torch.Tensor]:
    """Generate the receiver's answer after each suffix with transformers' own ``generate``.

    Returns the new tokens of each row, through its first EOS if one was generated.

    ``generation_kwargs`` go to ``model.generate`` (temperature, top_p, eos_token_id, stop_strings...).
    Sampling is reproducible from ``seed`` without touching the caller's global RNG state.
    """
    receiver.check_tails(suffixes)
    batch = tail_batch(prefilled, suffixes)
    check_window(receiver, prefilled, batch, max_new_tokens)
    check_positions(receiver, prefilled, batch, max_new_tokens)
    input_ids = torch.cat([prefilled.token_ids, batch.input_ids], dim=-1)
    config = receiver.model.generation_config
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    devices = [receiver.device] if receiver.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        sequences = receiver.model.generate(
            input_ids=input_ids,
            attention_mask=batch.attention_mask,
            **cache_arg(roomy_cache(prefilled.cache, batch.input_ids.shape[1] + max_new_tokens)),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([_FiniteLogits(), *generation_kwargs.pop("logits_processor", [])]),
            **generation_kwargs,
        )
    new_tokens = sequences[:, input_ids.shape[1] :].cpu()
    stop = eos_ids(receiver)
    return [_cut_at_eos(row, stop) for row in new_tokens]


def eos_ids(model: LoadedModel) -> set[int]:
    """The token ids that end an answer: the model's generation config's EOS (one id, several, or none)."""
    eos = model.model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _cut_at_eos(tokens: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """Keep tokens through the first EOS (as transformers returns them), dropping the padding after it."""
    for index, token in enumerate(tokens.tolist()):
        if token in eos_ids:
            return tokens[: index + 1]
    return tokens
