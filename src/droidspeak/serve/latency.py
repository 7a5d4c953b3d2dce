"""Serving metrics: TTFT, TBT (time between tokens), E2E latency, SLO violations, throughput at an SLO. Pure."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from droidspeak.serve.arrivals import Request


@dataclass
class RequestRecord:
    request: Request
    plan: str = ""
    token_times: list[float] = field(default_factory=list)  # absolute time of every output token

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.request.arrival

    @property
    def e2e(self) -> float:
        return self.token_times[-1] - self.request.arrival

    @property
    def tbts(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(records: list[RequestRecord], *, slo_ttft: float | None = None) -> dict:
    """Mean and tail of TTFT / TBT / E2E (seconds), completed requests per second, SLO-violation rate."""
    ttft = [r.ttft for r in records]
    e2e = [r.e2e for r in records]
    tbt = [gap for r in records for gap in r.tbts]
    span = max(r.token_times[-1] for r in records) - min(r.request.arrival for r in records)
    out = {
        "requests": len(records),
        "ttft_mean": statistics.fmean(ttft), "ttft_p50": percentile(ttft, 50), "ttft_p90": percentile(ttft, 90),
        "ttft_p99": percentile(ttft, 99),
        "tbt_mean": statistics.fmean(tbt) if tbt else 0.0, "tbt_p90": percentile(tbt, 90) if tbt else 0.0,
        "e2e_mean": statistics.fmean(e2e), "e2e_p90": percentile(e2e, 90),
        "throughput_rps": len(records) / span if span > 0 else float("inf"),
    }
    if slo_ttft is not None:
        out["slo_ttft"] = slo_ttft
        out["slo_violation_rate"] = sum(t > slo_ttft for t in ttft) / len(ttft)
    return out


def throughput_at_slo(points: list[tuple[float, dict]], *, slo_ttft: float, max_violation: float = 0.1) -> float:
    """The highest offered QPS whose SLO-violation rate stays within ``max_violation`` (0 when none does)."""
    meeting = [qps for qps, summary in points if _violations(summary, slo_ttft) <= max_violation]
    return max(meeting, default=0.0)


def _violations(summary: dict, slo_ttft: float) -> float:
    if summary.get("slo_ttft") == slo_ttft and "slo_violation_rate" in summary:
        return summary["slo_violation_rate"]
    raise ValueError("summaries must be computed with the same slo_ttft (summarize(..., slo_ttft=...))")


def served_summary(rows: list[dict]) -> dict:
    """An executed run's rows (``ServedRow.record``): latency percentiles over the served requests, throughput over
    the run's span, mean quality with its bootstrap 95% interval, how many requests each cache source served, and
    how many were refused."""
    from droidspeak.stats import bootstrap_interval

    served = [r for r in rows if r["error"] is None]
    out: dict = {"requests": len(rows), "served": len(served), "refused": len(rows) - len(served)}
    if not served:
        return out
    for name in ("queueing", "ttft", "e2e", "tbt_mean"):
        values = [r[name] for r in served if r[name] is not None]
        if values:  # vLLM's queueing is not seen from outside its engine
            out |= {f"{name}_p50": percentile(values, 50), f"{name}_p90": percentile(values, 90)}
    span = max(r["last_token"] for r in served) - min(r["arrival"] for r in served)
    out["throughput_rps"] = len(served) / span if span > 0 else float("inf")
    scores = [r["score"] for r in served if r["score"] is not None]
    if scores:
        out |= {"quality": statistics.fmean(scores),
                "quality_ci": bootstrap_interval(scores, resamples=2000, level=0.95) if len(scores) > 1 else None}
    sources: dict[str, int] = {}
    for r in served:
        label = f"{r['plan']} ({r['cache_from'] or 'own prefill'})"
        sources[label] = sources.get(label, 0) + 1
    out["served_by"] = sources
    return out
