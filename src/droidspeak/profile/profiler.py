"""The model-running side of profiling: score reuse plans of one pair on a task's profiling rows, fast.

Why it exists: profiling evaluates hundreds of plans (paper: 3 h on an A100), so it drives the engine
directly instead of going through lm-eval — the sender's caches are computed once, every distinct context
is prefilled once per plan and serves all its questions, answers are generated and scored by ``zoo.measure``
(the task's own metric, as lm-eval's zoo tasks score them). Every evaluation
keeps its per-input scores and its wall time (total, and the receiver prefill part alone).

:func:`profile_pair` runs the paper's profiling (reference, single-layer sensitivity, every aligned contiguous
group, transitions at a fixed layer count) and returns a :class:`~droidspeak.profile.profile_file.Profile`;
candidates, sensitivity and choice stay in the pure, model-free modules of this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from droidspeak.cache import ContextCache
from droidspeak.engine import receiver_prefill
from droidspeak.engine.batch import PrefilledBatch, distinct_rows, prefill_rows, select_rows
from droidspeak.engine.shared_passes import SharedPrefill, shared_prefills
from droidspeak.engine.verify import check_pair
from droidspeak.loading import LoadedModel
from droidspeak.plan import PrefillCost, parse_plan, total_cost
from droidspeak.profile.candidates import single_group_plans, single_layer_plan, transition_plans
from droidspeak.profile.points import ProfilePoint
from droidspeak.profile.profile_file import LayerSensitivity, Profile
from droidspeak.profile.sensitivity import critical_layers
from droidspeak.zoo.measure import TaskRows, answer, answer_batch, prefill_contexts, scores
from droidspeak.zoo.tasks import TASKS

Prefill = Callable[[Sequence[ContextCache]], PrefilledBatch]


@dataclass
class Evaluation:
    """One plan scored on the profiling rows."""

    name: str
    quality: float
    per_input: list[float]
    seconds: float  # wall time of the whole evaluation (prefill + generation + scoring)
    prefill_seconds: float  # receiver prefill only, summed over batches
    compute_fraction: float  # recomputed layer-tokens / a full prefill's
    answers: list[str] = field(repr=False, default_factory=list)


@dataclass
class _Partial:
    """A plan's answers and seconds over the batches scored so far (Profiler.evaluate_many)."""

    answers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prefill_seconds: float = 0.0
    costs: list[PrefillCost] = field(default_factory=list)

    def add(self, answers: list[str], prefill: SharedPrefill, answer_seconds: float) -> None:
        self.answers += answers
        self.prefill_seconds += prefill.seconds
        self.seconds += prefill.seconds + answer_seconds
        self.costs.append(prefill.batch.cost)


def select_profile_rows(rows: Sequence[dict], contexts: int) -> list[dict]:
    """The rows of the first ``contexts`` distinct contexts (file order); every question of a context is kept."""
    chosen: list[str] = []
    for row in rows:
        if row["context_id"] not in chosen:
            if len(chosen) == contexts:
                continue
            chosen.append(row["context_id"])
    keep = set(chosen)
    return [r for r in rows if r["context_id"] in keep]


