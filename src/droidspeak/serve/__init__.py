"""Serving benchmark machinery: ``arrivals`` (requests and their Poisson arrivals), ``scheduler`` (a batched prefill +
decode scheduler, simulated over an executor's step times), ``latency`` (TTFT, TBT, E2E and throughput at an SLO) and
``planner`` (the latency model and the plan choice)."""

from droidspeak.serve.arrivals import Request, poisson_requests
from droidspeak.serve.latency import RequestRecord, summarize, throughput_at_slo
from droidspeak.serve.planner import AdaptivePlanner, FixedPlanner, LatencyModel, PlanOption, fit_line
from droidspeak.serve.scheduler import ModelledExecutor, Scheduler

__all__ = ["AdaptivePlanner", "FixedPlanner", "LatencyModel", "ModelledExecutor", "PlanOption", "Request",
           "RequestRecord", "Scheduler", "fit_line", "poisson_requests", "summarize", "throughput_at_slo"]
