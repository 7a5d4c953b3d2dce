"""A sweep's pages from its rows alone: the figures (PNG + PDF), summary.md/json and, with profiles, profiles.md/json.

One function, so the command that writes ``reports/`` and the test that re-renders the committed pages from the
committed rows (tests/test_committed_pages.py) run the same code.
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from droidspeak.figures.heldout import baselines_on, facts_contexts, heldout, one_held_out_split, withheld_plans
from droidspeak.figures.profile_plots import (
    plot_input_spread,
    plot_layer_sensitivity,
    plot_profile_pareto,
    plot_profile_transfer,
    plot_transitions,
)
from droidspeak.figures.profiles_summary import profiles_summary, write_profiles_summary
from droidspeak.figures.result_plots import plot_quality_bars, plot_quality_vs_cost
from droidspeak.figures.style import FigureDataError
from droidspeak.figures.summary import summarize, write_summary
from droidspeak.track.records import read_results
from droidspeak.zoo.tasks import DEV

log = logging.getLogger(__name__)


def shown_rows(rows: list[dict]) -> list[dict]:
    """The rows the figures and the in-sample table show: one held-out split's per (pair, task) (heldout.
    one_held_out_split), where a sweep also scored plans on the profile split (to choose among them there; the
    held-out table reads those) or on the dev split."""
    return one_held_out_split(rows) or rows


def profile_files(entries: Iterable[str]) -> list[str]:
    """Profile paths, each entry a file or a glob pattern (``reports/rows/profiles/*/*.json``), sorted per pattern."""
    files = []
    for entry in entries:
        matches = sorted(glob.glob(entry)) if any(c in entry for c in "*?[") else [entry]
        if not matches:
            raise SystemExit(f"no profile file matches {entry!r}: run experiments/profile_pair.py first")
        files += matches
    return files


def _drawn(figures) -> list[Path]:
    written = []
    for name, draw in figures:
        try:
            written += draw()
        except FigureDataError as err:
            log.warning("skipped %s: %s", name, err)
    return written


def eval_figures(rows: list[dict], out_dir: Path, withheld: frozenset = frozenset()) -> list[Path]:
    """``withheld``: the plans the held-out tables do not show within their target (heldout.withheld_plans)."""
    def versus_cost(x: str, stem: str):
        return lambda: plot_quality_vs_cost(rows, out_dir, x=x, stem=stem, withheld=withheld)

    return _drawn(
        (
            ("quality bars", lambda: plot_quality_bars(rows, out_dir)),
            ("quality vs speedup", versus_cost("speedup", "fig14_quality_vs_speedup")),
            ("quality vs recomputed fraction", versus_cost("recomputed_fraction", "fig14_quality_vs_fraction")),
            ("quality vs prefill time", versus_cost("prefill_seconds", "fig14_quality_vs_cost")),
        )
    )


def profile_figures(profiles: list[str], out_dir: Path, tolerance: float,
                    layer_types: list[str] | None = None) -> list[Path]:
    if not profiles:
        return []
    return _drawn((
        ("layer sensitivity", lambda: plot_layer_sensitivity(profiles, out_dir, layer_types=layer_types)),
        ("input spread", lambda: plot_input_spread(profiles, out_dir)),
        ("transitions", lambda: plot_transitions(profiles, out_dir)),
        ("profiling Pareto", lambda: plot_profile_pareto(profiles, out_dir, tolerance=tolerance)),
        ("profile transfer", lambda: plot_profile_transfer(profiles, out_dir)),
    ))


def render_pages(results: str, profile_patterns: Iterable[str], out_dir: str | Path, *, tolerance: float = 0.05,
                 draw: bool = True, facts: str | None = None) -> tuple[list[dict], list[Path]]:
    """Write the pages of the rows in ``results`` (and the profiles the patterns match) into ``out_dir``; returns the
    rows shown and the files written. ``draw=False`` writes the tables only (no matplotlib); ``facts`` (a study's
    ``rows/family.json``) gives the base's attention type per layer, marked on Fig. 7, and each question's context,
    which the held-out intervals resample whole."""
    rows = [row.to_dict() for row in read_results(results)]
    if not rows:
        raise SystemExit(f"no results in {results}: run experiments/evaluate.py first")
    out_dir = Path(out_dir)
    profiles = profile_files(profile_patterns)
    shown = shown_rows(rows)
    layer_types = json.loads(Path(facts).read_text())["base"].get("layer_types") if facts else None
    contexts = facts_contexts(facts)
    held_out = heldout(rows, contexts)
    written = (eval_figures(shown, out_dir, withheld_plans(held_out))
               + profile_figures(profiles, out_dir, tolerance, layer_types)) if draw else []
    versions = Counter(str(row.get("code_version")) for row in rows)
    written += write_summary(summarize(shown, tolerance), out_dir, source=f"`{results}`", held_out=held_out,
                             dev=baselines_on(rows, DEV, contexts), code_versions=versions)
    if profiles:
        source = ", ".join(f"`{p}`" for p in profiles)
        written += write_profiles_summary(profiles_summary(profiles, tolerance), out_dir, source=source)
    return shown, written
