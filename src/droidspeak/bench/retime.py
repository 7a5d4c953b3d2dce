"""Re-time a study's rows without re-scoring them: each point's prefill speedup as a median over several contexts and
interleaved repeats, with its spread, the full prefill timed against itself (the noise floor) in the same rounds.

A sweep scores quality once per point; its timing is a side measurement and, on a 2-core machine, the costliest to
do well. So a study times its points here, after scoring: rows that share a receiver, a sender and the contexts of
one task split are one measurement (:func:`timing_groups`; a transfer codec changes what crosses the link, not the
receiver's prefill this times), every plan of the group timed in the same rounds. Each group becomes one
:class:`~droidspeak.track.records.TimingRecord` in ``timings.jsonl`` beside the rows, which ``read_results`` joins
onto them by key: the rows keep their scores, their speedups come from here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence

import torch

from droidspeak.bench.answer_path import CONTEXT_PREFILL, time_plans
from droidspeak.engine import sender_prefill
from droidspeak.engine.plan import parse_plan
from droidspeak.profile.profiler import select_profile_rows
from droidspeak.track.records import ResultRow, TimingRecord, device_name, new_record_provenance
from droidspeak.track.results import read_rows
from droidspeak.zoo.measure import task_questions

UNTIMED_METHODS = ("sender",)  # the sender answering alone: no plan of the receiver's to time


def timing_groups(rows: Sequence[ResultRow]) -> dict[tuple, list[ResultRow]]:
    """Rows timed together: one receiver, sender, task split and dtype (the same models over the same contexts)."""
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        if row.method not in UNTIMED_METHODS:
            groups.setdefault((row.receiver, row.sender, row.task, row.split, row.dtype), []).append(row)
    return groups


def retime(rows: Sequence[ResultRow], family, *, contexts: int, repeats: int, warmup: int, device: str = "cpu",
           done: set[str] = frozenset(), log: Callable[[str], object] = print) -> Iterator[TimingRecord]:
    """One record per timing group whose rows are not all in ``done`` (keys already timed), as each is measured."""
    for (receiver_ref, sender_ref, task, split, dtype), group in timing_groups(rows).items():
        if {row.key for row in group} <= done:
            continue
        receiver = family.load(receiver_ref.removeprefix("zoo:"), dtype=dtype, device=device)
        sender = family.load(sender_ref.removeprefix("zoo:"), dtype=dtype, device=device)
        first: dict[str, dict] = {}
        for row in select_profile_rows(read_rows(family.task_files[task][split]), contexts):
            first.setdefault(row["context_id"], row)
        questions = task_questions(task, list(first.values()), receiver.tokenizer)
        tokens = [questions.contexts[row["context_id"]] for row in first.values()]
        layers = receiver.stack.num_layers
        plans = list(dict.fromkeys(row.resolved_plan for row in group))
        timings = {}
        for full_sliding in (False, True):  # CacheBlend re-attends over every token of a sliding layer
            chosen = [plan for plan in plans if (parse_plan(plan, layers).kind == "cacheblend") == full_sliding]
            if chosen:
                caches = sender_prefill(sender, tokens, e_layers="all", batch_size=1, full_sliding=full_sliding)
                for timing in time_plans(receiver, caches, chosen, layers, repeats=repeats, warmup=warmup):
                    timings[timing.plan] = timing
        pair = group[0].pair
        for plan, timing in timings.items():
            log(f"{pair} {task}/{split} {plan}: {timing.speedup:.2f}x [{timing.spread[0]:.2f}-{timing.spread[1]:.2f}]")
            yield TimingRecord(
                keys=[row.key for row in group if row.resolved_plan == plan], pair=pair, task=task, split=split,
                plan=plan, receiver=receiver_ref, sender=sender_ref,
                prefill_seconds=statistics.median(timing.plan_seconds),
                baseline_prefill_seconds=statistics.median(timing.baseline_seconds),
                speedup=timing.speedup, speedup_spread=list(timing.spread), ratios=timing.ratios,
                timed_contexts=timing.contexts, timed_repeats=timing.repeats, warmup=warmup,
                context_tokens=[int(t.numel()) for t in tokens], timed_path=CONTEXT_PREFILL,
                device=device_name(device), dtype=dtype, **new_record_provenance(),
            )
        del receiver, sender
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
