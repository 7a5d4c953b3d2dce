"""Plan choice for serving: a latency model calibrated from measurements, and a planner that picks a recompute plan
per batch, adaptive to load (the paper's appendix) and to link bandwidth (its stated open limit); the transfer-codec
page (droidspeak.figures.codec_page) asks it which plan × codec to send at each link rate.

Latency of a droidspeak prefill at link bandwidth ``bw`` (E-first pipelined):
    E bytes / bw  +  max(recompute time, reused K/V bytes / bw)  +  decode time  +  suffix time
where recompute, suffix and decode times come from measurements on the serving device; a full prefill moves no
bytes. Decode is what a lossy transfer codec costs the receiver (droidspeak.codec), counted serially: on a CPU it
takes the cores the recompute runs on. An option is a plan sent through one codec, so a planner chooses among
(plan × precision).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PlanOption:
    plan: str  # contract syntax
    quality: float  # relative to the receiver's own full prefill (1.0), from the pair's profile
    recomputed_layers: int
    e_bytes_per_token: float = 0  # as sent, through the codec
    kv_bytes_per_token: float = 0  # reused layers' K/V, as sent
    codec: str = "lossless"  # droidspeak.codec
    decode_seconds_per_token: float = 0.0  # the receiver decoding what the codec sent

    @property
    def uses_cache(self) -> bool:
        return self.plan != "full_prefill"

    @property
    def name(self) -> str:
        """What a planner answers: the plan, with its codec unless lossless (``recompute:8-15 int8``)."""
        return self.plan if self.codec == "lossless" or not self.uses_cache else f"{self.plan} {self.codec}"


@dataclass
class LatencyModel:
    """Seconds for a prefill batch or one decode step, from measured points, linear in batch size per plan.

    ``prefill[plan] = (a, b)``: compute seconds of a batch of n = a + b·n (at native bandwidth, transfers hidden);
    ``suffix = (a, b)``; ``decode = (a, b, c)``: a + b·n + c·(context tokens summed over the batch).
    ``options`` are keyed by :attr:`PlanOption.name`; an option's compute is its plan's.
    """

    prefill: dict[str, tuple[float, float]]
    suffix: tuple[float, float] = (0.0, 0.0)
    decode: tuple[float, float, float] = (0.0, 0.0, 0.0)
    options: dict[str, PlanOption] = field(default_factory=dict)

    def prefill_seconds(
        self, name: str, batch: int, tokens_per_request: int, bandwidth_gbps: float | None = None
    ) -> float:
        """Seconds of a prefill batch under the option (or plan) ``name``; ``bandwidth_gbps`` in GB/s (None: the
        transfers hidden behind compute)."""
        option = self.options.get(name)
        a, b = self.prefill[name if option is None else option.plan]
        compute = a + b * batch
        if option is None or not option.uses_cache:
            return compute
        compute += option.decode_seconds_per_token * tokens_per_request * batch
        if bandwidth_gbps is None:
            return compute
        suffix = self.suffix[0] + self.suffix[1] * batch
        rate = bandwidth_gbps * 1e9
        e_load = option.e_bytes_per_token * tokens_per_request * batch / rate
        kv_load = option.kv_bytes_per_token * tokens_per_request * batch / rate
        return e_load + max(compute - suffix, kv_load) + suffix

    def decode_seconds(self, batch: int, context_tokens: int) -> float:
        a, b, c = self.decode
        return a + b * batch + c * context_tokens


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) through (x, y) points; a single point gives a line through the origin.

    Costs never fall as batches grow: a negative slope (noise) becomes a flat line at the mean."""
    if len(points) == 1:
        x, y = points[0]
        return 0.0, y / x if x else y
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    if slope < 0:
        return my, 0.0
    intercept = my - slope * mx
    return (intercept, slope) if intercept >= 0 else (0.0, sum(y for _, y in points) / sum(x for x, _ in points))


class AdaptivePlanner:
    """Pick a plan per batch among ``options`` that meet ``min_quality``.

    Busy (requests queued behind this batch): the option with the lowest predicted latency at the current link
    bandwidth — usually the fewest recomputed layers, but at a slow link the one that loads fewer bytes (fewer
    reused layers, or a lossier codec).
    Idle: the plan with the most recompute (highest quality) whose predicted TTFT still meets the SLO.
    """

    def __init__(self, latency: LatencyModel, options: list[PlanOption], *, min_quality: float, slo_ttft: float,
                 busy_queue: int = 1):
        self.latency, self.slo_ttft, self.busy_queue = latency, slo_ttft, busy_queue
        self.options = [o for o in options if o.quality >= min_quality and o.plan in latency.prefill]
        if not self.options:
            raise ValueError(f"no plan option reaches quality {min_quality}: {[(o.plan, o.quality) for o in options]}")

    def choose(self, *, batch: int, tokens: int, queued: int, waited: float, bandwidth_gbps: float | None) -> str:
        predict = lambda o: self.latency.prefill_seconds(o.name, batch, tokens, bandwidth_gbps)  # noqa: E731
        fastest = min(self.options, key=predict)
        if queued >= self.busy_queue:
            return fastest.name
        within = [o for o in self.options if waited + predict(o) <= self.slo_ttft]
        if not within:
            return fastest.name
        return max(within, key=lambda o: (o.quality, o.recomputed_layers, -predict(o))).name
