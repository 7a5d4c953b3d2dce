"""The executing server: the serving loop (droidspeak.serve.loop) run on the wall clock with the engine, caches kept in
one of our store tiers (bounded, LRU). Every model prefills with its context weights (an activated LoRA's are its
base's), so an aLoRA finds its base's cache as its own. Our engine merges each adapter into its own weights, so a
batch holds one receiver's queries only: batching across adapters would need the base's weights shared and each row's
adapter applied beside them (punica / S-LoRA kernels, vLLM's multi-LoRA), which the engine does not do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

from droidspeak.engine.answers import question_ids
from droidspeak.engine.batch import prefill_rows
from droidspeak.engine.cache import ContextCache, cache_key
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import parse_plan
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.errors import DroidSpeakError
from droidspeak.serve.cohort import Cohort
from droidspeak.serve.loop import FULL_PREFILL, ServingLoop, refusal_of
from droidspeak.serve.workload import BadLine, Query
from droidspeak.store.base import CacheStore


class Server(ServingLoop):
    """Serves queries with ``models`` (name → loaded model; every receiver and every model whose cache may be reused),
    ``plans`` ((receiver, cache owner) → a concrete plan; a pair without one never shares), ``contexts`` (context id →
    text), ``store`` (the bounded cache tier). ``score(query, answer)`` scores an answer (None: unscored)."""

    def __init__(self, models: Mapping[str, LoadedModel], plans: Mapping[tuple[str, str], str],
                 contexts: Mapping[str, str], store: CacheStore, *, max_new_tokens: int, max_batch: int = 4,
                 score: Callable[[Query, str], float] | None = None, clock: Callable[[], float] = time.perf_counter):
        unknown = sorted({name for pair in plans for name in pair} - set(models))
        if unknown:
            raise DroidSpeakError(f"plans name models the server does not hold: {', '.join(unknown)}")
        concrete = {pair: _concrete(pair, plan, models[pair[0]].stack.num_layers) for pair, plan in plans.items()}
        super().__init__(concrete, max_new_tokens=max_new_tokens, max_batch=max_batch)
        self.models, self.contexts, self.store = dict(models), dict(contexts), store
        self.score, self.clock = score, clock
        self._tokens: dict[tuple[str, str], torch.Tensor] = {}
        self.not_stored: list[str] = []  # why a cache was not kept (bigger than the whole tier)
        self.e_layers = {name: sorted({layer for (_, owner), plan in self.plans.items() if owner == name
                                       for layer in parse_plan(plan, models[name].stack.num_layers).e_layers})
                         for name in models}  # a CacheBlend plan needs none

    def warm_up(self, tokens: int = 64) -> None:
        """One short untimed request per model (its first kernels and allocations are not a request's latency)."""
        text = next(iter(self.contexts.values()), "")
        for model in self.models.values():
            ids = torch.tensor(model.tokenizer(text)["input_ids"][:tokens], dtype=torch.long)
            prefilled = receiver_prefill(model, [ids], FULL_PREFILL)
            cohort = Cohort(model, prefilled, [ids[-4:]] if not model.invocation else [torch.tensor(model.invocation)],
                            2)
            while not cohort.done:
                cohort.step()

    # ---- the loop's hooks --------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def refusal(self, query: Query | BadLine) -> str | None:
        model = self.models.get(getattr(query, "receiver", None))
        positions = getattr(model.config, "max_position_embeddings", None) if model is not None else None
        prompt = lambda q: len(self._ids(q.receiver, q.context_id)) + len(self._tail(q.receiver, q))  # noqa: E731
        return refusal_of(query, self.models, self.contexts, prompt, self.max_new_tokens, positions)

    def holds(self, owner: str, context_id: str) -> bool:
        return self._key(owner, context_id) in self.store

    def read(self, owner: str, context_id: str) -> ContextCache:
        cache = self.store.get(self._key(owner, context_id))
        digest = self.models[owner].context_model.fingerprint.digest  # a cache another model wrote is refused
        cache.check_for(sender=digest, token_ids=self._ids(owner, context_id))
        return cache

    def context_prefill(self, receiver: str, context_ids: list[str]) -> dict[str, ContextCache]:
        caches = sender_prefill(self.models[receiver].context_model, [self._ids(receiver, c) for c in context_ids],
                                e_layers=self.e_layers[receiver])
        for cache in caches:
            try:
                self.store.put(cache)
            except DroidSpeakError as error:  # bigger than the whole tier: served from this prefill, kept nowhere
                self.not_stored.append(str(error))
        return dict(zip(context_ids, caches))

    def start(self, receiver: str, plan: str, queries: list[Query], caches: Mapping[str, ContextCache]) -> Cohort:
        model = self.models[receiver]
        prefilled = prefill_rows([q.context_id for q in queries],
                                 lambda ids: receiver_prefill(model, [caches[c] for c in ids], plan))
        return Cohort(model, prefilled, [self._tail(receiver, q) for q in queries], self.max_new_tokens)

    def answer(self, query: Query, tokens: list[int]) -> tuple[str, float | None]:
        text = self.models[query.receiver].tokenizer.decode(tokens, skip_special_tokens=True)
        return text, None if self.score is None else self.score(query, text)

    def context_tokens(self, receiver: str, context_id: str) -> int:
        return len(self._ids(receiver, context_id))

    def cache_bytes(self, cache: ContextCache) -> int:
        return cache.nbytes()

    # ---- tokens and keys ---------------------------------------------------------------------------------------
    def _key(self, owner: str, context_id: str) -> str:
        return cache_key(self.models[owner].context_model.fingerprint.digest, self._ids(owner, context_id))

    def _ids(self, receiver: str, context_id: str) -> torch.Tensor:
        key = (receiver, context_id)
        if key not in self._tokens:
            tokenizer = self.models[receiver].tokenizer
            self._tokens[key] = torch.tensor(tokenizer(self.contexts[context_id])["input_ids"], dtype=torch.long)
        return self._tokens[key]

    def _tail(self, receiver: str, query: Query) -> torch.Tensor:
        return torch.tensor(question_ids(self.models[receiver].tokenizer, query.question), dtype=torch.long)


def _concrete(pair: tuple[str, str], plan: str, num_layers: int) -> str:
    spec = parse_plan(plan, num_layers)
    if spec.kind == "profile" or not spec.uses_cache:
        raise DroidSpeakError(f"plan for {pair[0]}<-{pair[1]}: {plan!r} is not a reuse plan (resolve a profile first; "
                              "a pair that should not share has no plan)")
    return plan
