"""A multi-receiver server that executes its requests: queries arrive on the wall clock, prefills are batched per
receiver and decode steps interleaved with them, and every request is served with the plan its pair's profile
chose over whichever cache of its context the store holds.

Where a receiver's context cache comes from, in order: its own (a prefix cache: every layer reused, exact); another
model's, where a plan is known for (receiver, that model) (DroidSpeak: the plan's groups recomputed, the rest
reused); else its own full prefill, which is then stored for itself and for every receiver that may reuse it. The
store is one bounded tier (LRU): what it evicted is prefilled again. Every model prefills with its context weights
(an activated LoRA's are its base's), so an aLoRA finds its base's cache as its own.

One iteration of the loop: admit what has arrived (a query that cannot be served is refused with why, alone), prefill
one batch (the oldest waiting query's receiver, its waiting queries in arrival order, up to ``max_batch``), then one
decode step of every running cohort. Our engine merges each adapter into its own weights, so a batch holds one
receiver's queries only: batching across adapters would need the base's weights shared and each row's adapter
applied beside them (punica / S-LoRA kernels, vLLM's multi-LoRA), which the engine does not do.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from droidspeak.engine.batch import prefill_rows
from droidspeak.engine.cache import ContextCache, cache_key
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import layer_groups, parse_plan
from droidspeak.engine.prefill import receiver_prefill, sender_prefill
from droidspeak.errors import DroidSpeakError
from droidspeak.serve.cohort import Cohort
from droidspeak.serve.workload import BadLine, Query
from droidspeak.store.base import CacheStore

OWN = "own"  # a receiver's own cache: every layer reused
FULL_PREFILL = "full_prefill"


@dataclass
class ServedRow:
    """One request's record: when it arrived, waited, got its first token and its last; the plan and whose cache
    served it; the answer and its score; or why it was refused (``error``; the timings are then None)."""

    rid: int
    receiver: str
    context_id: str
    arrival: float | None
    prefill_start: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    queueing: float | None = None
    ttft: float | None = None
    tbt_mean: float | None = None
    e2e: float | None = None
    plan: str | None = None
    cache_from: str | None = None  # "own", another model's name, or None (the receiver's full prefill)
    answer: str | None = None
    score: float | None = None
    error: str | None = None
    token_times: list[float] = field(default_factory=list, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "token_times"}

    def finish(self, answer: str, score: float | None) -> None:
        """Its timings from its token times (stamped as each token came), its answer and score."""
        times = self.token_times
        self.first_token, self.last_token, self.tokens = times[0], times[-1], len(times)
        self.queueing = None if self.prefill_start is None else self.prefill_start - self.arrival
        self.ttft, self.e2e = times[0] - self.arrival, times[-1] - self.arrival
        self.tbt_mean = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
        self.answer, self.score = answer, score


@dataclass
class _Active:
    cohort: Cohort
    queries: list[Query]


class Server:
    """Serves queries with ``models`` (name → loaded model; every receiver and every model whose cache may be reused),
    ``plans`` ((receiver, cache owner) → a concrete plan; a pair without one never shares), ``contexts`` (context id →
    text), ``store`` (the bounded cache tier). ``score(query, answer)`` scores an answer (None: unscored)."""

    def __init__(self, models: Mapping[str, LoadedModel], plans: Mapping[tuple[str, str], str],
                 contexts: Mapping[str, str], store: CacheStore, *, max_new_tokens: int, max_batch: int = 4,
                 score: Callable[[Query, str], float] | None = None, clock: Callable[[], float] = time.perf_counter):
        unknown = sorted({name for pair in plans for name in pair} - set(models))
        if unknown:
            raise DroidSpeakError(f"plans name models the server does not hold: {', '.join(unknown)}")
        self.models, self.contexts, self.store = dict(models), dict(contexts), store
        self.max_new_tokens, self.max_batch, self.score, self.clock = max_new_tokens, max_batch, score, clock
        self.plans = {pair: _concrete(pair, plan, models[pair[0]].stack.num_layers) for pair, plan in plans.items()}
        self._tokens: dict[tuple[str, str], torch.Tensor] = {}
        self.not_stored: list[str] = []  # why a cache was not kept (bigger than the whole tier)
        self.busy = {"prefill": 0.0, "decode": 0.0}  # seconds the loop spent in each (the rest: waiting, scheduling)
        self.steps: list[dict] = []  # every prefill and decode step's cost (_log)
        self.e_layers = {name: sorted({start for (_, owner), plan in self.plans.items() if owner == name
                                       for start, _ in layer_groups(parse_plan(plan), models[name].stack.num_layers)})
                         for name in models}

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

    # ---- the loop ----------------------------------------------------------------------------------------------
    def run(self, queries: Sequence[Query | BadLine]) -> list[ServedRow]:
        """Serve ``queries`` in real time (arrivals are seconds after this call); one row each, in rid order."""
        rows: dict[int, ServedRow] = {}
        pending = sorted(queries, key=lambda q: (q.arrival if q.arrival is not None else -1.0, q.rid))
        waiting: list[Query] = []
        running: list[_Active] = []
        start = self.clock()
        now = lambda: self.clock() - start  # noqa: E731
        while pending or waiting or running:
            while pending and (pending[0].arrival is None or pending[0].arrival <= now()):
                query = pending.pop(0)
                refusal = self._refusal(query)
                if refusal is not None:
                    rows[query.rid] = refused(query, refusal)
                else:
                    rows[query.rid] = ServedRow(query.rid, query.receiver, query.context_id, query.arrival)
                    waiting.append(query)
            if not waiting and not running:  # idle until the next arrival (if any is left)
                if pending:
                    time.sleep(max(0.0, pending[0].arrival - now()))
                continue
            if waiting:
                receiver = waiting[0].receiver
                batch = [q for q in waiting if q.receiver == receiver][: self.max_batch]
                waiting = [q for q in waiting if q not in batch]
                begun = now()
                running += self._prefill(receiver, batch, rows, now)
                self.busy["prefill"] += now() - begun
            begun = now()
            for active in running:
                self._step(active, rows, now)
            self.busy["decode"] += now() - begun
            running = [a for a in running if not a.cohort.done]
        return [rows[rid] for rid in sorted(rows)]

    def _prefill(self, receiver: str, batch: list[Query], rows: dict[int, ServedRow], now) -> list[_Active]:
        """Prefill ``batch`` (one cohort per cache source and plan), each cohort's first step included."""
        begun = now()
        for query in batch:
            rows[query.rid].prefill_start = begun
        by_source: dict[tuple[str | None, str], list[Query]] = defaultdict(list)
        caches: dict[str, ContextCache] = {}
        for query in batch:
            try:
                source, plan, cache = self._source(receiver, query.context_id)
            except DroidSpeakError as error:
                rows[query.rid] = refused(query, str(error), rows[query.rid])
                continue
            if cache is not None:
                caches[query.context_id] = cache
            by_source[(source, plan)].append(query)
        fresh = by_source.pop((None, FULL_PREFILL), [])
        if fresh:  # the receiver's own full prefill, stored for itself and its readers; then served from it
            ids = list(dict.fromkeys(q.context_id for q in fresh))
            model, begun = self.models[receiver].context_model, now()
            try:
                prefilled = sender_prefill(model, [self._ids(receiver, c) for c in ids],
                                           e_layers=self.e_layers[receiver])
            except DroidSpeakError as error:
                for query in fresh:
                    rows[query.rid] = refused(query, str(error), rows[query.rid])
                prefilled, fresh = [], []
            for context_id, cache in zip(ids, prefilled):
                caches[context_id] = cache
                self._put(cache)
            if fresh:
                self._log("context_prefill", receiver, None, FULL_PREFILL, ids, fresh, now() - begun)
                by_source[(None, "full_reuse")] = fresh
        started = []
        for (source, plan), queries in by_source.items():
            model, begun = self.models[receiver], now()
            try:
                prefilled = prefill_rows([q.context_id for q in queries],
                                         lambda ids: receiver_prefill(model, [caches[c] for c in ids], plan))
                cohort = Cohort(model, prefilled, [self._tail(receiver, q) for q in queries], self.max_new_tokens)
            except DroidSpeakError as error:
                for query in queries:
                    rows[query.rid] = refused(query, str(error), rows[query.rid])
                continue
            for query in queries:
                row = rows[query.rid]
                row.plan = FULL_PREFILL if source is None else plan
                row.cache_from = source
            active = _Active(cohort, queries)
            self._step(active, rows, now, log=False)
            self._log("prefill", receiver, source, plan, list(dict.fromkeys(q.context_id for q in queries)), queries,
                      now() - begun)
            if not cohort.done:
                started.append(active)
        return started

    def _log(self, kind: str, receiver: str, source: str | None, plan: str, contexts: list[str], queries: list[Query],
             seconds: float) -> None:
        """A step's cost, for a model of them (the simulator's calibration): what ran, over how much, how long."""
        self.steps.append({"kind": kind, "receiver": receiver, "cache_from": source, "plan": plan,
                           "contexts": len(contexts), "rows": len(queries), "seconds": seconds,
                           "context_tokens": sum(len(self._ids(receiver, c)) for c in contexts)})

    def _step(self, active: _Active, rows: dict[int, ServedRow], now, log: bool = True) -> None:
        begun = now()
        grew = active.cohort.step()
        stamp = now()
        if log:  # a decode step (a cohort's first step is its prefill's)
            self.steps.append({"kind": "decode", "receiver": active.queries[0].receiver, "rows": len(grew),
                               "batch": len(active.queries), "seconds": stamp - begun,
                               "span_tokens": int(active.cohort.mask.shape[1])})  # padded cache width
        for index in grew:
            row = rows[active.queries[index].rid]
            row.token_times.append(stamp)
            if active.cohort.finished[index]:
                self._finish(row, active.queries[index], active.cohort.tokens[index])

    def _finish(self, row: ServedRow, query: Query, tokens: list[int]) -> None:
        answer = self.models[query.receiver].tokenizer.decode(tokens, skip_special_tokens=True)
        row.finish(answer, None if self.score is None else self.score(query, answer))

    # ---- caches ------------------------------------------------------------------------------------------------
    def _source(self, receiver: str, context_id: str) -> tuple[str | None, str, ContextCache | None]:
        """(whose cache, the plan, the cache) for ``receiver`` on a context: its own, a profiled reader's, or none."""
        ids = self._ids(receiver, context_id)
        owners = [(OWN, receiver, "full_reuse")] + [(owner, owner, plan) for (r, owner), plan in self.plans.items()
                                                    if r == receiver]
        for label, owner, plan in owners:
            digest = self.models[owner].context_model.fingerprint.digest
            key = cache_key(digest, ids)
            if key in self.store:
                cache = self.store.get(key)
                cache.check_for(sender=digest, token_ids=ids)  # a cache another model wrote is refused, not served
                return label, plan, cache
        return None, FULL_PREFILL, None

    def _put(self, cache: ContextCache) -> None:
        try:
            self.store.put(cache)
        except DroidSpeakError as error:  # a context bigger than the whole tier: served from this prefill, kept nowhere
            self.not_stored.append(str(error))

    def _ids(self, receiver: str, context_id: str) -> torch.Tensor:
        key = (receiver, context_id)
        if key not in self._tokens:
            tokenizer = self.models[receiver].tokenizer
            self._tokens[key] = torch.tensor(tokenizer(self.contexts[context_id])["input_ids"], dtype=torch.long)
        return self._tokens[key]

    def _tail(self, receiver: str, query: Query) -> torch.Tensor:
        tokenizer = self.models[receiver].tokenizer  # as the studies ask (engine.answers.Questions)
        return torch.tensor(tokenizer("\n\n" + query.question, add_special_tokens=False)["input_ids"],
                            dtype=torch.long)

    # ---- refusals ----------------------------------------------------------------------------------------------
    def _refusal(self, query: Query | BadLine) -> str | None:
        model = self.models.get(getattr(query, "receiver", None))
        positions = getattr(model.config, "max_position_embeddings", None) if model is not None else None
        prompt = lambda q: len(self._ids(q.receiver, q.context_id)) + len(self._tail(q.receiver, q))  # noqa: E731
        return refusal_of(query, self.models, self.contexts, prompt, self.max_new_tokens, positions)


