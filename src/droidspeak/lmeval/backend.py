"""The ``droidspeak`` lm-eval backend: the receiver answers, reusing the sender's cache of the shared context.

Built like lm-eval's ``hf_steered``: subclass ``HFLM`` (so tokenization, batching, truncation, stop handling and
request bookkeeping are exactly the ``hf`` backend's) and replace only the two model calls. Each prompt splits at
the LAST ``context_delimiter``: the tokens before it are the shared context, whose sender cache is computed once
per distinct context and reused by every request (and, with ``cache_dir``, every receiver) that shares it; the
rest of the prompt and the continuation run through the receiver's own forward on top of the mixed cache.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import stop_sequences_criteria

from droidspeak.codec import get_codec
from droidspeak.engine import generate, receiver_prefill, tail_logits
from droidspeak.engine.batch import PrefilledBatch, held_prefill, prefill_rows
from droidspeak.engine.cache import ContextCache, cache_key
from droidspeak.engine.plan import PrefillCost, RecomputePlan, total_cost
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.profile_file import resolve_profile_plan
from droidspeak.reuse import ReusePair
from droidspeak.store import DiskStore, MemoryStore, TieredStore
from droidspeak.transfer import transmit

eval_logger = logging.getLogger(__name__)

# HFLM's own options a droidspeak run may set (the rest would load or place the model behind our back).
HFLM_OPTIONS = ("max_length", "max_batch_size", "add_bos_token", "truncation", "logits_cache", "softmax_dtype",
                "prefix_token_id", "think_end_token", "enable_thinking", "chat_template_args")
MISSING_DELIMITER = ("error", "receiver_only")
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\r`` typed in a shell (``model_args`` arrive unprocessed) read as the characters."""
    for typed, char in _ESCAPES.items():
        text = text.replace(typed, char)
    return text


def check_model_args(extra: dict) -> None:
    """A ``model_args`` key no code reads (a typo such as ``pln=``) is an error naming every valid key."""
    unknown = sorted(set(extra) - set(HFLM_OPTIONS))
    if unknown:
        ours = [name for name, p in inspect.signature(DroidSpeakLM).parameters.items() if p.kind != p.VAR_KEYWORD]
        raise DroidSpeakError(f"unknown model_args {', '.join(unknown)}: droidspeak reads {', '.join(ours)}, and "
                              f"passes {', '.join(HFLM_OPTIONS)} to lm-eval's hf backend")


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def cache_environment_report() -> None:
    """lm-eval records torch's environment report in every result (``add_env_info``); building it runs ``pip list``
    and other subprocesses, over a second per run. It cannot change within a process, so build it once."""
    import torch.utils.collect_env as collect_env

    if not hasattr(collect_env.get_pretty_env_info, "cache_info"):
        collect_env.get_pretty_env_info = functools.lru_cache(maxsize=1)(collect_env.get_pretty_env_info)


