"""Serving benchmark machinery: Poisson arrivals, a batched prefill + decode scheduler, metrics, plan choice."""

from droidspeak.serve.arrivals import Request, poisson_requests
from droidspeak.serve.metrics import RequestRecord, summarize, throughput_at_slo
from droidspeak.serve.planner import AdaptivePlanner, FixedPlanner, LatencyModel, PlanOption, fit_line
from droidspeak.serve.scheduler import ModelledExecutor, Scheduler

__all__ = ["AdaptivePlanner", "FixedPlanner", "LatencyModel", "ModelledExecutor", "PlanOption", "Request",
           "RequestRecord", "Scheduler", "fit_line", "poisson_requests", "summarize", "throughput_at_slo"]
