"""What a user waits for, per chosen plan: the receiver's prefill of a real long context, and the whole answer
path (context prefill + query + first token), against the receiver's own full prefill of the same context.

Same process, interleaved (full, plan, full, plan, ...), one context at a time (batch 1), medians over repeats;
the sender's cache is in memory before timing starts (the receiver-side cost is what a plan changes). Beside
each ratio, the compute-only limit: layers / recomputed layers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from droidspeak.engine import generate, receiver_prefill, sender_prefill
from droidspeak.engine.plan import parse_plan


@dataclass
class AnswerPathRow:
    pair: str
    task: str
    plan: str
    context_tokens: int
    recomputed_layers: int
    num_layers: int
    full_prefill_ms: float
    plan_prefill_ms: float
    prefill_speedup: float
    full_answer_ms: float  # context prefill + query + first token
    plan_answer_ms: float
    answer_speedup: float
    compute_limit: float | None  # num_layers / recomputed_layers (None: nothing recomputed)
    repeats: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


CONTEXT_PREFILL = ("engine.receiver_prefill, one shared context at a time (batch 1; no query, no transfer), "
                   "interleaved with the receiver's full prefill of the same context")
"""What a sweep point's speedup times (its row's ``timed_path``): the receiver-side prefill a plan changes."""


@dataclass(frozen=True)
class PlanTiming:
    """One plan's interleaved samples: every (context, repeat) round gives the plan's seconds and the seconds of the
    full prefill run beside it in the same round, so each ratio compares like with like."""

    plan: str
    plan_seconds: tuple[float, ...]
    baseline_seconds: tuple[float, ...]
    contexts: int
    repeats: int

    @property
    def ratios(self) -> list[float]:
        return [base / ours for ours, base in zip(self.plan_seconds, self.baseline_seconds)]

    @property
    def speedup(self) -> float:
        """The median ratio over every (context, repeat)."""
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        """The smallest and largest ratio: a claim that one speedup beats another needs these not to overlap."""
        return min(self.ratios), max(self.ratios)


def time_plans(receiver, caches, plans: Sequence, num_layers: int, *, repeats: int, warmup: int) -> list[PlanTiming]:
    """Time each plan against the receiver's full prefill, one context (``caches``: the sender's) at a time.

    Each round runs the full prefill and every plan once on one context, in an order rotated from round to round
    (no plan always runs first, warm or cold), and after ``warmup`` untimed rounds on the first context. Every
    plan, the full prefill and the timed baseline go through the same engine path (recomputing every layer
    reproduces the receiver's own prefill, which the oracle tests assert), so a ratio is the compute a plan saves,
    not framework overhead. ``full_prefill`` is timed as every layer recomputed against a second such run: its
    speedup is the noise floor.
    """
    baseline = f"recompute:0-{num_layers - 1}"
    runs = [baseline, *(baseline if parse_plan(str(plan)).kind == "full_prefill" else plan for plan in plans)]

    def once(which, cache) -> float:
        if receiver.device.type == "cuda":
            torch.cuda.synchronize(receiver.device)
        start = time.perf_counter()
        receiver_prefill(receiver, [cache], which)
        if receiver.device.type == "cuda":
            torch.cuda.synchronize(receiver.device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for which in runs:
            once(which, caches[0])
    seconds: list[list[float]] = [[] for _ in runs]
    rounds = [cache for _ in range(repeats) for cache in caches]
    for number, cache in enumerate(rounds):
        order = [(number + i) % len(runs) for i in range(len(runs))]
        for index in order:
            seconds[index].append(once(runs[index], cache))
    return [PlanTiming(str(plan), tuple(seconds[i + 1]), tuple(seconds[0]), len(caches), repeats)
            for i, plan in enumerate(plans)]


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
def time_plan(receiver, sender, context: torch.Tensor, query: torch.Tensor, plan: str, *, pair: str, task: str,
              repeats: int = 3, warmup: int = 1) -> AnswerPathRow:
    """Time ``plan`` against the receiver's full prefill on one context, interleaved."""
    cache = sender_prefill(sender, [context], e_layers=parse_plan(plan, receiver.stack.num_layers))[0]
    steps = {
        "full_prefill": lambda: receiver_prefill(receiver, [context], "full_prefill"),
        "plan_prefill": lambda: receiver_prefill(receiver, [cache], plan),
        "full_answer": lambda: generate(
            receiver, receiver_prefill(receiver, [context], "full_prefill"), [query], max_new_tokens=1
        ),
        "plan_answer": lambda: generate(receiver, receiver_prefill(receiver, [cache], plan), [query], max_new_tokens=1),
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for step in range(warmup + repeats):
        for name, fn in steps.items():
            elapsed = _ms(fn)
            if step >= warmup:
                samples[name].append(elapsed)
    median = {name: statistics.median(values) for name, values in samples.items()}
    layers = receiver.stack.num_layers
    parsed = parse_plan(plan, layers)
    recomputed = layers if parsed.kind == "full_prefill" else len(parsed.recomputed_layers)
    return AnswerPathRow(
        pair=pair,
        task=task,
        plan=plan,
        context_tokens=int(context.numel()),
        recomputed_layers=recomputed,
        num_layers=layers,
        full_prefill_ms=round(median["full_prefill"], 1),
        plan_prefill_ms=round(median["plan_prefill"], 1),
        prefill_speedup=round(median["full_prefill"] / median["plan_prefill"], 3),
        full_answer_ms=round(median["full_answer"], 1),
        plan_answer_ms=round(median["plan_answer"], 1),
        answer_speedup=round(median["full_answer"] / median["plan_answer"], 3),
        compute_limit=round(layers / recomputed, 3) if recomputed else None,
        repeats=repeats,
        threads=torch.get_num_threads(),
    )


def markdown(rows: Sequence[dict]) -> str:
    """Per (pair, plan): medians over the timed contexts of each figure; speedups with their smallest and largest."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["task"], row["plan"]), []).append(row)
    lines = ["| pair | task | plan | recomputed | contexts (tokens) | full prefill | plan prefill | prefill speedup | "
             "compute-only limit | full answer path | plan answer path | answer speedup |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (pair, task, plan), group in groups.items():
        med = lambda key: statistics.median(r[key] for r in group)  # noqa: E731
        ranged = lambda key: (f"{med(key):.2f}× [{min(r[key] for r in group):.2f}–"  # noqa: E731
                              f"{max(r[key] for r in group):.2f}]")
        limit = group[0]["compute_limit"]
        tokens = ", ".join(str(r["context_tokens"]) for r in group)
        lines.append(
            f"| {pair} | {task} | `{plan}` | {group[0]['recomputed_layers']}/{group[0]['num_layers']} | {tokens} | "
            f"{med('full_prefill_ms') / 1e3:.2f} s | {med('plan_prefill_ms') / 1e3:.2f} s | "
            f"{ranged('prefill_speedup')} | "
            f"{'∞' if limit is None else f'{limit:.2f}×'} | {med('full_answer_ms') / 1e3:.2f} s | "
            f"{med('plan_answer_ms') / 1e3:.2f} s | {ranged('answer_speedup')} |"
        )
    return "\n".join(lines) + "\n"
