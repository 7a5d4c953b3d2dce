"""Serving, executed and modelled. ``loop`` is the serving policy (admission, batching per receiver, where each
request's cache comes from, cohorts, one row per request), run two ways: ``server`` executes it on the wall clock with
the engine (``cohort``: greedy decoding a step at a time over a prefilled batch; caches in a bounded tier) and
``modelled`` charges each step a cost fitted to an executed run's step log, on a virtual clock. ``workload`` holds the
queries (a Poisson process over shared contexts, or a trace file); ``vllm_server`` serves the same queries through
vLLM, from its own environment. The older simulation over token counts: ``arrivals``, ``scheduler`` (a batched prefill
+ decode scheduler over an executor's step times) and ``planner`` (the latency model and the plan choice). Both:
``latency`` (TTFT, TBT, E2E, throughput at an SLO)."""

from droidspeak.serve.arrivals import Request, poisson_requests
from droidspeak.serve.latency import RequestRecord, summarize, throughput_at_slo
from droidspeak.serve.planner import AdaptivePlanner, FixedPlanner, LatencyModel, PlanOption, fit_line
from droidspeak.serve.scheduler import ModelledExecutor, Scheduler

__all__ = ["AdaptivePlanner", "FixedPlanner", "LatencyModel", "ModelledExecutor", "PlanOption", "Request",
           "RequestRecord", "Scheduler", "fit_line", "poisson_requests", "summarize", "throughput_at_slo"]
