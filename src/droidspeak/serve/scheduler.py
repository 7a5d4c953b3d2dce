"""A batched prefill + decode scheduler, run as a discrete-event simulation over an executor's step durations.

One device serves several receivers. Each iteration: if requests wait, prefill one batch (the receiver of the
oldest waiting request, its waiting requests in arrival order, up to ``max_batch``; the plan chosen by the
planner) — the prefill yields each request's first token; then one decode step per receiver with running
requests (each yields one token per request). Durations come from the executor (a calibrated latency model, or
measured runs), so queueing is simulated exactly while the costs are the device's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from droidspeak.serve.arrivals import Request
from droidspeak.serve.latency import RequestRecord
from droidspeak.serve.planner import LatencyModel


class ModelledExecutor:
    """Step durations from a LatencyModel at a given link bandwidth."""

    def __init__(self, latency: LatencyModel, bandwidth_gbps: float | None = None):
        self.latency, self.bandwidth_gbps = latency, bandwidth_gbps

    def prefill(self, receiver: str, requests: list[Request], plan: str) -> float:
        tokens = max(r.context_tokens for r in requests)
        return self.latency.prefill_seconds(plan, len(requests), tokens, self.bandwidth_gbps)

    def decode(self, receiver: str, requests: list[Request]) -> float:
        return self.latency.decode_seconds(len(requests), sum(r.context_tokens for r in requests))


@dataclass
class BatchLog:
    start: float
    end: float
    kind: str  # "prefill" or "decode"
    receiver: str
    rids: tuple[int, ...]
    plan: str = ""


@dataclass
class Scheduler:
    executor: object
    planner: object
    max_batch: int = 8
    max_running: int = 64  # per receiver: no new prefill for a receiver whose decode batch is full
    bandwidth_gbps: float | None = None
    log: list[BatchLog] = field(default_factory=list)

    def run(self, requests: list[Request]) -> list[RequestRecord]:
        pending = deque(sorted(requests, key=lambda r: (r.arrival, r.rid)))
        waiting: list[Request] = []
        running: dict[str, list[Request]] = {}
        records = {r.rid: RequestRecord(r) for r in requests}
        now = 0.0
        self.log = []
        while pending or waiting or any(running.values()):
            while pending and pending[0].arrival <= now:
                waiting.append(pending.popleft())
            if not waiting and not any(running.values()):
                now = pending[0].arrival
                continue
            admissible = [r for r in waiting if len(running.get(r.receiver, [])) < self.max_running]
            if admissible:
                receiver = admissible[0].receiver
                room = self.max_running - len(running.get(receiver, []))
                batch = [r for r in admissible if r.receiver == receiver][: min(self.max_batch, room)]
                for r in batch:
                    waiting.remove(r)
                plan = self.planner.choose(batch=len(batch), tokens=max(r.context_tokens for r in batch),
                                           queued=len(waiting), waited=now - batch[0].arrival,
                                           bandwidth_gbps=self.bandwidth_gbps)
                start, now = now, now + self.executor.prefill(receiver, batch, plan)
                self.log.append(BatchLog(start, now, "prefill", receiver, tuple(r.rid for r in batch), plan))
                for r in batch:
                    records[r.rid].plan = plan
                    records[r.rid].token_times.append(now)
                    if r.output_tokens > 1:
                        running.setdefault(receiver, []).append(r)
            for receiver in sorted(running):
                batch = running[receiver]
                if not batch:
                    continue
                start, now = now, now + self.executor.decode(receiver, batch)
                self.log.append(BatchLog(start, now, "decode", receiver, tuple(r.rid for r in batch)))
                for r in batch:
                    records[r.rid].token_times.append(now)
                running[receiver] = [r for r in batch if len(records[r.rid].token_times) < r.output_tokens]
        return [records[r.rid] for r in requests]
