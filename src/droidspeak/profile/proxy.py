"""Cheap output-level proxies of a plan's task quality: does the receiver still say what it would say itself?

Why it exists: profiling with the task metric generates answers for every input under every plan. A proxy
needs neither gold answers nor generation: on a few samples, the receiver's own greedy answer (from its full
prefill, computed once) is teacher-forced after the question, and each plan is scored by how far the
receiver's next-token distributions at those answer positions move:

- ``kl``: mean KL(P_full_prefill || P_plan) over answer positions (lower is better; score = -kl);
- ``top1``: share of answer positions whose argmax is unchanged (higher is better; 1.0 = the receiver's own).

A plan passes the tolerance when its top-1 disagreements are not significantly above it (:func:`agrees_within`).

The scorer stands alone, as it would when a new pair is profiled with the proxy only: it prefills the
sender over just its sampled contexts, runs the receiver's reference once, then costs one receiver prefill of
those contexts plus one forward of question + answer per plan (layer plans share the receiver's passes:
:meth:`ProxyScorer.score_all`). ``setup_seconds`` counts all of that setup, so
its cost compares fairly with a task-metric search that prefills the sender over every profiling context.
(A first exploration found that the size of a layer's K/V deviation does not predict harm; these proxies look
at the output instead.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from droidspeak.engine import generate, receiver_prefill, tail_logits
from droidspeak.engine.answers import prefill_contexts
from droidspeak.engine.batch import PrefilledBatch, distinct_rows, select_rows
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.plan import parse_plan
from droidspeak.engine.shared_passes import shared_prefills
from droidspeak.engine.verify import check_pair
from droidspeak.profile.choice import choose_point, quality_target
from droidspeak.profile.points import ProfilePoint, plan_layers
from droidspeak.zoo.measure import task_questions
from droidspeak.zoo.tasks import TASKS


@dataclass(frozen=True)
class ProxyScore:
    name: str
    kl: float
    top1: float
    seconds: float


def agrees_within(top1: float, positions: int, tolerance: float, alpha: float = 0.05) -> bool:
    """Whether a top-1 agreement over ``positions`` answer positions is consistent with disagreeing on at most the
    fraction ``tolerance``: an exact one-sided binomial test rejects a plan only when it disagrees significantly
    more often (level ``alpha``).

    Why not ``top1 >= 1 - tolerance``: on a few samples one changed token moves the agreement by several percent,
    so a fixed threshold accepts only plans that change nothing and recomputes more layers than the task needs.
    """
    disagreements = round((1.0 - top1) * positions)
    tail = sum(math.comb(positions, i) * tolerance**i * (1.0 - tolerance) ** (positions - i)
               for i in range(disagreements, positions + 1))
    return tail >= alpha


@dataclass(frozen=True)
class ProxyRule:
    """How the proxy's scores become a plan: the fewest recomputed layers among plans whose top-1 agreement passes,
    ties to the smallest KL. ``alpha``: the level of :func:`agrees_within`'s binomial test; None: the point rule
    ``top1 >= 1 - tolerance`` (no allowance for sampling)."""

    name: str
    alpha: float | None = None

    def passes(self, top1: float, positions: int, tolerance: float) -> bool:
        if self.alpha is None:
            return top1 >= 1.0 - tolerance - 1e-12
        return agrees_within(top1, positions, tolerance, self.alpha)

    def choose(self, scores: dict[str, tuple[float, float]], positions: int, tolerance: float, num_layers: int) -> str:
        """The plan this rule picks from ``scores`` (plan -> (top1, kl)); full_prefill when none passes."""
        points = [ProfilePoint.from_plan(plan, float(self.passes(top1, positions, tolerance)), num_layers=num_layers,
                                         cost=kl) for plan, (top1, kl) in scores.items()]
        chosen = choose_point(points, 1.0, 0.0)
        return chosen.plan if chosen else "full_prefill"


PROXY_RULES = {rule.name: rule for rule in (ProxyRule("point"), *(ProxyRule(f"binomial@{a:g}", a)
                                                                  for a in (0.01, 0.05, 0.2, 0.5)))}


def get_rule(name: str) -> ProxyRule:
    if name not in PROXY_RULES:
        raise ValueError(f"unknown proxy rule {name!r}; expected one of {', '.join(PROXY_RULES)}")
    return PROXY_RULES[name]


def spread_rows(contexts: Sequence[str], samples: int) -> list[int]:
    """Indices of ``samples`` rows taken round-robin over contexts (one question per context first)."""
    by_context: dict[str, list[int]] = {}
    for index, context in enumerate(contexts):
        by_context.setdefault(context, []).append(index)
    picked, depth = [], 0
    while len(picked) < min(samples, len(contexts)):
        for rows in by_context.values():
            if depth < len(rows) and len(picked) < samples:
                picked.append(rows[depth])
        depth += 1
    return sorted(picked)


class ProxyScorer:
    """Scores plans of ``receiver`` reusing ``sender``'s caches by output agreement with the receiver's full
    prefill, on ``samples`` of ``rows`` (zoo JSONL rows of ``task``) spread over their contexts."""

    def __init__(self, receiver: LoadedModel, sender: LoadedModel, task: str, rows: Sequence[dict], *,
                 samples: int = 8, batch_size: int = 32, allow_mismatch: Sequence[str] = ()):
        start = time.perf_counter()
        self.receiver, self.task = receiver, task
        self.index = spread_rows([r["context_id"] for r in rows], samples)
        self.rows = task_questions(task, [rows[i] for i in self.index], receiver.tokenizer)
        check_pair(sender, receiver, allow_mismatch)
        self.distinct, self.row_index = distinct_rows([r["context_id"] for r in self.rows.rows])
        self.caches = prefill_contexts(sender, self.rows, batch_size)
        self.results: dict[str, ProxyScore] = {}
        own = receiver_prefill(receiver, self._contexts, "full_prefill")
        answers = generate(receiver, select_rows(own, self.row_index), self.rows.suffixes,
                           max_new_tokens=TASKS[task].max_new_tokens)
        self.answers = [a if a.numel() else torch.tensor([0]) for a in answers]
        self.positions = sum(a.numel() for a in self.answers)  # answer positions each plan is scored on
        self.reference = self._answer_logprobs(own)
        self.setup_seconds = time.perf_counter() - start

    @property
    def _contexts(self) -> list[ContextCache]:
        return [self.caches[c] for c in self.distinct]

    @torch.inference_mode()
    def _answer_logprobs(self, prefilled: PrefilledBatch) -> list[torch.Tensor]:
        """log P(next token) at each position that predicts an answer token, per row ([n_answer, vocab])."""
        tails = [torch.cat([s, a]) for s, a in zip(self.rows.suffixes, self.answers)]
        logits = tail_logits(self.receiver, select_rows(prefilled, self.row_index), tails).float()
        width = logits.shape[1]
        return [logits[row, width - a.numel() - 1 : width - 1].log_softmax(-1) for row, a in enumerate(self.answers)]

    def _agreement(self, prefilled: PrefilledBatch) -> tuple[float, float]:
        """(mean KL from the reference, top-1 agreement) over every answer position."""
        kl = top1 = positions = 0.0
        for ref, got in zip(self.reference, self._answer_logprobs(prefilled)):
            kl += float((ref.exp() * (ref - got)).sum())
            top1 += float((ref.argmax(-1) == got.argmax(-1)).sum())
            positions += ref.shape[0]
        return kl / positions, top1 / positions

    def score(self, plan: str, *, prefill: Callable | None = None) -> ProxyScore:
        """Proxy of ``plan`` (or of a custom ``prefill`` named ``plan``), memoised."""
        if plan not in self.results:
            start = time.perf_counter()
            run = prefill or (lambda caches: receiver_prefill(self.receiver, caches, plan))
            kl, top1 = self._agreement(run(self._contexts))
            self.results[plan] = ProxyScore(plan, kl, top1, time.perf_counter() - start)
        return self.results[plan]

    def score_all(self, plans: Iterable[str]) -> dict[str, ProxyScore]:
        """Scores of ``plans``, memoised. Layer plans share the receiver's passes (engine.shared_passes); each is
        charged its share of them plus its own scoring."""
        plans = list(dict.fromkeys(plans))
        shared = []
        for plan in plans:
            if plan in self.results:
                continue
            if parse_plan(plan, self.receiver.stack.num_layers).kind in ("full_reuse", "recompute"):
                shared.append(plan)
            else:
                self.score(plan)
        for item in shared_prefills(self.receiver, self._contexts, shared):
            started = time.perf_counter()
            kl, top1 = self._agreement(item.batch)
            self.results[item.plan] = ProxyScore(item.plan, kl, top1, item.seconds + time.perf_counter() - started)
        return {plan: self.results[plan] for plan in plans}


@dataclass(frozen=True)
class ProxyCase:
    """One profiled pair as a decision rule sees it: the proxy's scores and the task metric's qualities."""

    pair: str
    scores: dict[str, tuple[float, float]]  # plan -> (top1, kl)
    positions: int
    num_layers: int
    quality: dict[str, float]  # plan -> task quality on the profile's samples
    reference: float  # the receiver's own

    def outcome(self, rule: ProxyRule, tolerance: float) -> dict:
        plan = rule.choose(self.scores, self.positions, tolerance, self.num_layers)
        quality = self.quality.get(plan, self.reference)
        return {"pair": self.pair, "rule": rule.name, "plan": plan, "layers": plan_layers(plan, self.num_layers)[0],
                "quality": quality, "within": quality >= quality_target(self.reference, tolerance) - 1e-12}


def select_rule(cases: Sequence[ProxyCase], tolerance: float) -> tuple[ProxyRule, list[dict]]:
    """The rule that keeps the most cases within the tolerance, then recomputes the fewest layers in all (then the
    first in PROXY_RULES); and every rule's outcome on every case."""
    outcomes = [case.outcome(rule, tolerance) for rule in PROXY_RULES.values() for case in cases]
    def merit(rule: ProxyRule):
        mine = [o for o in outcomes if o["rule"] == rule.name]
        return (-sum(o["within"] for o in mine), sum(o["layers"] for o in mine))
    return min(PROXY_RULES.values(), key=merit), outcomes