@register_model("droidspeak")
class DroidSpeakLM(HFLM):
    """lm-eval model ``droidspeak``: see the module docstring and README for ``model_args``."""

    def __init__(
        self,
        receiver: str,
        sender: str | None = None,
        receiver_adapter: str | None = None,
        sender_adapter: str | None = None,
        plan: str = "full_prefill",
        context_delimiter: str = "\n\n",
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | str = 1,
        e_layers: str = "plan",
        cache_dir: str | None = None,
        max_cache_gb: float = 4.0,
        trust_remote_code: bool = False,
        allow_foreign_profile: bool = False,
        allow_mismatch: str = "",
        transfer_codec: str = "lossless",
        missing_delimiter: str = "error",
        **kwargs,
    ):
        check_model_args(kwargs)  # before any model loads
        context_delimiter = unescape(str(context_delimiter))
        if not context_delimiter:
            raise DroidSpeakError("context_delimiter must be a non-empty string")
        if missing_delimiter not in MISSING_DELIMITER:
            raise DroidSpeakError(f"missing_delimiter={missing_delimiter!r}: one of {', '.join(MISSING_DELIMITER)}")
        codec = get_codec(
            transfer_codec
        )  # what the sender's cache crosses the link as; a bad name fails before loading
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            eval_logger.warning("device %s requested but CUDA is not available: running on cpu", device)
            device = "cpu"
        self.pair = ReusePair.from_pretrained(
            receiver=receiver,
            sender=sender or receiver,
            receiver_adapter=receiver_adapter,
            sender_adapter=sender_adapter if sender else (sender_adapter or receiver_adapter),
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            allow_mismatch=[name for name in str(allow_mismatch or "").split("+") if name],  # e.g. rope+sliding_window
        )
        for warning in self.pair.warnings:
            eval_logger.warning("%s", warning)
        if self.pair.receiver.tokenizer is None:
            raise DroidSpeakError(f"receiver {receiver!r} ships no tokenizer; lm-eval needs one")
        self.plan = self.pair.plan(plan)
        self.profile = None  # the profile a profile: plan resolved through (provenance for the results row)
        if self.plan.kind == "profile":  # cacheblend plans run as they are (they need K/V only, no E)
            self.profile = resolve_profile_plan(
                self.plan, self.pair.num_layers, receiver=self.pair.receiver.fingerprint.identity,
                sender=self.pair.sender.fingerprint.identity, allow_foreign=bool(allow_foreign_profile),
            )
            if self.profile.foreign:
                eval_logger.warning("profile %s was measured on the pair %s, not this one: applied because "
                                    "allow_foreign_profile is set", self.profile.path, self.profile.pair)
            self.plan = self.profile.plan
        self.codec = codec
        self.context_delimiter, self.missing_delimiter = context_delimiter, missing_delimiter
        self.e_layers = "all" if e_layers == "all" else self.plan
        self._full_sliding = self.plan.kind == "cacheblend"  # it reads sliding layers' K/V beyond their last window
        memory = MemoryStore(self.pair.sender.device, pin=False, capacity_bytes=int(float(max_cache_gb) * 2**30))
        self.store = TieredStore([memory, *([DiskStore(cache_dir)] if cache_dir else [])])
        self._held_prefill = held_prefill(self._receiver_prefill)  # the last receiver prefill, for the next batch
        self._shared_lengths: dict[tuple[int, ...], int] = {}
        self.stats = {"sender_prefills": 0, "sender_cache_hits": 0,
                      "receiver_prefill_seconds": 0.0, "costs": [],
                      "transfer_bytes": 0}
        super().__init__(
            pretrained=self.pair.receiver.model, tokenizer=self.pair.receiver.tokenizer, batch_size=batch_size, **kwargs
        )
        self._max_positions = getattr(self.pair.receiver.config, "max_position_embeddings", None) or self.max_length
        if self.max_length > self._max_positions:  # past them RoPE extrapolates silently
            raise DroidSpeakError(f"max_length={self.max_length} exceeds the receiver's {self._max_positions} "
                                  "positions (max_position_embeddings)")

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "DroidSpeakLM":
        """``model_args`` win over the CLI's own flags: lm-eval always passes --device (default cuda:0) and
        --batch_size, which would otherwise collide with the contract's ``device=`` / ``batch_size=`` model_args."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "DroidSpeakLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---- where the prompt splits ----------------------------------------------------------------------------
    def _shared_tokens(self, context: str, context_enc: Sequence[int]) -> int:
        """How many leading tokens of ``context_enc`` are the shared context (text before the last delimiter)."""
        cut = context.rfind(self.context_delimiter)
        if cut < 0:  # never the whole prompt: the question would be served from a sender's cache
            if self.missing_delimiter == "receiver_only":
                return 0
            shown = context if len(context) <= 160 else f"{context[:80]}…{context[-60:]}"
            raise DroidSpeakError(
                f"the prompt {shown!r} holds no context_delimiter {self.context_delimiter!r}, so its shared context "
                "is unknown: set context_delimiter to what the task puts between context and question, or "
                "missing_delimiter=receiver_only to run such prompts on the receiver alone")
        return common_prefix_length(self.tok_encode(context[:cut]), context_enc)

    def _check_fits(self, prompt: int, new_tokens: int, what: str) -> None:
        """HFLM would cut a request longer than ``max_length`` from the left, and score or answer what is left as if
        it were the whole: refused instead, with the numbers, before any compute."""
        if prompt + new_tokens > self.max_length:
            raise DroidSpeakError(
                f"{what}: {prompt} prompt tokens + {new_tokens} to generate exceed max_length {self.max_length} "
                f"(the model has {self._max_positions} positions); lm-eval would drop its first "
                f"{prompt + new_tokens - self.max_length} tokens: use shorter contexts")

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        for key, context_enc, continuation_enc in requests:
            whole = list(context_enc) + list(continuation_enc)
            self._check_fits(len(whole) - 1, 0, "a log-likelihood request")
            row = whole[-(self.max_length + 1) :][:-1]  # exactly what HFLM feeds the model
            dropped = len(whole) - 1 - len(row)
            shared = self._shared_tokens(key[0], context_enc) if key is not None else len(context_enc)
            # the receiver must itself run the position that predicts the first continuation token
            self._shared_lengths[tuple(row)] = max(0, min(shared, len(context_enc) - 1) - dropped)
        return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

    def generate_until(self, requests, disable_tqdm: bool = False):
        for request in requests:
            context = request.args[0]
            encoded = self.tok_encode(context)
            options = request.args[1] if len(request.args) > 1 and isinstance(request.args[1], dict) else {}
            self._check_fits(len(encoded), int(options.get("max_gen_toks", self.max_gen_toks)), "a generation request")
            self._shared_lengths[tuple(encoded)] = self._shared_tokens(context, encoded)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def _lookup_shared(self, row: list[int]) -> int:
        key = tuple(row)
        while key not in self._shared_lengths and key and key[-1] == 0:  # HFLM right-pads with 0
            key = key[:-1]
        if key in self._shared_lengths:
            return self._shared_lengths[key]
        for tokens, shared in self._shared_lengths.items():  # left-truncated by HFLM
            if len(tokens) > len(row) and tuple(tokens[len(tokens) - len(row) :]) == tuple(row):
                return max(0, shared - (len(tokens) - len(row)))
        raise DroidSpeakError("internal: a model call for a request this backend never saw; please report it")

    # ---- sender side: one cache per distinct context --------------------------------------------------------
    def sender_caches(self, contexts: list[tuple[int, ...]]) -> list[ContextCache]:
        """The sender's cache of each context: from the store (memory, then ``cache_dir``), else prefilled now.

        A stored cache that lacks an E layer this plan needs (or, for CacheBlend, holds only the window of a sliding
        layer) is prefilled again, keeping the E layers it had; one that fails verification (corrupt, truncated,
        renamed: the disk tier sets it aside) is prefilled again too.
        """
        sender_digest = self.pair.sender.fingerprint.digest
        needed = set(self.plan.e_layers)
        keys = [cache_key(sender_digest, ids) for ids in contexts]
        found: dict[str, ContextCache] = {}
        missing: dict[str, tuple[int, ...]] = {}
        for key, ids in zip(keys, contexts):
            cache = found.get(key) or self.store.find(
                key, e_layers=needed, whole=self._full_sliding, device=self.pair.sender.device
            )
            if cache is None:
                missing[key] = ids
            else:
                found[key] = cache
                self.stats["sender_cache_hits"] += 1
        if missing:  # returned as computed: a small memory tier may already have evicted some of them again
            found |= self._prefill_sender(missing)
        return [found[key] for key in keys]

    def _prefill_sender(self, missing: dict[str, tuple[int, ...]]) -> dict[str, ContextCache]:
        fresh = self.pair.prefill([torch.tensor(ids) for ids in missing.values()], e_layers=self.e_layers,
                                  batch_size=self.batch_size, full_sliding=self._full_sliding)
        self.stats["sender_prefills"] += len(fresh)
        for key, cache in zip(missing, fresh):
            self.store.put(cache, key)  # through every tier, keeping a stored copy's other E layers
        return dict(zip(missing, fresh))

    def shared_contexts(self) -> list[tuple[int, ...]]:
        """Every distinct shared context this backend has seen, in a stable order."""
        return sorted({tokens[:n] for tokens, n in self._shared_lengths.items() if n > 0})

    # ---- receiver side ------------------------------------------------------------------------------------
    def _prefill(self, contexts: list[tuple[int, ...]]):
        """Receiver cache for each row's shared context; distinct contexts are prefilled once, and not again while
        the next batch reads the same ones (a context's questions often arrive one batch after another, and a
        sliding-window model's batches hold one question each)."""
        return prefill_rows(contexts, self._held_prefill)

    def _receiver_prefill(self, distinct: list[tuple[int, ...]]) -> PrefilledBatch:
        if self.plan.uses_cache:  # what the receiver holds after the link (lossy codecs decoded)
            inputs = [transmit(cache, self.plan, self.codec) for cache in self.sender_caches(distinct)]
            self.stats["transfer_bytes"] += sum(sent for _, sent in inputs)
            inputs = [cache for cache, _ in inputs]
        else:
            inputs = [torch.tensor(c) for c in distinct]
        start = time.perf_counter()
        prefilled = receiver_prefill(self.pair.receiver, inputs, self.plan)
        self.stats["receiver_prefill_seconds"] += time.perf_counter() - start
        self.stats["costs"].append(prefilled.cost)
        return prefilled

    def _check_unshared(self) -> None:
        """HFLM's own call runs the receiver's merged weights over the whole row: wrong for an activated LoRA."""
        if self.pair.receiver.context is not None:
            raise DroidSpeakError(
                f"a prompt with no shared context before its last context_delimiter {self.context_delimiter!r}: an "
                "activated LoRA receiver needs one (its adapter applies from the invocation that starts the rest)")

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        rows = inps.tolist()
        shared = [self._lookup_shared(row) for row in rows]
        logits = None
        reuse = [i for i, n in enumerate(shared) if n > 0]
        own = [i for i, n in enumerate(shared) if n == 0]
        if own:  # nothing to share (e.g. a one-token context): the receiver reads the whole row
            self._check_unshared()
            own_logits = super()._model_call(inps[own])
            logits = own_logits.new_zeros((len(rows), *own_logits.shape[1:]))
            logits[own] = own_logits
        if reuse:
            prefilled = self._prefill([tuple(rows[i][: shared[i]]) for i in reuse])
            tails = [inps[i, shared[i] :] for i in reuse]
            out = tail_logits(self.pair.receiver, prefilled, tails)
            if logits is None:
                logits = out.new_zeros((len(rows), inps.shape[1], out.shape[-1]))
            width = out.shape[1]
            for j, i in enumerate(reuse):
                n_tail = inps.shape[1] - shared[i]
                logits[i, shared[i] :] = out[j, width - n_tail :]
        return logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs):
        attention_mask = generation_kwargs.pop("attention_mask")
        rows = [context[i][attention_mask[i].bool()].tolist() for i in range(context.shape[0])]
        shared = [min(self._lookup_shared(row), len(row) - 1) for row in rows]
        if min(shared) < 1:  # a one-token prompt has nothing to share
            self._check_unshared()
            return super()._model_generate(
                context, max_length, stop, attention_mask=attention_mask, **generation_kwargs
            )
        prefilled = self._prefill([tuple(row[:n]) for row, n in zip(rows, shared)])
        tails = [torch.tensor(row[n:]) for row, n in zip(rows, shared)]
        input_length = prefilled.token_ids.shape[1] + max(t.numel() for t in tails)
        temperature = generation_kwargs.pop("temperature", 0.0)
        do_sample = generation_kwargs.pop("do_sample", None)
        if do_sample is None:
            do_sample = temperature > 0.0
        if do_sample:
            generation_kwargs["temperature"] = temperature
        new = generate(
            self.pair.receiver,
            prefilled,
            tails,
            max_new_tokens=max_length - context.shape[1],
            do_sample=do_sample,
            stopping_criteria=stop_sequences_criteria(self.tokenizer, stop, input_length, context.shape[0]),
            **generation_kwargs,
        )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        width = max(t.numel() for t in new)
        padded = torch.full((len(new), width), pad, dtype=context.dtype)
        for i, tokens in enumerate(new):
            padded[i, : tokens.numel()] = tokens
        return torch.cat([context.cpu(), padded], dim=1)

    # ---- what a sweep reads back ---------------------------------------------------------------------------
    def summary(self) -> BackendSummary:
        """What this backend did: the plan it ran, its summed prefill cost, and its sender-cache traffic."""
        return BackendSummary(
            plan=self.plan,
            num_layers=self.pair.num_layers,
            cost=total_cost(self.stats["costs"]),
            sender_prefills=self.stats["sender_prefills"],
            sender_cache_hits=self.stats["sender_cache_hits"],
            shared_contexts=len(self.shared_contexts()),
            profile=None if self.profile is None else self.profile.record(),
            warnings=list(self.pair.warnings),
            codec=self.codec.name,
            transfer_bytes=self.stats["transfer_bytes"] if self.plan.uses_cache else None,
            invocation=self.pair.receiver.invocation,
        )


@dataclass(frozen=True)
class BackendSummary:
    plan: RecomputePlan
    num_layers: int
    cost: PrefillCost | None  # summed over every receiver prefill (None before the first)
    sender_prefills: int
    sender_cache_hits: int
    shared_contexts: int
    profile: dict | None = None  # ResolvedProfile.record() of a profile: plan
    warnings: list[str] = field(default_factory=list)  # the pair mismatches allow_mismatch accepted
    codec: str = "lossless"  # the transfer codec
    transfer_bytes: int | None = None  # bytes that crossed the link through it, summed over every receiver prefill
    invocation: tuple[int, ...] = ()  # an activated LoRA receiver's invocation tokens
