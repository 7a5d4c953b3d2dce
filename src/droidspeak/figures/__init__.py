"""Figures from results JSONL and profile files (PNG + PDF); see :mod:`droidspeak.figures.plots`."""

from droidspeak.figures.plots import (
    FIGURES,
    METHOD_STYLE,
    OKABE_ITO,
    FigureDataError,
    as_profiles,
    eval_rows,
    plot_input_spread,
    plot_layer_sensitivity,
    plot_profile_pareto,
    plot_profile_transfer,
    plot_quality_bars,
    plot_quality_vs_cost,
    plot_transitions,
    transition_strata,
)
from droidspeak.figures.profiles_summary import profiles_summary, write_profiles_summary

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
