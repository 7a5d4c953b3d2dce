"""Serving, executed and modelled. ``loop`` is the serving policy (admission, batching per receiver, where each
request's cache comes from, cohorts, one row per request), run two ways: ``server`` executes it on the wall clock with
the engine (``cohort``: greedy decoding a step at a time over a prefilled batch; caches in a bounded tier) and
``modelled`` charges each step a cost fitted to an executed run's step log, on a virtual clock (the serving page checks
it against the executed runs before any simulated number may be quoted). ``workload`` holds the queries (Poisson
arrivals, shared-context sessions, or a trace file); ``vllm_server`` serves the same queries through vLLM, from its own
environment; ``latency`` summarizes a run's rows; ``planner`` is the latency model and the plan choice over
plan × codec."""

from droidspeak.serve.latency import served_summary
from droidspeak.serve.planner import AdaptivePlanner, LatencyModel, PlanOption, fit_line

__all__ = ["AdaptivePlanner", "LatencyModel", "PlanOption", "fit_line", "served_summary"]
