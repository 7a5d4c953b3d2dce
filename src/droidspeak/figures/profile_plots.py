"""Figs. 7, 8, 10, 11, 17 (layer sensitivity, input spread, transitions, Pareto, transfer) from profile JSON files."""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from droidspeak.figures.style import (
    CYCLE,
    OKABE_ITO,
    STYLE,
    FigureDataError,
    new_figure,
    pretty_metric,
    save_figure,
    unique_legend,
)
from droidspeak.profile.candidates import recomputes_all
from droidspeak.profile.choice import choose_point, quality_target
from droidspeak.profile.profile_file import Profile, load_profile
from droidspeak.profile.ranks import frontier_difference, frontier_step
from droidspeak.profile.sensitivity import critical_layers


# ---- inputs ----------------------------------------------------------------------------------------------
def as_profiles(profiles: Profile | Mapping | str | os.PathLike | Iterable) -> list[Profile]:
    """Profiles from Profile objects, profile JSON dicts or file paths (one or a list)."""
    if isinstance(profiles, (Profile, Mapping, str, os.PathLike)):
        profiles = [profiles]
    out = []
    for p in profiles:
        if isinstance(p, Profile):
            out.append(p)
        elif isinstance(p, Mapping):
            out.append(Profile.from_dict(p))
        else:
            out.append(load_profile(p))
    if not out:
        raise FigureDataError("no profiles given")
    return out


