"""The serving loop on a virtual clock: the same policy as the executing server (droidspeak.serve.loop), each step
charged its modelled cost instead of run. Calibrated on an executed run's step log, it predicts what that server does
under another trace or load — and before a page may quote a simulated number, it must predict the executed runs.

Costs are lines fitted to the logged steps (least squares, never falling): a context's full prefill and a cohort's
prefill under each plan against the context tokens they read, a decode step against the rows it steps. Each request
produces as many tokens as it did when executed (the answer's length is the workload's, not the server's). The tier is
modelled as the server's: bounded bytes, least recently used first, an entry's bytes the executed caches' bytes per
token.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from droidspeak.errors import DroidSpeakError
from droidspeak.serve.loop import ServingLoop, refusal_of
from droidspeak.serve.planner import fit_line
from droidspeak.serve.workload import BadLine, Query


@dataclass(frozen=True)
class StepCosts:
    """Seconds per step: ``context_prefill`` and each ``prefill[plan]`` as (a, b) of a + b·tokens, ``decode`` as
    (a, b) of a + b·rows."""

    context_prefill: tuple[float, float]
    prefill: Mapping[str, tuple[float, float]]
    decode: tuple[float, float]

    @classmethod
    def fit(cls, steps: Sequence[Mapping]) -> "StepCosts":
        """Lines through an executed run's logged steps (``.steps.jsonl``)."""
        by_plan: dict[str, list[tuple[float, float]]] = {}
        for step in steps:
            if step["kind"] == "prefill":
                by_plan.setdefault(step["plan"], []).append((step["context_tokens"], step["seconds"]))
        contexts = [(s["context_tokens"], s["seconds"]) for s in steps if s["kind"] == "context_prefill"]
        decodes = [(s["batch"], s["seconds"]) for s in steps if s["kind"] == "decode"]
        if not contexts or not decodes:
            raise DroidSpeakError("a step log needs context prefills and decode steps to fit costs to")
        return cls(fit_line(contexts), {plan: fit_line(points) for plan, points in by_plan.items()}, fit_line(decodes))

    def prefill_seconds(self, plan: str, tokens: int) -> float:
        if plan not in self.prefill:
            raise DroidSpeakError(f"no measured prefill under {plan!r} to model it on "
                                  f"(measured: {sorted(self.prefill)})")
        a, b = self.prefill[plan]
        return a + b * tokens


class VirtualClock:
    def __init__(self):
        self.time = 0.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += max(0.0, seconds)


class ModelledCohort:
    """A cohort whose rows produce ``lengths`` tokens; its first step is its prefill's (charged there)."""

    def __init__(self, lengths: Sequence[int], step_seconds: Callable[[int], float], clock: VirtualClock):
        self.lengths, self.step_seconds, self.clock = list(lengths), step_seconds, clock
        self.tokens: list[list[int]] = [[] for _ in lengths]
        self.finished = [False] * len(lengths)
        self.stepped = False

    @property
    def done(self) -> bool:
        return all(self.finished)

    def step(self) -> list[int]:
        if self.stepped:
            self.clock.advance(self.step_seconds(len(self.lengths)))
        self.stepped = True
        grew = [row for row, done in enumerate(self.finished) if not done]
        for row in grew:
            self.tokens[row].append(0)
            self.finished[row] = len(self.tokens[row]) >= max(1, self.lengths[row])
        return grew