class Profiler:
    """Scores plans of ``receiver`` reusing ``sender``'s caches on ``rows`` of ``task`` (zoo JSONL rows)."""

    def __init__(
        self,
        receiver: LoadedModel,
        sender: LoadedModel,
        task: str,
        rows: Sequence[dict],
        *,
        batch_size: int = 32,
        tokenizer=None,
        allow_mismatch: Sequence[str] = (),
    ):
        self.warnings = check_pair(sender, receiver, allow_mismatch)  # mismatches allowed: in every row it writes
        self.allow_mismatch = tuple(allow_mismatch)
        self.receiver, self.sender, self.task = receiver, sender, task
        self.metric = TASKS[task].metric
        self.rows = TaskRows(task, rows, tokenizer or receiver.tokenizer)
        self.batch_size = batch_size
        start = time.perf_counter()
        self.caches = prefill_contexts(sender, self.rows, batch_size)
        self.sender_seconds = time.perf_counter() - start
        self.results: dict[str, Evaluation] = {}

    @property
    def num_layers(self) -> int:
        return self.receiver.stack.num_layers

    @property
    def inputs(self) -> list[str]:
        return [r["id"] for r in self.rows.rows]

    def evaluate(self, plan: str, *, prefill: Prefill | None = None, model: LoadedModel | None = None) -> Evaluation:
        """Score ``plan`` (a contract string; with ``prefill`` just a name for that custom prefill, e.g. a hybrid).

        ``model`` answers instead of the receiver (the sender's own quality: plan ``full_prefill``). Results are
        memoised by name (and model).
        """
        model = model or self.receiver
        key = plan if model is self.receiver else f"{plan}@{model.fingerprint.name}"
        if key in self.results:
            return self.results[key]
        run = prefill or (lambda caches: receiver_prefill(model, caches, plan))
        prefill_seconds = 0.0

        def timed(contexts: list[str]) -> PrefilledBatch:
            nonlocal prefill_seconds
            t0 = time.perf_counter()
            batch = run([self.caches[c] for c in contexts])
            prefill_seconds += time.perf_counter() - t0
            return batch

        start = time.perf_counter()
        answers, prefills = answer(model, self.rows, lambda chunk: prefill_rows(
            [r["context_id"] for r in chunk], timed), self.batch_size)
        return self._record(key, answers, time.perf_counter() - start, prefill_seconds, [p.cost for p in prefills])

    def point(self, plan: str) -> ProfilePoint:
        """A profile point of a layer plan (cost = evaluation wall seconds)."""
        ev = self.evaluate(plan)
        return ProfilePoint.from_plan(
            plan, ev.quality, num_layers=self.num_layers, per_input=ev.per_input, cost=ev.seconds
        )

    def evaluate_all(self, plans: Iterable[str], desc: str, progress: bool = True) -> list[ProfilePoint]:
        """Profile points of ``plans``; the layer plans among them share the receiver's passes (evaluate_many)."""
        plans = list(plans)
        self.evaluate_many(plans, desc, progress)
        return [self.point(p) for p in plans]

    def evaluate_many(self, plans: Iterable[str], desc: str = "plans", progress: bool = False) -> list[Evaluation]:
        """Every plan scored exactly as :meth:`evaluate` scores it alone, faster: batch by batch, the layer plans
        that read the sender's cache are prefilled from shared receiver passes (engine.shared_passes), so a
        profile's groups and single-layer plans cost each start's pass once. Each plan's prefill seconds are its
        layers' share of those passes; the rest are evaluated one by one."""
        plans = list(plans)
        todo = [p for p in dict.fromkeys(plans) if p not in self.results]
        shared = [p for p in todo if parse_plan(p, self.num_layers).kind in ("full_reuse", "recompute")]
        bar = tqdm(total=len(todo), desc=desc, unit="plan", dynamic_ncols=True, leave=False, disable=not progress)
        for plan in todo:
            if plan not in shared:
                self.evaluate(plan)
                bar.update()
        partial = {plan: _Partial() for plan in shared}
        for start in range(0, len(self.rows.rows), self.batch_size):
            distinct, row_index = distinct_rows(
                [r["context_id"] for r in self.rows.rows[start : start + self.batch_size]]
            )
            for item in shared_prefills(self.receiver, [self.caches[c] for c in distinct], shared):
                started = time.perf_counter()
                prefilled = select_rows(item.batch, row_index)
                partial[item.plan].add(answer_batch(self.receiver, self.rows, start, prefilled), item,
                                       time.perf_counter() - started)
        for plan, done in partial.items():
            self._record(plan, done.answers, done.seconds, done.prefill_seconds, done.costs)
            bar.update()
        bar.close()
        return [self.results[p] for p in plans]

    def _record(self, key: str, answers: list[str], seconds: float, prefill_seconds: float, costs) -> Evaluation:
        per_input = scores(self.rows, answers)
        self.results[key] = Evaluation(
            name=key,
            quality=sum(per_input) / max(1, len(per_input)),
            per_input=per_input,
            seconds=seconds,
            prefill_seconds=prefill_seconds,
            compute_fraction=total_cost(costs).compute_fraction,
            answers=answers,
        )
        return self.results[key]


