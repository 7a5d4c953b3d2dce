"""Serving benchmark (the paper's Figs. 15 and 21): TTFT / TBT / E2E vs QPS, throughput at a TTFT SLO, full prefill vs
droidspeak, and SLO violations with and without adaptive plan choice across link bandwidths.

Two stages, both in one process: (1) calibrate — measure on the device, with the real model, a prefill batch
for every plan option and batch size (droidspeak plans: pipelined from host pinned memory plus the static suffix),
the suffix alone, and a decode step; (2) serve — run the batched prefill + decode scheduler over Poisson arrivals
as a discrete-event simulation whose step durations are those measurements (at an emulated link bandwidth where
asked). The receivers are fine-tunes of one base, so they share the calibrated costs; the scheduler still batches
per receiver.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from droidspeak.bench.shapes import random_model
from droidspeak.bench.timing import environment, measure
from droidspeak.engine.arch import kv_shape
from droidspeak.engine.batch import context_cache, cost_of
from droidspeak.engine.pipeline import pipelined_prefill
from droidspeak.engine.plan import parse_plan
from droidspeak.engine.prefill import sender_prefill
from droidspeak.engine.suffix import SuffixRunner, SuffixWorkspace
from droidspeak.hf_compat import cache_arg
from droidspeak.serve import (
    AdaptivePlanner,
    FixedPlanner,
    LatencyModel,
    ModelledExecutor,
    PlanOption,
    Scheduler,
    fit_line,
    poisson_requests,
    summarize,
    throughput_at_slo,
)
from droidspeak.store import host_store


@dataclass
class ServingBenchConfig:
    shape: str = "llama3-8b"
    dtype: str = "bfloat16"
    device: str = "cuda"
    context: int = 8192
    suffix: int = 64
    output_tokens: int = 16
    receivers: tuple[str, ...] = ("code-tune", "chat-tune", "finance-lora")
    shared_contexts: int = 8
    # plan -> quality relative to the receiver's own prefill; an assumed profile (the real one comes from profile/)
    options: tuple[tuple[str, float], ...] = (("full_prefill", 1.0), ("recompute:8-23", 1.0), ("recompute:8-15", 0.99),
                                              ("recompute:8-11", 0.95), ("full_reuse", 0.6))
    droidspeak_plan: str = "recompute:8-15"
    min_quality: float = 0.99
    batches: tuple[int, ...] = (1, 2, 4)
    max_batch: int = 4
    warmup: int = 1
    repeats: int = 3
    requests: int = 400
    load_factors: tuple[float, ...] = (
        0.25,
        0.5,
        0.75,
        1.0,
        1.5,
        2.0,
        3.0,
        4.0,
        5.0,
        6.0,
        8.0,
    )  # x full prefill's capacity
    slo_factor: float = 4.0  # TTFT SLO = this x one full prefill of one request
    max_violation: float = 0.1
    bandwidths_gbps: tuple[float | None, ...] = (None, 10.0, 5.0, 2.0)  # None: the host link as measured
    seed: int = 0


def _options(cfg: ServingBenchConfig, model) -> list[PlanOption]:
    layers = model.stack.num_layers
    options = []
    for plan, quality in cfg.options:
        parsed = parse_plan(plan, layers)
        cost = cost_of(model, parsed, 1)  # bytes per context token
        options.append(PlanOption(plan, quality, len(parsed.recomputed_layers) if parsed.uses_cache else layers,
                                  cost.e_bytes, cost.kv_bytes))
    return options


def calibrate(cfg: ServingBenchConfig, model, options: list[PlanOption], log=print, record=None) -> LatencyModel:
    """Measure every plan at every batch size on this device (each point to ``record`` as measured); fit lines."""
    record = record or (lambda rec: None)
    device = model.device
    g = torch.Generator().manual_seed(cfg.seed)
    n_max = max(cfg.batches)
    contexts = [torch.randint(0, model.config.vocab_size, (cfg.context,), generator=g) for _ in range(n_max)]
    tails = [torch.randint(0, model.config.vocab_size, (cfg.suffix,), generator=g) for _ in range(n_max)]
    e_layers = sorted({s for o in options if o.uses_cache for s in parse_plan(o.plan).e_layers})
    store = host_store()
    with torch.inference_mode():
        views = [store.view(store.put(c)) for c in sender_prefill(model, contexts, e_layers=e_layers, batch_size=1)]
    timing = dict(device=device, warmup=cfg.warmup, repeats=cfg.repeats)
    prefill_points: dict[str, list] = {o.plan: [] for o in options}
    suffix_points, decode_points = [], []
    for n in cfg.batches:
        ws = SuffixWorkspace(model, batch=n, capacity=cfg.context, suffix=cfg.suffix)
        runner = SuffixRunner(model, ws)
        full_ids = torch.stack([torch.cat([c, t]) for c, t in zip(contexts[:n], tails[:n])]).to(device)
        for option in options:
            if option.uses_cache:
                def step(plan=option.plan, runner=runner, ws=ws):
                    return runner(pipelined_prefill(model, views[:n], plan, workspace=ws), tails[:n])
            else:
                @torch.inference_mode()
                def step():
                    hidden = model.model.model(input_ids=full_ids, use_cache=True).last_hidden_state
                    return model.model.lm_head(hidden[:, -1:])
            seconds = measure(step, **timing).median_ms / 1e3
            prefill_points[option.plan].append((n, seconds))
            record({"kind": "calibration", "step": "prefill", "plan": option.plan, "batch": n, "seconds": seconds})
        prefilled = pipelined_prefill(model, views[:n], "full_reuse", workspace=ws)
        def suffix(runner=runner, prefilled=prefilled):
            return runner(prefilled, tails[:n])

        suffix_points.append((n, measure(suffix, **timing).median_ms / 1e3))
        decode_points.append((n, _decode_step_seconds(model, n, cfg.context, timing)))
        record({"kind": "calibration", "step": "suffix", "batch": n, "seconds": suffix_points[-1][1],
                "suffix_mode": runner.mode})
        record({"kind": "calibration", "step": "decode", "batch": n, "seconds": decode_points[-1][1]})
        log(f"[calibrate n={n}] " + ", ".join(f"{p} {pts[-1][1] * 1e3:.1f} ms" for p, pts in prefill_points.items())
            + f", suffix {suffix_points[-1][1] * 1e3:.1f} ms, decode step {decode_points[-1][1] * 1e3:.1f} ms")
        del ws, runner, prefilled
    decode = fit_line(decode_points)
    return LatencyModel(prefill={p: fit_line(pts) for p, pts in prefill_points.items()}, suffix=fit_line(suffix_points),
                        decode=(decode[0], decode[1], 0.0), options={o.name: o for o in options})


def _decode_step_seconds(model, n: int, context: int, timing: dict) -> float:
    """One decode step of n requests over ``context`` cached tokens each (random K/V), HF forward."""
    config, device, dtype = model.config, model.device, model.dtype
    kv_heads, head_dim = kv_shape(config)
    shape = (n, kv_heads, context, head_dim)
    data = [(torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype))
            for _ in range(model.stack.num_layers)]
    cache = context_cache(data)
    ids = torch.zeros(n, 1, dtype=torch.long, device=device)
    positions = torch.full((n, 1), context, device=device)

    @torch.inference_mode()
    def step():
        out = model.model(input_ids=ids, use_cache=True, position_ids=positions, logits_to_keep=1, **cache_arg(cache))
        cache.crop(-1)
        return out.logits

    return measure(step, **timing).median_ms / 1e3


def simulate(cfg: ServingBenchConfig, latency: LatencyModel, options: list[PlanOption], log=print) -> dict:
    single_full = latency.prefill_seconds("full_prefill", 1, cfg.context)
    slo = cfg.slo_factor * single_full
    capacity = 1.0 / single_full
    contexts = [cfg.context] * cfg.shared_contexts
    quality = {o.name: o.quality for o in options}

    def serve(planner, qps: float, bandwidth=None) -> dict:
        requests = poisson_requests(qps, count=cfg.requests, receivers=list(cfg.receivers), contexts=contexts,
                                    suffix_tokens=cfg.suffix, output_tokens=cfg.output_tokens, seed=cfg.seed)
        scheduler = Scheduler(ModelledExecutor(latency, bandwidth), planner, max_batch=cfg.max_batch,
                              bandwidth_gbps=bandwidth)
        records = scheduler.run(requests)
        summary = summarize(records, slo_ttft=slo)
        summary["mean_quality"] = sum(quality[r.plan] for r in records) / len(records)
        summary["plans"] = {p: sum(r.plan == p for r in records) for p in sorted({r.plan for r in records})}
        return summary

    adaptive = lambda: AdaptivePlanner(latency, options, min_quality=cfg.min_quality, slo_ttft=slo)  # noqa: E731
    modes = {"full_prefill": lambda: FixedPlanner("full_prefill"),
             "droidspeak": lambda: FixedPlanner(cfg.droidspeak_plan), "adaptive": adaptive}
    curves = {name: [] for name in modes}
    for factor in cfg.load_factors:
        qps = factor * capacity
        for name, make in modes.items():
            curves[name].append((qps, serve(make(), qps)))
        log(f"[qps {qps:.2f}] " + ", ".join(
            f"{name} ttft p90 {c[-1][1]['ttft_p90'] * 1e3:.0f} ms viol {c[-1][1]['slo_violation_rate']:.2f}"
            for name, c in curves.items()))
    at_slo = {}
    for name, points in curves.items():  # refine between the last grid point meeting the SLO and the next one
        low = throughput_at_slo(points, slo_ttft=slo, max_violation=cfg.max_violation)
        higher = [q for q, _ in points if q > low]
        high = min(higher) if higher else low
        for _ in range(6 if higher else 0):
            middle = (low + high) / 2
            if serve(modes[name](), middle)["slo_violation_rate"] <= cfg.max_violation:
                low = middle
            else:
                high = middle
        at_slo[name] = low
    gain = at_slo["droidspeak"] / at_slo["full_prefill"] if at_slo["full_prefill"] else float("inf")
    log(f"throughput at TTFT SLO {slo * 1e3:.0f} ms: " + ", ".join(f"{k} {v:.2f} rps" for k, v in at_slo.items())
        + f"; droidspeak / full = {gain:.2f}x")

    # Fig. 21: SLO violations with and without adaptation across link bandwidths, at droidspeak's SLO throughput
    probe = at_slo["droidspeak"] or capacity
    bandwidth_rows = []
    for bandwidth in cfg.bandwidths_gbps:
        row = {"gbps": bandwidth, "qps": probe}
        for name in ("droidspeak", "adaptive"):
            summary = serve(modes[name](), probe, bandwidth)
            row[name] = {k: summary[k] for k in ("slo_violation_rate", "ttft_p90", "mean_quality", "plans")}
        bandwidth_rows.append(row)
        log(
            f"[bandwidth {bandwidth or 'host'} GB/s, qps {probe:.2f}] "
            f"fixed viol {row['droidspeak']['slo_violation_rate']:.2f}, "
            f"adaptive viol {row['adaptive']['slo_violation_rate']:.2f} (plans {row['adaptive']['plans']})"
        )
    return {"slo_ttft_s": slo, "full_capacity_rps": capacity,
            "curves": {name: [{"qps": q, **s} for q, s in points] for name, points in curves.items()},
            "throughput_at_slo_rps": at_slo, "throughput_gain": gain, "bandwidth": bandwidth_rows}


def run(cfg: ServingBenchConfig, log=print, record=None) -> dict:
    """Calibrate (each measured step cost to ``record`` at once), then simulate; the whole result is recorded last."""
    device = torch.device(cfg.device)
    env = {**environment(device), "shape": cfg.shape, "context": cfg.context, "droidspeak_plan": cfg.droidspeak_plan}
    if record is not None:
        record({"kind": "environment", **env})
    model = random_model(cfg.shape, dtype=cfg.dtype, device=device, seed=cfg.seed)
    options = _options(cfg, model)
    latency = calibrate(cfg, model, options, log=log, record=record)
    result = {"bench": "serving", **env,
              "latency_model": {"prefill": latency.prefill, "suffix": latency.suffix, "decode": latency.decode}}
    result.update(simulate(cfg, latency, options, log=log))
    result["target"] = {"goal": 4.0, "gain": result["throughput_gain"], "met": result["throughput_gain"] >= 4.0}
    if record is not None:
        record({"kind": "result", **result})
    return result


def assemble(records: list[dict]) -> dict:
    """The last complete result; else what calibration measured before the run stopped."""
    results = [r for r in records if r["kind"] == "result"]
    if results:
        return {k: v for k, v in results[-1].items() if k != "kind"}
    env = next((r for r in records if r["kind"] == "environment"), {})
    return {"bench": "serving", "incomplete": True, **{k: v for k, v in env.items() if k != "kind"},
            "calibration": [{k: v for k, v in r.items() if k != "kind"} for r in records if r["kind"] == "calibration"]}


def markdown(result: dict) -> str:
    if result.get("incomplete"):
        lines = ["serving: the run stopped before the simulation; step costs measured so far (s):", "",
                 "| step | plan | batch | seconds |", "|---|---|---|---|"]
        lines += [
            f"| {c['step']} | {c.get('plan', '')} | {c['batch']} | {c['seconds']:.4f} |" for c in result["calibration"]
        ]
        return "\n".join(lines) + "\n"
    at = result["throughput_at_slo_rps"]
    lines = [f"serving: {result['card']} · torch {result['torch']} · transformers {result['transformers']} · "
             f"{result['shape']}, context {result['context']} · "
             f"TTFT SLO {result['slo_ttft_s'] * 1e3:.0f} ms (≤10% violations)", "",
             "| mode | throughput at SLO (req/s) |", "|---|---|"]
    lines += [f"| {name} | {rps:.2f} |" for name, rps in at.items()]
    lines += ["", f"droidspeak ({result['droidspeak_plan']}) / full prefill: **{result['throughput_gain']:.2f}×**", "",
              "| qps | full TTFT p90 / TBT mean / E2E mean (ms) | droidspeak | adaptive |", "|---|---|---|---|"]
    curves = result["curves"]
    for i, point in enumerate(curves["full_prefill"]):
        cells = [f"{c[i]['ttft_p90'] * 1e3:.0f} / {c[i]['tbt_mean'] * 1e3:.1f} / {c[i]['e2e_mean'] * 1e3:.0f}"
                 for c in (curves["full_prefill"], curves["droidspeak"], curves["adaptive"])]
        lines.append(f"| {point['qps']:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "SLO violations vs link bandwidth (Fig. 21):",
        "",
        "| GB/s | fixed plan | adaptive | adaptive plans |",
        "|---|---|---|---|",
    ]
    for row in result["bandwidth"]:
        lines.append(f"| {row['gbps'] or 'host'} | {row['droidspeak']['slo_violation_rate']:.2f} | "
                     f"{row['adaptive']['slo_violation_rate']:.2f} | {row['adaptive']['plans']} |")
    return "\n".join(lines) + "\n"
