"""Serving, executed and simulated. Executed: ``workload`` (queries over shared contexts, from a Poisson process or a
trace file), ``cohort`` (greedy decoding a step at a time over a prefilled batch) and ``server`` (the loop that runs
them on the wall clock, each pair with its plan, caches in a bounded tier), ``vllm_server`` (the same queries through
vLLM, from its own environment). Simulated: ``arrivals`` (requests as
token counts and their Poisson arrivals), ``scheduler`` (a batched prefill + decode scheduler over an executor's step
times), ``planner`` (the latency model and the plan choice). Both: ``latency`` (TTFT, TBT, E2E, throughput at an
SLO)."""

from droidspeak.serve.arrivals import Request, poisson_requests
from droidspeak.serve.latency import RequestRecord, summarize, throughput_at_slo
from droidspeak.serve.planner import AdaptivePlanner, FixedPlanner, LatencyModel, PlanOption, fit_line
from droidspeak.serve.scheduler import ModelledExecutor, Scheduler

__all__ = ["AdaptivePlanner", "FixedPlanner", "LatencyModel", "ModelledExecutor", "PlanOption", "Request",
           "RequestRecord", "Scheduler", "fit_line", "poisson_requests", "summarize", "throughput_at_slo"]