def profile_pair(
    profiler: Profiler,
    *,
    receiver_name: str,
    sender_name: str,
    granularity: int = 1,
    transition_layers: int | None = None,
    max_transitions: int = 3,
    transition_plans_per_count: int = 8,
    progress: bool = True,
    max_group_layers: int | None = None,
    transitions: bool = True,
) -> Profile:
    """The paper's profiling of one pair: reference, sender, single-layer sensitivity, every aligned contiguous
    group (Fig. 11), and quality vs transitions at ``transition_layers`` recomputed layers (Fig. 10; default L/2).

    The transition study scores up to ``transition_plans_per_count`` layouts per transition count twice: drawn
    freely, and holding the critical layers (single-layer sensitivity) in every plan, which isolates the layout
    from the choice of layers. ``max_group_layers`` caps the contiguous groups' length (None: every group);
    ``transitions=False`` skips Fig. 10's study."""
    start = time.perf_counter()
    layers = profiler.num_layers
    reference = profiler.evaluate("full_prefill")
    sender = profiler.evaluate("full_prefill", model=profiler.sender)
    group_plans = single_group_plans(layers, granularity, max_group_layers)
    single_plans = [single_layer_plan(layer, layers) for layer in range(layers)]
    profiler.evaluate_many(group_plans + single_plans, "groups and single layers", progress)  # one pass per start
    points = [profiler.point(p) for p in group_plans]
    single = [profiler.point(p) for p in single_plans]
    k = transition_layers or max(granularity, (layers // 2) // granularity * granularity)
    critical = critical_layers([p.quality for p in single], reference.quality)
    studies = [
        transition_plans(layers, k, max_transitions, granularity=granularity, per_count=transition_plans_per_count)
    ]
    if 0 < len(critical) < k:
        studies.append(transition_plans(layers, k, max_transitions, granularity=granularity,
                                        per_count=transition_plans_per_count, include=critical))
    plans = (
        dict.fromkeys(plan for study in studies for by_count in study.values() for plan in by_count)
        if transitions
        else {}
    )
    trans = profiler.evaluate_all(plans, "transitions", progress)
    evaluations = [e for e in profiler.results.values()]
    return Profile(
        receiver=receiver_name,
        sender=sender_name,
        receiver_fingerprint=profiler.receiver.fingerprint.digest,
        sender_fingerprint=profiler.sender.fingerprint.digest,
        receiver_identity=profiler.receiver.fingerprint.identity,
        sender_identity=profiler.sender.fingerprint.identity,
        task=profiler.task,
        metric=profiler.metric,
        num_layers=layers,
        granularity=granularity,
        n_samples=len(profiler.rows.rows),
        inputs=profiler.inputs,
        reference_quality=reference.quality,
        reference_per_input=list(reference.per_input),
        sender_quality=sender.quality,
        points=points,
        single_layer=[LayerSensitivity(layer, p.quality, p.per_input) for layer, p in enumerate(single)],
        transitions=trans,
        timing={
            "total_seconds": round(time.perf_counter() - start + profiler.sender_seconds, 3),
            "sender_prefill_seconds": round(profiler.sender_seconds, 3),
            "evaluations": len(evaluations),
            "seconds_per_evaluation": round(sum(e.seconds for e in evaluations) / max(1, len(evaluations)), 4),
            "contexts": len(profiler.caches),
        },
    )
