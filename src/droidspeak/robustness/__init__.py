"""The robustness campaign: every bad input we know, SIGKILLs mid-sweep, concurrent writers and a memory bound,
tried on the toy family and tallied into ``reports/robustness.md`` (``experiments/robustness.py``).

- ``bad_inputs`` — the cases, each expecting one clear error;
- ``trials`` — sweeps in subprocesses: kills at fault points (``droidspeak.faults``) or random moments, concurrent
  writers;
- ``memory_bound`` — the lm-eval backend with a bounded memory tier against an unbounded one;
- ``campaign`` — the config and the run; ``campaign_page`` — the page.
"""