class ModelledServer(ServingLoop):
    """The loop charged modelled costs. ``context_tokens``: context id → tokens; ``output_tokens``: rid → tokens it
    produces; ``context_owner``: model → the model whose context weights it prefills with (an aLoRA's base);
    ``bytes_per_token``: model → its cache's bytes per context token; ``capacity_bytes``: the tier's bound."""

    def __init__(self, plans: Mapping[tuple[str, str], str], costs: StepCosts, *, receivers: Sequence[str],
                 context_tokens: Mapping[str, int], output_tokens: Mapping[int, int],
                 context_owner: Mapping[str, str], bytes_per_token: Mapping[str, float], capacity_bytes: float | None,
                 max_new_tokens: int, max_batch: int):
        super().__init__(plans, max_new_tokens=max_new_tokens, max_batch=max_batch)
        self.costs, self.receivers, self.clock = costs, list(receivers), VirtualClock()
        self.tokens_of, self.output_tokens = dict(context_tokens), dict(output_tokens)
        self.context_owner, self.bytes_per_token = dict(context_owner), dict(bytes_per_token)
        self.capacity = capacity_bytes
        self.tier: OrderedDict[tuple[str, str], float] = OrderedDict()

    def now(self) -> float:
        return self.clock()

    def idle(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def refusal(self, query: Query | BadLine) -> str | None:
        return refusal_of(query, self.receivers, self.tokens_of, lambda q: 0, 0, None)

    def _key(self, owner: str, context_id: str) -> tuple[str, str]:
        return self.context_owner.get(owner, owner), context_id

    def holds(self, owner: str, context_id: str) -> bool:
        return self._key(owner, context_id) in self.tier

    def read(self, owner: str, context_id: str) -> tuple[str, str]:
        key = self._key(owner, context_id)
        self.tier.move_to_end(key)
        return key

    def context_prefill(self, receiver: str, context_ids: list[str]) -> dict[str, tuple[str, str]]:
        a, b = self.costs.context_prefill
        self.clock.advance(sum(a + b * self.tokens_of[c] for c in context_ids))
        made = {}
        for context_id in context_ids:
            key, size = self._key(receiver, context_id), self.cache_bytes((receiver, context_id))
            self.tier.pop(key, None)
            while self.capacity is not None and self.tier and sum(self.tier.values()) + size > self.capacity:
                self.tier.popitem(last=False)
            if self.capacity is None or size <= self.capacity:
                self.tier[key] = size
            made[context_id] = key
        return made

    def start(self, receiver: str, plan: str, queries: list[Query], caches: Mapping[str, object]) -> ModelledCohort:
        tokens = sum(self.tokens_of[c] for c in dict.fromkeys(q.context_id for q in queries))
        self.clock.advance(self.costs.prefill_seconds(plan, tokens))
        a, b = self.costs.decode
        return ModelledCohort([self.output_tokens[q.rid] for q in queries], lambda rows: a + b * rows, self.clock)

    def answer(self, query: Query, tokens: list[int]) -> tuple[None, None]:
        return None, None

    def context_tokens(self, receiver: str, context_id: str) -> int:
        return self.tokens_of[context_id]

    def cache_bytes(self, cache: tuple[str, str]) -> int:
        receiver, context_id = cache
        return int(self.bytes_per_token.get(receiver, 0.0) * self.tokens_of[context_id])


def replay(run: Mapping, costs: StepCosts) -> list[dict]:
    """An executed run (its ``.run.json`` fields, its ``rows`` and its ``steps``) served again by the modelled loop:
    the same arrivals, receivers, contexts and answer lengths, the same plans, tier bound and batch size; the rows
    it would have written (refused requests left out: refusing costs nothing)."""
    served = [r for r in run["rows"] if r["error"] is None]
    plans = {tuple(pair.split("<-", 1)): plan for pair, plan in run["plans"].items()}
    per_token = {}
    for step in run["steps"]:
        if step["kind"] == "context_prefill" and step.get("cache_bytes"):
            per_token[step["receiver"]] = step["cache_bytes"] / step["context_tokens"]
    server = ModelledServer(
        plans, costs, receivers=sorted({r["receiver"] for r in served}),
        context_tokens={r["context_id"]: r["context_tokens"] for r in served},
        output_tokens={r["rid"]: r["tokens"] for r in served}, context_owner=run.get("context_owners", {}),
        bytes_per_token=per_token, capacity_bytes=run["store_mib"] * 2**20 if run.get("store_mib") else None,
        max_new_tokens=max(r["tokens"] for r in served), max_batch=run["max_batch"])
    queries = [Query(r["rid"], r["arrival"], r["receiver"], r["context_id"], "") for r in served]
    return [row.record() for row in server.run(queries)]
