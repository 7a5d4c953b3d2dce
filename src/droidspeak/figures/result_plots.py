"""Figs. 6 and 14 (quality bars; quality vs prefill time, speed-up, recomputed fraction) from results.jsonl rows."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.ticker import MaxNLocator

from droidspeak.figures.intervals import bootstrap_interval
from droidspeak.figures.style import (
    OKABE_ITO,
    STYLE,
    FigureDataError,
    new_figure,
    pretty_metric,
    save_figure,
    unique_legend,
)

# method -> (legend label, colour, marker)
METHOD_STYLE = {
    "full_prefill": ("Full prefill (receiver)", OKABE_ITO["blue"], "s"),
    "full_reuse": ("Full KV reuse", OKABE_ITO["vermillion"], "X"),
    "recompute": ("DroidSpeak (layer groups)", OKABE_ITO["green"], "o"),
    "profile": ("DroidSpeak (profiled plan)", OKABE_ITO["black"], "*"),
    "cacheblend": ("CacheBlend (token recompute)", OKABE_ITO["orange"], "^"),
    "sender": ("Sender model", OKABE_ITO["purple"], "D"),
    "hybrid": ("Layer groups + token recompute", OKABE_ITO["sky"], "P"),
}

AXIS_LABELS = {
    "prefill_seconds": "Prefill time (s)",
    "recomputed_fraction": "Recomputed fraction of layer-tokens",
    "speedup": "Prefill speed-up over full prefill (×)",
    "bytes_loaded": "Bytes loaded",
}


# ---- inputs ----------------------------------------------------------------------------------------------
def eval_rows(rows: Iterable[Mapping]) -> list[Mapping]:
    """Rows that are evaluated points (``kind`` "eval" or absent) with a numeric quality."""
    return [r for r in rows if r.get("kind", "eval") == "eval" and isinstance(r.get("quality"), (int, float))]


# ---- plumbing --------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _panels(rows: Iterable[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    out: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for r in rows:
        out[(str(r.get("pair", "?")), str(r.get("task", "?")))].append(r)
    return dict(sorted(out.items()))


def _metric_label(rows: Iterable[Mapping]) -> str:
    metrics = sorted({str(r.get("metric")) for r in rows if r.get("metric")})
    return metrics[0] if len(metrics) == 1 else "quality"


def _pair_label(pair: str, task: str) -> str:
    """'receiver<-sender' on two lines, then the task: long pair names must not collide on a shared axis."""
    receiver, _, sender = pair.partition("<-")
    return f"{receiver}\n← {sender}\n({task})" if sender else f"{pair}\n({task})"


def _envelope(points: list[tuple[float, float]], *, higher_x_is_better: bool) -> list[tuple[float, float]]:
    """The best quality reachable at each x (the Pareto frontier), as points sorted by x."""
    ordered = sorted(points, reverse=higher_x_is_better)
    front, best = [], float("-inf")
    for x, quality in ordered:
        if quality > best:
            front.append((x, quality))
            best = quality
    return sorted(front)


# ---- Fig. 6: quality bars --------------------------------------------------------------------------------
def plot_quality_bars(
    rows: Iterable[Mapping], out_dir: str | os.PathLike, *, stem: str = "fig06_quality_bars"
) -> list[Path]:
    """Fig. 6: per pair and task, the receiver's own quality, the sender's, and full KV reuse, each with the 95%
    bootstrap interval over its questions that the tables quote (the questions of every seed pooled).

    Needs eval rows with method full_prefill, sender and/or full_reuse; missing methods leave a gap.
    """
    methods = ["full_prefill", "sender", "full_reuse"]
    rows = [r for r in eval_rows(rows) if r.get("method") in methods]
    if not rows:
        raise FigureDataError("quality bars need eval rows with method full_prefill, sender or full_reuse")
    panels = _panels(rows)
    width = 0.8 / len(methods)
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = new_figure(1, panel_size=(max(3.4, 1.1 * len(panels) + 1.0), 2.8))
        for m_idx, method in enumerate(methods):
            label, colour, _ = METHOD_STYLE[method]
            xs, means, errors = [], [], [[], []]
            for p_idx, key in enumerate(panels):
                chosen = [r for r in panels[key] if r["method"] == method]
                if chosen:
                    mean = _mean_std([float(r["quality"]) for r in chosen])[0]
                    scores = [float(s) for r in chosen for s in (r.get("per_sample") or [])]
                    low, high = bootstrap_interval(scores) if scores else (mean, mean)
                    xs.append(p_idx + (m_idx - (len(methods) - 1) / 2) * width)
                    means.append(mean)
                    errors[0].append(max(0.0, mean - low))
                    errors[1].append(max(0.0, high - mean))
            if xs:
                ax.bar(
                    xs, means, width, yerr=errors, label=label, color=colour, capsize=2, edgecolor="white",
                    linewidth=0.5
                )
        ax.set_xticks(range(len(panels)))
        questions = {key: max((int(r.get("n_samples") or 0) for r in panels[key]), default=0) for key in panels}
        ax.set_xticklabels([f"{_pair_label(pair, task)}\nn = {questions[(pair, task)]}" for pair, task in panels],
                           rotation=0, fontsize=8)
        ax.set_ylabel(pretty_metric(_metric_label(rows)))
        ax.set_ylim(bottom=0)
        ax.grid(axis="x", visible=False)
        ax.set_title("Receiver vs sender vs full KV reuse (95% bootstrap intervals)")
        unique_legend(fig, [ax], ncols=3)
        return save_figure(fig, out_dir, stem)


# ---- Fig. 14: quality vs prefill cost --------------------------------------------------------------------
def _draw_intervals(ax, groups, x: str, scale: float, colour: str) -> None:
    """The intervals the tables quote, on points that are one row each: the quality's bootstrap 95% CI over
    questions (vertical) and, on a speedup axis, the smallest-to-largest timed ratio (horizontal)."""
    for px, py, rows in groups:
        if len(rows) != 1:
            continue
        row = rows[0]
        low, high = bootstrap_interval(row["per_sample"]) if row.get("per_sample") else (py, py)
        spread = row.get("speedup_spread") if x == "speedup" else None
        left, right = (scale * spread[0], scale * spread[1]) if spread else (px, px)
        if (low, high, left, right) != (py, py, px, px):
            ax.errorbar([px], [py], yerr=[[py - low], [high - py]], xerr=[[px - left], [right - px]], fmt="none",
                        ecolor=colour, elinewidth=0.7, capsize=1.5, alpha=0.6)


def plot_quality_vs_cost(
    rows: Iterable[Mapping],
    out_dir: str | os.PathLike,
    *,
    x: str = "prefill_seconds",
    stem: str = "fig14_quality_vs_cost",
    withheld: Collection[tuple[str, str, str]] = frozenset(),
) -> list[Path]:
    """Fig. 14: quality vs prefill cost for ours (recompute / profile), full prefill, full reuse, CacheBlend.

    Rows with method ``hybrid`` (layer groups + CacheBlend-style token recompute, beyond the paper) are drawn
    too when present. Each family of plans is a scatter with its Pareto frontier (best quality at that cost).

    One panel per (pair, task); ``x`` is a numeric row field (prefill_seconds, recomputed_fraction, speedup,
    bytes_loaded). A plan in ``withheld`` (pair, task, plan: heldout.withheld_plans, the plans the tables do not show
    within their target) is drawn hollow. Repeated (method, plan) rows (seeds) are averaged; recompute and CacheBlend
    points are joined in order of cost.
    """
    methods = ["recompute", "profile", "hybrid", "full_prefill", "full_reuse", "cacheblend"]
    rows = [r for r in eval_rows(rows) if r.get("method") in methods and isinstance(r.get(x), (int, float))]
    if not rows:
        raise FigureDataError(f"quality vs cost needs eval rows of {methods} with a numeric {x!r}")
    panels = _panels(rows)
    x_label, scale = AXIS_LABELS.get(x, x), 1.0
    if x == "prefill_seconds" and max(float(r[x]) for r in rows) < 1.0:
        x_label, scale = "Prefill time (ms)", 1000.0
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(panels), panel_size=(3.4, 2.7))
        for ax, (key, panel_rows) in zip(axes, panels.items()):
            grouped: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
            for r in panel_rows:
                grouped[(r["method"], str(r.get("plan")))].append(r)
            for method in methods:
                groups = sorted(((scale * _mean_std([float(r[x]) for r in g])[0],
                                  _mean_std([float(r["quality"]) for r in g])[0], g)
                                 for (m, _), g in grouped.items() if m == method), key=lambda t: t[:2])
                pts = [(px, py) for px, py, _ in groups]
                if not pts:
                    continue
                label, colour, marker = METHOD_STYLE[method]
                _draw_intervals(ax, groups, x, scale, colour)
                if method == "cacheblend":  # named by the layer(s) its tokens are ranked at
                    layers = sorted({int(plan.partition("@")[2] or 0) for (m, plan) in grouped if m == method})
                    label = f"CacheBlend, check layer{'s' if len(layers) > 1 else ''} " + ", ".join(map(str, layers))
                shown = [(*key, g[0].get("resolved_plan") or g[0]["plan"]) not in withheld for _, _, g in groups]
                for within, fill, name in ((True, colour, label), (False, "none", f"{label}, not shown within its "
                                                                                  "target (its speedup not quoted)")):
                    drawn = [p for p, s in zip(pts, shown) if s is within]
                    if drawn:
                        ax.plot([p[0] for p in drawn], [p[1] for p in drawn], ls="none", marker=marker,
                                ms=7 if method == "profile" else 4.5, color=colour, markerfacecolor=fill,
                                label=name, alpha=0.85)
                if method in ("recompute", "cacheblend", "hybrid") and len(pts) > 1:
                    front = _envelope(pts, higher_x_is_better=x == "speedup")
                    ax.plot([p[0] for p in front], [p[1] for p in front], lw=1, color=colour, drawstyle="steps-post"
                            if x != "speedup" else "steps-pre", label=f"{label.split(' (')[0]}: Pareto frontier")
            ax.set_xlabel(x_label)
            if x == "speedup":  # 1-7x and 100x+ on one axis: only a log scale shows both
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_ylabel(pretty_metric(_metric_label(panel_rows)))
            ax.set_title(f"{key[0]} · {key[1]}")
        unique_legend(fig, axes, ncols=3)
        return save_figure(fig, out_dir, stem)
