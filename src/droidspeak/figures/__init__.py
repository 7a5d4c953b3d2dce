"""Figures from results JSONL and profile files (PNG + PDF): one function per figure of the paper.

Results JSONL and profile files are the source of truth; figures are a pure function of them, so any figure
can be redrawn from a finished run without touching a model. Every function takes the rows (or profiles), an
output folder and a file stem, writes ``<stem>.png`` and ``<stem>.pdf``, and returns both paths. Figures are
built on ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state) inside an ``rc_context``, so importing or
calling this package never changes global matplotlib settings.

- :mod:`droidspeak.figures.result_plots`: figs 6 and 14, from eval rows (dicts from the results JSONL,
  ``{"kind": "eval", "pair", "task", "plan", "method", "metric", "quality", "prefill_seconds",
  "recomputed_fraction", "seed", ...}`` with method in full_prefill, full_reuse, recompute, cacheblend, profile,
  sender);
- :mod:`droidspeak.figures.profile_plots`: figs 7, 8, 10, 11 and 17, from profiles
  (:class:`droidspeak.profile.Profile` objects, their JSON dicts, or paths to profile files);
- :mod:`droidspeak.figures.style`: colours, rc style, panel grid and PNG + PDF saving shared by both.

The pages: ``render`` (a sweep's figures and tables from its rows), ``summary`` (the headline table), ``glance``
(README's results at a glance), ``heldout`` (the plan chosen on the profile split, scored on a held-out split),
``intervals`` (bootstrap intervals, the paired test and the rule for "significant", shared by every page),
``profiles_summary`` (profiling tables), ``study_page`` (a real-model study's page), ``codec_page``, ``proxy_page``,
``alora_page``, ``profile_cost_page``, ``question_budget_page``, ``granularity_page`` and ``serving_page`` (the
pages of the compressed-transfer, proxy, activated-LoRA, profiling-cost, question-budget, search-granularity and
serving studies); ``template``
renders a page's prose from its template (conf/pages/). The figure modules: ``result_plots``, ``profile_plots``,
``style``.
"""

from droidspeak.figures.profile_plots import (
    as_profiles,
    plot_input_spread,
    plot_layer_sensitivity,
    plot_profile_pareto,
    plot_profile_transfer,
    plot_transitions,
    transition_strata,
)
from droidspeak.figures.profiles_summary import profiles_summary, write_profiles_summary
from droidspeak.figures.result_plots import METHOD_STYLE, eval_rows, plot_quality_bars, plot_quality_vs_cost
from droidspeak.figures.style import OKABE_ITO, FigureDataError

FIGURES = {
    "fig06_quality_bars": plot_quality_bars,
    "fig07_layer_sensitivity": plot_layer_sensitivity,
    "fig08_input_spread": plot_input_spread,
    "fig10_transitions": plot_transitions,
    "fig11_profile_pareto": plot_profile_pareto,
    "fig14_quality_vs_cost": plot_quality_vs_cost,
    "fig17_profile_transfer": plot_profile_transfer,
}
"""Figure stem -> function; figs 6 and 14 take eval rows, the others take profiles."""

__all__ = [
    "FIGURES",
    "METHOD_STYLE",
    "OKABE_ITO",
    "FigureDataError",
    "as_profiles",
    "eval_rows",
    "plot_input_spread",
    "plot_layer_sensitivity",
    "plot_profile_pareto",
    "plot_profile_transfer",
    "plot_quality_bars",
    "plot_quality_vs_cost",
    "plot_transitions",
    "profiles_summary",
    "transition_strata",
    "write_profiles_summary",
]
