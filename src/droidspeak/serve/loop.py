"""The serving policy, one loop for the executing server and its model: admission, batching, where each request's
context cache comes from, cohorts, and one row per request.

Where a receiver's context cache comes from, in order: its own (a prefix cache: every layer reused, exact); another
model's, where a plan is known for (receiver, that model) (DroidSpeak: the plan's groups recomputed, the rest
reused); else its own full prefill, which is then kept for itself and for every receiver that may reuse it, in one
bounded tier (LRU): what it evicted is prefilled again.

One iteration: admit what has arrived (a query that cannot be served is refused with why, alone), prefill one batch
(the oldest waiting query's receiver, its waiting queries in arrival order, up to ``max_batch``; one cohort per cache
source and plan, each cohort's first token included), then one decode step of every running cohort. A batch holds one
receiver's queries only (each adapter is merged into its own weights).

:class:`ServingLoop` leaves the work to its subclass: :class:`droidspeak.serve.server.Server` runs the engine on the
wall clock; :class:`droidspeak.serve.modelled.ModelledServer` charges each step its modelled cost on a virtual clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from droidspeak.errors import DroidSpeakError
from droidspeak.serve.workload import BadLine, Query

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
    context_tokens: int | None = None
    answer: str | None = None
    score: float | None = None
    error: str | None = None
    token_times: list[float] = field(default_factory=list, repr=False)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "token_times"}

    def finish(self, answer: str | None, score: float | None) -> None:
        """Its timings from its token times (stamped as each token came), its answer and score."""
        times = self.token_times
        self.first_token, self.last_token, self.tokens = times[0], times[-1], len(times)
        self.queueing = None if self.prefill_start is None else self.prefill_start - self.arrival
        self.ttft, self.e2e = times[0] - self.arrival, times[-1] - self.arrival
        self.tbt_mean = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
        self.answer, self.score = answer, score


@dataclass
class Active:
    """A running cohort (anything with ``step() -> rows that grew``, ``done``, ``finished``, ``tokens``) and its
    queries, row by row."""

    cohort: object
    queries: list[Query]


class ServingLoop(ABC):
    """The loop; ``plans``: (receiver, cache owner) → a concrete reuse plan (a pair without one never shares)."""

    def __init__(self, plans: Mapping[tuple[str, str], str], *, max_new_tokens: int, max_batch: int):
        self.plans, self.max_new_tokens, self.max_batch = dict(plans), max_new_tokens, max_batch
        self.busy = {"prefill": 0.0, "decode": 0.0}  # seconds the loop spent in each (the rest: waiting, scheduling)
        self.steps: list[dict] = []  # every prefill and decode step's cost (_log)

    # ---- what a subclass does --------------------------------------------------------------------------------
    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def idle(self, seconds: float) -> None: ...

    @abstractmethod
    def refusal(self, query: Query | BadLine) -> str | None: ...

    @abstractmethod
    def holds(self, owner: str, context_id: str) -> bool:
        """Whether the tier holds ``owner``'s cache of the context."""

    @abstractmethod
    def read(self, owner: str, context_id: str):
        """``owner``'s cache of the context (a DroidSpeakError refuses it)."""

    @abstractmethod
    def context_prefill(self, receiver: str, context_ids: list[str]) -> dict[str, object]:
        """The receiver's own caches of these contexts, kept in the tier for it and its readers."""

    @abstractmethod
    def start(self, receiver: str, plan: str, queries: list[Query], caches: Mapping[str, object]) -> object:
        """A cohort of ``queries`` over ``caches`` under ``plan`` (not stepped yet)."""

    @abstractmethod
    def answer(self, query: Query, tokens: list[int]) -> tuple[str | None, float | None]:
        """(the answer, its score)."""

    @abstractmethod
    def context_tokens(self, receiver: str, context_id: str) -> int: ...

    @abstractmethod
    def cache_bytes(self, cache) -> int:
        """What keeping ``cache`` takes in the tier."""

    # ---- the loop ----------------------------------------------------------------------------------------------
    def run(self, queries: Sequence[Query | BadLine]) -> list[ServedRow]:
        """Serve ``queries`` (arrivals are seconds after this call); one row each, in rid order."""
        rows: dict[int, ServedRow] = {}
        pending = sorted(queries, key=lambda q: (q.arrival if q.arrival is not None else -1.0, q.rid))
        waiting: list[Query] = []
        running: list[Active] = []
        start = self.now()
        now = lambda: self.now() - start  # noqa: E731
        while pending or waiting or running:
            while pending and (pending[0].arrival is None or pending[0].arrival <= now()):
                query = pending.pop(0)
                why = self.refusal(query)
                if why is not None:
                    rows[query.rid] = refused(query, why)
                else:
                    rows[query.rid] = ServedRow(query.rid, query.receiver, query.context_id, query.arrival,
                                                context_tokens=self.context_tokens(query.receiver, query.context_id))
                    waiting.append(query)
            if not waiting and not running:  # idle until the next arrival (if any is left)
                if pending:
                    self.idle(max(0.0, pending[0].arrival - now()))
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

    def _source(self, receiver: str, context_id: str) -> tuple[str | None, str, object | None]:
        """(whose cache, the plan, the cache) for ``receiver`` on a context: its own, a profiled reader's, or none."""
        owners = [(OWN, receiver, "full_reuse")] + [(owner, owner, plan) for (r, owner), plan in self.plans.items()
                                                    if r == receiver]
        for label, owner, plan in owners:
            if self.holds(owner, context_id):
                return label, plan, self.read(owner, context_id)
        return None, FULL_PREFILL, None

    def _prefill(self, receiver: str, batch: list[Query], rows: dict[int, ServedRow], now) -> list[Active]:
        """Prefill ``batch`` (one cohort per cache source and plan), each cohort's first step included."""
        begun = now()
        for query in batch:
            rows[query.rid].prefill_start = begun
        by_source: dict[tuple[str | None, str], list[Query]] = defaultdict(list)
        caches: dict[str, object] = {}
        for query in batch:
            try:
                source, plan, cache = self._source(receiver, query.context_id)
            except DroidSpeakError as error:
                refused(query, str(error), rows[query.rid])
                continue
            if cache is not None:
                caches[query.context_id] = cache
            by_source[(source, plan)].append(query)
        fresh = by_source.pop((None, FULL_PREFILL), [])
        if fresh:  # the receiver's own full prefill, kept for itself and its readers; then served from it
            ids, begun = list(dict.fromkeys(q.context_id for q in fresh)), now()
            try:
                made = self.context_prefill(receiver, ids)
                caches |= made
                self._log("context_prefill", receiver, None, FULL_PREFILL, ids, fresh, now() - begun,
                          cache_bytes=sum(self.cache_bytes(c) for c in made.values()))
                by_source[(None, "full_reuse")] = fresh
            except DroidSpeakError as error:
                for query in fresh:
                    refused(query, str(error), rows[query.rid])
        started = []
        for (source, plan), queries in by_source.items():
            begun = now()
            try:
                active = Active(self.start(receiver, plan, queries, caches), queries)
            except DroidSpeakError as error:
                for query in queries:
                    refused(query, str(error), rows[query.rid])
                continue
            for query in queries:
                rows[query.rid].plan = FULL_PREFILL if source is None else plan
                rows[query.rid].cache_from = source
            self._step(active, rows, now, log=False)
            self._log("prefill", receiver, source, plan, list(dict.fromkeys(q.context_id for q in queries)), queries,
                      now() - begun)
            if not active.cohort.done:
                started.append(active)
        return started

    def _log(self, kind: str, receiver: str, source: str | None, plan: str, contexts: list[str], queries: list[Query],
             seconds: float, **more) -> None:
        """A step's cost, for a model of them (the simulator's calibration): what ran, over how much, how long."""
        self.steps.append({"kind": kind, "receiver": receiver, "cache_from": source, "plan": plan,
                           "contexts": len(contexts), "rows": len(queries), "seconds": seconds,
                           "context_tokens": sum(self.context_tokens(receiver, c) for c in contexts), **more})

    def _step(self, active: Active, rows: dict[int, ServedRow], now, log: bool = True) -> None:
        begun = now()
        grew = active.cohort.step()
        stamp = now()
        if log:  # a decode step (a cohort's first step is its prefill's)
            self.steps.append({"kind": "decode", "receiver": active.queries[0].receiver, "rows": len(grew),
                               "batch": len(active.queries), "seconds": stamp - begun})
        for index in grew:
            row = rows[active.queries[index].rid]
            row.token_times.append(stamp)
            if active.cohort.finished[index]:
                row.finish(*self.answer(active.queries[index], active.cohort.tokens[index]))


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
    """``row`` (or a new one for ``query``) marked refused, with why."""
    if row is None:
        row = ServedRow(query.rid, getattr(query, "receiver", ""), getattr(query, "context_id", ""), query.arrival)
    row.error = error
    return row