def _concrete(pair: tuple[str, str], plan: str, num_layers: int) -> str:
    spec = parse_plan(plan, num_layers)
    if spec.kind == "profile" or not spec.uses_cache:
        raise DroidSpeakError(f"plan for {pair[0]}<-{pair[1]}: {plan!r} is not a reuse plan (resolve a profile first; "
                              "a pair that should not share has no plan)")
    return plan


def refusal_of(query: Query | BadLine, receivers: Container[str], contexts: Container[str],
               prompt_tokens: Callable[[Query], int], max_new_tokens: int, positions: int | None) -> str | None:
    """Why ``query`` cannot be served (checked on arrival, before any work), or None: a bad trace line, an unknown
    receiver or context, or a prompt and answer past the receiver's ``positions``."""
    if isinstance(query, BadLine):
        return query.error
    if query.receiver not in receivers:
        return f"unknown receiver {query.receiver!r}; this server holds {', '.join(sorted(receivers))}"
    if query.context_id not in contexts:
        return f"unknown context {query.context_id!r}"
    need = prompt_tokens(query)
    if positions and need + max_new_tokens > positions:
        return (f"context and question take {need} tokens and the answer up to {max_new_tokens}; "
                f"{query.receiver} has {positions} positions")
    return None


def refused(query: Query | BadLine, error: str, row: ServedRow | None = None) -> ServedRow:
    if row is not None:
        row.error = error
        return row
    return ServedRow(query.rid, getattr(query, "receiver", ""), getattr(query, "context_id", ""), query.arrival,
                     error=error)