# ---- Fig. 7: single-layer sensitivity ---------------------------------------------------------------------
def plot_layer_sensitivity(
    profiles, out_dir: str | os.PathLike, *, threshold: float = 0.10, stem: str = "fig07_layer_sensitivity",
    layer_types: Sequence[str] | None = None,
) -> list[Path]:
    """Fig. 7: relative quality drop when only one layer's K/V is reused, per layer; critical layers highlighted.

    Needs each profile's ``single_layer`` table and ``reference_quality``. Where ``layer_types`` (the model config's,
    one per layer) holds more than one kind, the layers of the rarer kind (Gemma 3's global attention among its
    sliding-window layers) are marked under the axis.
    """
    profiles = [p for p in as_profiles(profiles) if p.single_layer]
    if not profiles:
        raise FigureDataError("layer sensitivity needs profiles with a single_layer table")
    kinds = Counter(layer_types or [])
    marked, rare, common = [], "", ""
    if len(kinds) > 1:
        (common, _), *_, (rare, _) = kinds.most_common()
        marked = [layer for layer, kind in enumerate(layer_types) if kind == rare]
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(profiles), panel_size=(3.6, 2.4), max_cols=2)
        for ax, prof in zip(axes, profiles):
            table = prof.single_layer_table
            layers = sorted(table)
            ref = prof.reference_quality
            drops = [100 * (ref - table[layer]) / abs(ref) if ref else 0.0 for layer in layers]
            crit = set(critical_layers(table, ref, threshold))
            colours = [OKABE_ITO["vermillion"] if layer in crit else OKABE_ITO["sky"] for layer in layers]
            ax.bar(layers, drops, 0.8, color=colours)
            ax.axhline(100 * threshold, color=OKABE_ITO["black"], ls="--", lw=0.8)
            ax.set_xlabel("Reused layer (all others recomputed)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"Relative {pretty_metric(prof.metric)} drop (%)")
            ax.set_title(f"{prof.pair} · {prof.task} (n = {prof.n_samples})")
            ax.grid(axis="x", visible=False)
            if marked:
                ax.plot(marked, [0.0] * len(marked), ls="none", marker="^", ms=5, color=OKABE_ITO["black"],
                        transform=ax.get_xaxis_transform(), clip_on=False)
        handles = [
            Patch(color=OKABE_ITO["vermillion"], label=f"critical (> {100 * threshold:g}% drop)"),
            Patch(color=OKABE_ITO["sky"], label="not critical"),
        ]
        if marked:
            handles.append(Line2D([], [], ls="none", marker="^", ms=5, color=OKABE_ITO["black"],
                                  label=f"{rare.replace('_', ' ')} layer (the others: {common.replace('_', ' ')})"))
        fig.legend(handles=handles, loc="outside lower center", frameon=False, ncols=len(handles))
        return save_figure(fig, out_dir, stem)


# ---- Fig. 8: per-input spread -----------------------------------------------------------------------------
def plot_input_spread(profiles, out_dir: str | os.PathLike, *, stem: str = "fig08_input_spread") -> list[Path]:
    """Fig. 8: spread across inputs of the single-layer sensitivity (box per reused layer).

    Needs ``per_input`` in each profile's single_layer entries; with ``reference_per_input`` the boxes show
    each input's quality change from the receiver's own (full-prefill) answer, else the raw per-input quality.
    """
    profiles = [p for p in as_profiles(profiles) if any(s.per_input for s in p.single_layer)]
    if not profiles:
        raise FigureDataError("input spread needs profiles whose single_layer entries carry per_input values")
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(profiles), panel_size=(3.6, 2.4), max_cols=2)
        for ax, prof in zip(axes, profiles):
            entries = sorted((s for s in prof.single_layer if s.per_input), key=lambda s: s.layer)
            ref = prof.reference_per_input
            data = [[q - r for q, r in zip(s.per_input, ref)] if ref else list(s.per_input) for s in entries]
            crit = set(prof.critical_layers())
            boxes = ax.boxplot(
                data,
                positions=[s.layer for s in entries],
                widths=0.6,
                patch_artist=True,
                showfliers=True,
                flierprops={"markersize": 2, "alpha": 0.5},
                medianprops={"color": OKABE_ITO["black"], "lw": 0.8},
            )
            for patch, s in zip(boxes["boxes"], entries):
                patch.set_facecolor(OKABE_ITO["vermillion"] if s.layer in crit else OKABE_ITO["sky"])
                patch.set_linewidth(0.5)
            metric = pretty_metric(prof.metric)
            if ref:
                ax.axhline(0, color=OKABE_ITO["black"], lw=0.6)
                ax.set_ylabel(f"{metric} change per input")
            else:
                ax.axhline(prof.reference_quality, color=OKABE_ITO["black"], ls="--", lw=0.8)
                ax.set_ylabel(f"{metric} per input")
            ax.set_xlabel("Reused layer (all others recomputed)")
            ax.set_title(f"{prof.pair} · {prof.task} (n={len(entries[0].per_input)})")
            ax.grid(axis="x", visible=False)
            step = max(1, len(entries) // 12)
            ax.set_xticks([s.layer for s in entries][::step])
            ax.set_xticklabels([str(s.layer) for s in entries][::step])
        return save_figure(fig, out_dir, stem)


# ---- Fig. 10: transitions -------------------------------------------------------------------------------
def transition_strata(prof: Profile) -> tuple[int, dict[str, dict[int, list[float]]]]:
    """(k, {stratum label: {transitions: [relative loss % of each plan]}}) for the profile's transition study.

    k is the recomputed-layer count the study holds fixed (the one with the most plans). Plans that recompute
    every critical layer form one stratum and the rest another, so a transition effect can be read within a
    stratum instead of being confounded with which layers a plan recomputes.
    """
    source = [p for p in (prof.transitions or prof.points) if p.transitions is not None
              and p.plan not in ("full_prefill", "full_reuse")]
    counts = defaultdict(set)
    for p in source:
        counts[p.recomputed_layers].add(p.transitions)
    studied = [k for k, ts in counts.items() if len(ts) >= 2]
    if not studied:
        return 0, {}
    k = max(studied, key=lambda n: (sum(p.recomputed_layers == n for p in source), n))
    critical = set(prof.critical_layers()) if prof.single_layer else set()
    ref = prof.reference_quality
    strata: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in source:
        if p.recomputed_layers != k:
            continue
        holds = bool(critical) and recomputes_all(p.plan, critical, prof.num_layers)
        label = (f"recomputes critical {_layer_list(critical)}" if holds else
                 "misses a critical layer" if critical else "all layouts")
        strata[label][p.transitions].append(100 * (ref - p.quality) / abs(ref) if ref else 0.0)
    return k, {label: dict(by_t) for label, by_t in sorted(strata.items())}


def _layer_list(layers: Iterable[int]) -> str:
    return "{" + ",".join(str(layer) for layer in sorted(layers)) + "}"


def plot_transitions(profiles, out_dir: str | os.PathLike, *, stem: str = "fig10_transitions") -> list[Path]:
    """Fig. 10: relative quality loss vs number of transitions at a fixed number of recomputed layers.

    Every plan of the profile's transition study is a dot (jittered); lines join each stratum's mean per count.
    Strata: plans that recompute all critical layers, and the others (see :func:`transition_strata`).
    """
    studies = [(prof, *transition_strata(prof)) for prof in as_profiles(profiles)]
    studies = [s for s in studies if s[2]]
    if not studies:
        raise FigureDataError("transitions need points at one recomputed-layer count with 2+ transition counts")
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(studies), panel_size=(3.4, 2.7))
        for ax, (prof, k, strata) in zip(axes, studies):
            for idx, (label, by_t) in enumerate(strata.items()):
                colour = CYCLE[idx % len(CYCLE)]
                offset = 0.12 * (idx - (len(strata) - 1) / 2)
                for t, losses in by_t.items():
                    jitter = [offset + 0.05 * ((i * 0.618) % 1 - 0.5) for i in range(len(losses))]
                    ax.scatter([t + j for j in jitter], losses, s=9, alpha=0.45, color=colour, linewidths=0)
                ts = sorted(by_t)
                ax.plot([t + offset for t in ts], [sum(by_t[t]) / len(by_t[t]) for t in ts], marker="o", ms=4,
                        color=colour, label=f"{label} (mean)")
            ax.set_xlabel("Transitions (groups loading the sender's E)")
            ax.set_ylabel(f"Relative {pretty_metric(prof.metric)} loss (%)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{prof.pair} · {prof.task} · {k}/{prof.num_layers} layers")
            ax.legend(frameon=False, fontsize=7)
        return save_figure(fig, out_dir, stem)


