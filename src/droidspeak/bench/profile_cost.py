"""What profiling costs per (plan × question), path against path in one run: today's path (float32, one plan's
answers per decode) beside cheaper ones (bf16, several plans' answers per decode) on the same pair, plans and
questions — and whether a cheaper path still answers as today's does, so that its choice does not move.

Each round times every path once, in an order rotated per round, each from a fresh :class:`Profiler` (the sender's
prefill is not timed: it is paid once per profile, whatever the path); the first round of each path keeps its
answers and per-question scores. One ``ProfileCostRun`` (track.records) per (path, round) is yielded as it is
measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from droidspeak.engine.loading import LoadedModel
from droidspeak.profile.profiler import Profiler
from droidspeak.track.records import ProfileCostRun, device_name, new_record_provenance

Loader = Callable[[str], tuple[LoadedModel, LoadedModel]]  # dtype -> (receiver, sender)


@dataclass(frozen=True)
class ProfilePath:
    """How a profile's plans are scored: the models' dtype, how many plans' answers one decode batches, and whether
    the receiver's own answers are checked first as each plan's (Profiler's ``drafts``)."""

    dtype: str
    plans_per_batch: int
    drafts: bool = False

    @property
    def name(self) -> str:
        return f"{self.dtype} × {self.plans_per_batch}" + (" + drafts" if self.drafts else "")

    @classmethod
    def parse(cls, text: str) -> "ProfilePath":
        """``float32x1``, ``bfloat16x8``, ``float32x1+drafts``: a dtype, the plans per decode, and drafts or not."""
        path, plus, drafts = text.partition("+")
        dtype, sep, plans = path.rpartition("x")
        if not sep or not dtype or not plans.isdigit() or int(plans) < 1 or (plus and drafts != "drafts"):
            raise ValueError(f"profile path {text!r}: expected <dtype>x<plans per decode>[+drafts], e.g. bfloat16x8 "
                             "or float32x1+drafts")
        return cls(dtype, int(plans), bool(plus))


def measure(paths: Sequence[ProfilePath], load: Loader, *, pair: str, task: str, rows: Sequence[dict],
            plans: Sequence[str], rounds: int, batch_size: int, threads: int,
            log: Callable[[str], None] = lambda _: None) -> Iterator[ProfileCostRun]:
    """Every path over ``plans`` × ``rows``, ``rounds`` times, interleaved; the paths' models load once each (after
    a one-plan warm-up each, untimed)."""
    models = {path.dtype: load(path.dtype) for path in paths}
    for path in paths:  # warm-up: first-call allocations and thread pools are nobody's cost
        receiver, sender = models[path.dtype]
        Profiler(receiver, sender, task, rows[:1], batch_size=batch_size).evaluate_many(plans[:1])
    for round_ in range(rounds):
        for order in range(len(paths)):
            path = paths[(round_ + order) % len(paths)]
            receiver, sender = models[path.dtype]
            profiler = Profiler(receiver, sender, task, rows, batch_size=batch_size,
                                plans_per_batch=path.plans_per_batch, drafts=path.drafts)
            started = time.perf_counter()
            evaluations = profiler.evaluate_many(plans)
            seconds = time.perf_counter() - started
            first = round_ == 0
            run = ProfileCostRun(
                pair=pair, task=task, path=path.name, dtype=path.dtype, plans_per_batch=path.plans_per_batch,
                drafts=path.drafts, decoded=profiler.decoded, answered=profiler.answered,
                round=round_, order=order, seconds=round(seconds, 3),
                prefill_seconds=round(sum(e.prefill_seconds for e in evaluations), 3), plans=list(plans),
                num_layers=receiver.stack.num_layers, questions=len(rows),
                batch_size=batch_size, threads=threads,
                scores={e.name: list(e.per_input) for e in evaluations} if first else {},
                answers={e.name: list(e.answers) for e in evaluations} if first else {},
                device=device_name(receiver.device), **new_record_provenance(),
            )
            log(f"round {round_} {path.name}: {seconds:.1f} s ({run.prefill_seconds:.1f} s prefill), "
                f"{1000 * run.seconds_per_answer:.0f} ms per answer")
            yield run
