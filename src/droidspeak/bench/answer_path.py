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


CONTEXT_PREFILL = "engine.receiver_prefill over the shared contexts (batched; no query, no transfer)"
"""What a sweep point's speedup times (its row's ``timed_path``): the receiver-side prefill a plan changes."""


def time_context_prefill(receiver, caches, plan, num_layers: int, *, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of the receiver's prefill of ``caches``' contexts: (``plan``, every layer recomputed),
    interleaved repeats after ``warmup`` rounds.

    Both go through the same engine path (recomputing every layer reproduces the receiver's own prefill, which the
    oracle tests assert), so the ratio is the compute the plan saves, not framework overhead; the sender's caches
    exist before timing starts. ``full_prefill`` is timed as every layer recomputed: its ratio is the noise floor.
    """
    baseline = f"recompute:0-{num_layers - 1}"
    timed = baseline if parse_plan(plan).kind == "full_prefill" else plan

    def once(which) -> float:
        if receiver.device.type == "cuda":
            torch.cuda.synchronize(receiver.device)
        start = time.perf_counter()
        receiver_prefill(receiver, caches, which)
        if receiver.device.type == "cuda":
            torch.cuda.synchronize(receiver.device)
        return time.perf_counter() - start

    ours, theirs = [], []
    for step in range(warmup + repeats):
        a, b = once(timed), once(baseline)
        if step >= warmup:
            ours.append(a)
            theirs.append(b)
    return statistics.median(ours), statistics.median(theirs)


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
    """Per (pair, plan): medians over the timed contexts of each figure."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["task"], row["plan"]), []).append(row)
    lines = ["| pair | task | plan | recomputed | contexts (tokens) | full prefill | plan prefill | prefill speedup | "
             "compute-only limit | full answer path | plan answer path | answer speedup |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (pair, task, plan), group in groups.items():
        med = lambda key: statistics.median(r[key] for r in group)  # noqa: E731
        limit = group[0]["compute_limit"]
        tokens = ", ".join(str(r["context_tokens"]) for r in group)
        lines.append(
            f"| {pair} | {task} | `{plan}` | {group[0]['recomputed_layers']}/{group[0]['num_layers']} | {tokens} | "
            f"{med('full_prefill_ms') / 1e3:.2f} s | {med('plan_prefill_ms') / 1e3:.2f} s | "
            f"{med('prefill_speedup'):.2f}× | "
            f"{'∞' if limit is None else f'{limit:.2f}×'} | {med('full_answer_ms') / 1e3:.2f} s | "
            f"{med('plan_answer_ms') / 1e3:.2f} s | {med('answer_speedup'):.2f}× |"
        )
    return "\n".join(lines) + "\n"