# ---- Fig. 11: profiling Pareto ---------------------------------------------------------------------------
def plot_profile_pareto(
    profiles, out_dir: str | os.PathLike, *, tolerance: float = 0.05, stem: str = "fig11_profile_pareto"
) -> list[Path]:
    """Fig. 11: every profiled plan (quality vs recomputed layers), the Pareto frontier, and the chosen plan.

    Points are coloured by transitions (0–1: one group; 2+: several); the dashed line is the receiver's own
    quality, the dotted one the (1 - tolerance) target, the star the plan ``profile:...@tolerance`` serves.
    """
    profiles = as_profiles(profiles)
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(profiles), panel_size=(3.4, 2.7))
        for ax, prof in zip(axes, profiles):
            single = [p for p in prof.points if (p.transitions or 0) <= 1]
            multi = [p for p in prof.points if (p.transitions or 0) >= 2]
            ax.scatter([p.recomputed_layers for p in single], [p.quality for p in single], s=12, alpha=0.6,
                       color=OKABE_ITO["sky"], label="profiled plan (one group)", linewidths=0)
            if multi:
                ax.scatter([p.recomputed_layers for p in multi], [p.quality for p in multi], s=16, alpha=0.6,
                           color=OKABE_ITO["orange"], marker="^", label="profiled plan (2+ groups)", linewidths=0)
            front = prof.frontier
            ax.step([p.recomputed_layers for p in front], [p.quality for p in front], where="post",
                    color=OKABE_ITO["blue"], lw=1.2, label="Pareto frontier")
            ax.axhline(
                prof.reference_quality, color=OKABE_ITO["black"], ls="--", lw=0.8, label="receiver (full prefill)"
            )
            ax.axhline(quality_target(prof.reference_quality, tolerance), color=OKABE_ITO["black"], ls=":", lw=0.8,
                       label=f"target ({100 * tolerance:g}% tolerance)")
            chosen = choose_point(prof, tolerance=tolerance, rule=prof.rule())
            if chosen is not None:
                ax.scatter([chosen.recomputed_layers], [chosen.quality], marker="*", s=90, zorder=5,
                           color=OKABE_ITO["vermillion"], label="chosen plan")
                ax.annotate(chosen.plan, (chosen.recomputed_layers, chosen.quality), xytext=(4, -10),
                            textcoords="offset points", fontsize=7)
            ax.set_xlabel("Recomputed layers")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(pretty_metric(prof.metric))
            ax.set_xlim(-0.5, prof.num_layers + 0.5)
            ax.set_title(f"{prof.pair} · {prof.task} (n = {prof.n_samples})")
        unique_legend(fig, axes, ncols=3)
        return save_figure(fig, out_dir, stem)


# ---- Fig. 17: cross-dataset profile transfer -----------------------------------------------------------
def plot_profile_transfer(profiles, out_dir: str | os.PathLike, *, stem: str = "fig17_profile_transfer") -> list[Path]:
    """Fig. 17: one pair's frontiers profiled on different tasks, normalised to each task's receiver quality.

    One panel per pair with 2+ tasks; each panel notes the largest and mean gap (percentage points) between
    the first task's frontier and every other (the paper reports ≤4 points, 2 on average).
    """
    by_pair: dict[str, list[Profile]] = defaultdict(list)
    for prof in as_profiles(profiles):
        by_pair[prof.pair].append(prof)
    groups = {pair: sorted(ps, key=lambda p: p.task) for pair, ps in sorted(by_pair.items()) if len(ps) >= 2}
    if not groups:
        raise FigureDataError("profile transfer needs one pair profiled on two or more tasks")
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(groups), panel_size=(3.4, 2.7))
        for ax, (pair, profs) in zip(axes, groups.items()):
            base = profs[0]
            for idx, prof in enumerate(profs):
                step = frontier_step(prof.frontier, prof.num_layers)
                ref = prof.reference_quality
                ys = [100 * q / ref if ref else math.nan for q in step]
                label = f"{prof.task} (baseline)"
                if idx:
                    gap = frontier_difference(base.frontier, prof.frontier, prof.num_layers,
                                              reference_a=base.reference_quality, reference_b=ref)
                    label = f"{prof.task} (gap max {100 * gap['max']:.1f}, mean {100 * gap['mean']:.1f} pts)"
                ax.step(range(prof.num_layers + 1), ys, where="post", color=CYCLE[idx % len(CYCLE)], lw=1.2,
                        label=label)
            ax.axhline(100, color=OKABE_ITO["black"], ls="--", lw=0.8)
            ax.set_xlabel("Recomputed layers")
            ax.set_ylabel("Quality (% of receiver's own)")
            ax.set_title(pair)
            ax.legend(frameon=False, title="profiled on", loc="center right", fontsize=7)
        return save_figure(fig, out_dir, stem)
