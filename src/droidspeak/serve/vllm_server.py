"""The same queries served by vLLM, what a user would deploy fine-tunes with today, in either of its two ways:
- ``adapters``: one engine over the base, every LoRA receiver as an adapter (``LoRARequest``), continuous batching
  across adapters; vLLM keys each cached block by its adapter, so one fine-tune's cache never serves another (the
  redundancy DroidSpeak removes);
- ``merged``: every receiver a model of its own (a LoRA merged into its base: Family.export_merged), one engine each,
  no LoRA path; the engines share the machine.
Automatic prefix caching on, greedy decoding. Rows are :class:`droidspeak.serve.loop.ServedRow`, timed on the same
wall clock, over the same token ids (the context as our server tokenizes it, then the query tail), refused on the
same rules.

vLLM is not a dependency of the project: it lives in its own virtual environment (``make vllm-venv``), and this module
imports it only when a server is built.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from droidspeak.engine.answers import question_ids
from droidspeak.errors import DroidSpeakError
from droidspeak.serve.loop import ServedRow, refusal_of, refused
from droidspeak.serve.workload import BadLine, Query

MODES = ("adapters", "merged")


class VllmServer:
    """``receivers``: name → (model directory, adapter directory or None). ``mode="adapters"``: every receiver shares
    one base and is served as its adapter by one engine; ``"merged"``: every receiver's directory is a whole model
    (no adapter), served by an engine of its own. ``kv_cache_gib``: each engine's KV cache (VLLM_CPU_KVCACHE_SPACE)."""

    def __init__(self, receivers: Mapping[str, tuple[str, str | None]], contexts: Mapping[str, str], *,
                 max_new_tokens: int, dtype: str = "float32", max_model_len: int = 8192, mode: str = "adapters",
                 kv_cache_gib: int = 4, score: Callable[[Query, str], float] | None = None, seed: int = 0):
        from transformers import AutoTokenizer
        from vllm import EngineArgs, LLMEngine
        from vllm.lora.request import LoRARequest

        if mode not in MODES:
            raise DroidSpeakError(f"vLLM mode {mode!r}: one of {', '.join(MODES)}")
        if mode == "merged" and any(adapter for _, adapter in receivers.values()):
            raise DroidSpeakError("merged mode serves whole models: give each receiver's merged directory, no adapter")
        if mode == "adapters" and len({base for base, _ in receivers.values()}) != 1:
            raise DroidSpeakError("one vLLM engine serves one base and its adapters; these receivers have "
                                  f"{sorted({base for base, _ in receivers.values()})}")
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)  # read when an engine starts (else ~all memory)
        adapters = {name: adapter for name, (_, adapter) in receivers.items() if adapter}
        self.lora = {name: LoRARequest(name, index + 1, adapter) for index, (name, adapter) in
                     enumerate(sorted(adapters.items()))}
        rank = max((_lora_rank(a) for a in adapters.values()), default=8)  # vLLM sizes its LoRA kernels by this
        self.engine_of = {name: path for name, (path, _) in receivers.items()}  # receiver → its engine's model dir
        self.engines = {path: LLMEngine.from_engine_args(EngineArgs(
            model=path, dtype=dtype, enforce_eager=True, enable_prefix_caching=True, seed=seed,
            max_model_len=max_model_len, enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
            max_lora_rank=rank)) for path in dict.fromkeys(self.engine_of.values())}
        self.tokenizer = AutoTokenizer.from_pretrained(next(iter(self.engine_of.values())))
        self.receivers, self.contexts, self.mode = dict(receivers), dict(contexts), mode
        self.max_new_tokens, self.max_model_len, self.score = max_new_tokens, max_model_len, score
        self._context_ids: dict[str, list[int]] = {}

    def _context(self, query: Query) -> list[int]:
        """The context's tokens, tokenized once (refusal, row and prompt all need them, inside the timed loop)."""
        if query.context_id not in self._context_ids:
            self._context_ids[query.context_id] = self.tokenizer(self.contexts[query.context_id])["input_ids"]
        return self._context_ids[query.context_id]

    def _prompt(self, query: Query) -> list[int]:
        return self._context(query) + question_ids(self.tokenizer, query.question)

    def warm_up(self, tokens: int = 64) -> None:
        """One short untimed request per receiver (vLLM loads an adapter into its slot on first use)."""
        from vllm import SamplingParams

        ids = self.tokenizer(next(iter(self.contexts.values()), ""))["input_ids"][:tokens][::-1]  # no context's prefix
        for index, name in enumerate(self.receivers):
            self.engines[self.engine_of[name]].add_request(f"warm-{index}", {"prompt_token_ids": ids},
                                                           SamplingParams(max_tokens=2),
                                                           lora_request=self.lora.get(name))
        while any(engine.has_unfinished_requests() for engine in self.engines.values()):
            self._step()

    def _step(self) -> list:
        """One step of every engine with work (merged: the engines take turns on the machine)."""
        return [output for engine in self.engines.values() if engine.has_unfinished_requests()
                for output in engine.step()]

    def run(self, queries: Sequence[Query | BadLine]) -> list[ServedRow]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens,
                                output_kind=RequestOutputKind.CUMULATIVE)
        rows: dict[int, ServedRow] = {}
        live: dict[str, Query] = {}
        pending = sorted(queries, key=lambda q: (q.arrival if q.arrival is not None else -1.0, q.rid))
        start = time.perf_counter()
        now = lambda: time.perf_counter() - start  # noqa: E731
        while pending or live:
            while pending and (pending[0].arrival is None or pending[0].arrival <= now()):
                query = pending.pop(0)
                why = refusal_of(query, self.receivers, self.contexts, lambda q: len(self._prompt(q)),
                                 self.max_new_tokens, self.max_model_len)
                if why is not None:
                    rows[query.rid] = refused(query, why)
                    continue
                # vLLM schedules inside the engine: when its prefill starts is not seen here (queueing stays None)
                rows[query.rid] = ServedRow(query.rid, query.receiver, query.context_id, query.arrival, plan="vllm",
                                            context_tokens=len(self._context(query)))
                self.engines[self.engine_of[query.receiver]].add_request(
                    str(query.rid), {"prompt_token_ids": self._prompt(query)}, params,
                    lora_request=self.lora.get(query.receiver))
                live[str(query.rid)] = query
            if not live:
                if pending:
                    time.sleep(max(0.0, pending[0].arrival - now()))
                continue
            outputs = self._step()
            stamp = now()
            for output in outputs:
                query = live[output.request_id]
                row, tokens = rows[query.rid], list(output.outputs[0].token_ids)
                row.token_times += [stamp] * (len(tokens) - len(row.token_times))
                if output.finished:
                    del live[output.request_id]
                    cached = getattr(output, "num_cached_tokens", None) or 0  # its prefix cache hit (per adapter)
                    row.cache_from = f"own prefix ({cached} tokens)" if cached else None
                    answer = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    row.finish(answer, None if self.score is None else self.score(query, answer))
        return [rows[rid] for rid in sorted(rows)]


def _lora_rank(adapter: str) -> int:
    """An adapter's rank, from its peft config."""
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
