"""Serving metrics over an executed (or modelled) run's rows: TTFT, TBT (time between tokens), E2E latency, quality
and where each request's cache came from. Pure."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated between the two nearest ranks (numpy's default), so p50 is the
    median: a nearest-rank index rounded up would report the upper of the two middle values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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
