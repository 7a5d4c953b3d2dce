"""The compressed-transfer page: each pair's plans with K/V and E sent through each codec, on the same axes — test-split
quality against bytes sent and against TTFT at chosen link rates — and what the bandwidth-adaptive planner picks.

Quality rows come from the sweep (``method.codec``; profile and test splits), times and exact bytes per context from
``experiments/bench_transfer.py``. TTFT is the planner's latency model (droidspeak.serve.planner): E bytes / link +
max(plan compute, K/V bytes / link) + codec decode + query and first token, each term measured on this machine.

The planner chooses by the profile split only: an option (plan × codec) is admissible when its profile-split quality,
relative to the receiver's, is within ``tolerance`` of the lossless accepted plan's; of those (and the receiver's own
full prefill) it takes the lowest TTFT at each link rate. Its choice is then reported on the test split.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, ScalarFormatter

from droidspeak.bench.codec_cost import latency_model
from droidspeak.figures.intervals import bootstrap_interval, interval_text, paired_delta, speedup_text, timing_text
from droidspeak.figures.result_plots import eval_rows
from droidspeak.figures.style import OKABE_ITO, FigureDataError, new_figure, pretty_metric, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.serve.planner import AdaptivePlanner

CODEC_ORDER = ("lossless", "bf16", "int8", "int4")
MARKERS = ("o", "s", "^", "D")


def _ci(scores):
    return list(bootstrap_interval(scores)) if scores else None


def _by_point(rows: Sequence[Mapping]) -> dict[tuple[str, str, str, str], Mapping]:
    """(pair, split, plan, codec) -> row; the receiver's own prefill is plan ``full_prefill``."""
    points = {}
    for row in eval_rows(rows):
        if row["method"] == "sender":
            continue
        plan = row.get("resolved_plan") or row["plan"]
        points[(row["pair"], row["split"], plan, row.get("codec") or "lossless")] = row
    return points


def _by_context(timing: Sequence[Mapping]) -> list[list[Mapping]]:
    """A pair's timing rows per timed context (rows written before ``context_index``: one context)."""
    groups: dict[int, list[Mapping]] = defaultdict(list)
    for row in timing:
        groups[row.get("context_index", 0)].append(row)
    return [groups[index] for index in sorted(groups)]


def _typical(by_context: list[list[Mapping]]) -> list[Mapping]:
    """One row per (plan, codec) whose every measured number is its median over the timed contexts."""
    if len(by_context) == 1:
        return by_context[0]
    keyed: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for rows in by_context:
        for row in rows:
            keyed[(row["plan"], row["codec"])].append(row)
    numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    typical = [{k: statistics.median(r[k] for r in rows) if numeric(v) else v for k, v in rows[0].items()}
               for rows in keyed.values()]
    return [{**row, "context_tokens": int(round(row["context_tokens"]))} for row in typical]


def transfer_summary(rows: Sequence[Mapping], timing: Sequence[Mapping], chosen: Mapping[str, str], *,
                     links_gbit: Sequence[float] = (1, 10, 100), tolerance: float = 0.05) -> list[dict]:
    """Per pair: every (plan, codec) on the test split with its bytes and modelled TTFT, and the planner's choices."""
    points = _by_point(rows)
    summary = []
    for pair, accepted in chosen.items():
        receiver = {split: points.get((pair, split, "full_prefill", "lossless")) for split in ("profile", "test")}
        pair_timing = [t for t in timing if t["pair"] == pair]
        if not all(receiver.values()) or not pair_timing:
            raise FigureDataError(f"{pair}: the transfer page needs the receiver's rows on both splits and timing rows")
        relative = {(t["plan"], t["codec"]): points[(pair, "profile", t["plan"], t["codec"])]["quality"]
                    / receiver["profile"]["quality"] for t in pair_timing
                    if (pair, "profile", t["plan"], t["codec"]) in points}
        by_context = _by_context(pair_timing)
        typical = _typical(by_context)
        latency, options = latency_model(typical, relative)
        tokens = typical[0]["context_tokens"]
        per_context = [(latency_model(rows, relative)[0], rows[0]["context_tokens"]) for rows in by_context]
        ttft = {
            o.name: {str(g): latency.prefill_seconds(o.name, 1, tokens, g / 8) for g in links_gbit} for o in options
        }
        test_of = lambda o: points.get((pair, "test", o.plan, o.codec))  # noqa: E731
        reference = receiver["test"].get("per_sample")
        entries = [{"plan": "full_prefill", "codec": "lossless", "bytes_per_token": 0.0,
                    "quality": receiver["test"]["quality"], "ci": _ci(reference), "delta": 0.0, "delta_ci": [0.0, 0.0],
                    "vs_lossless": None, "profile_relative": 1.0, "ttft": ttft["full_prefill"]}]
        for option in options[1:]:
            row, lossless = test_of(option), points.get((pair, "test", option.plan, "lossless"))
            if row is None:
                continue
            scores = row.get("per_sample")
            entries.append(
                {
                    "plan": option.plan,
                    "codec": option.codec,
                    "bytes_per_token": row["transfer_bytes"] / row["cost"]["context_tokens"],
                    "quality": row["quality"],
                    "ci": _ci(scores),
                    **paired_delta(scores, reference),
                    "vs_lossless": None
                    if option.codec == "lossless"
                    else paired_delta(scores, lossless and lossless.get("per_sample")),
                    "profile_relative": option.quality,
                    "ttft": ttft[option.name],
                }
            )
        floor = relative[(accepted, "lossless")] - tolerance
        choose = lambda opts, g: AdaptivePlanner(latency, opts, min_quality=floor, slo_ttft=float("inf")).choose(  # noqa: E731
            batch=1, tokens=tokens, queued=1, waited=0.0, bandwidth_gbps=g / 8)
        lossless_options = [o for o in options if o.codec == "lossless"]
        named = {o.name: o for o in options}
        planner = []
        for g in links_gbit:
            pick, plain = named[choose(options, g)], named[choose(lossless_options, g)]
            gains = [model.prefill_seconds(plain.name, 1, n, g / 8) / model.prefill_seconds(pick.name, 1, n, g / 8)
                     for model, n in per_context]  # the choice made on the median timings, timed per context
            planner.append({"gbit": g, "choice": pick.name, "ttft": ttft[pick.name][str(g)],
                            "gain": statistics.median(gains),
                            "gain_range": [min(gains), max(gains)] if len(gains) > 1 else None,
                            "quality": (test_of(pick) or {}).get("quality"),
                            "vs_accepted": paired_delta((test_of(pick) or {}).get("per_sample"),
                                                  (test_of(plain) or {}).get("per_sample")),
                            "lossless_choice": plain.name, "lossless_ttft": ttft[plain.name][str(g)],
                            "lossless_quality": (test_of(plain) or {}).get("quality")})
        summary.append({"pair": pair, "task": receiver["test"]["task"], "metric": receiver["test"]["metric"],
                        "n": receiver["test"]["n_samples"], "accepted": accepted, "floor": floor, "tokens": tokens,
                        "threads": pair_timing[0]["threads"], "repeats": pair_timing[0]["repeats"],
                        "timed_contexts": len(by_context),
                        "entries": entries, "planner": planner})
    return summary


# ---- figure -------------------------------------------------------------------------------------------------
ROLE_COLOURS = {"receiver (full prefill)": OKABE_ITO["black"], "the profile's plan": OKABE_ITO["blue"],
                "full KV reuse": OKABE_ITO["orange"]}


def _role(plan: str) -> str:
    return {"full_prefill": "receiver (full prefill)", "full_reuse": "full KV reuse"}.get(plan, "the profile's plan")


def plot_transfer(summary: Sequence[Mapping], out_dir: str | Path, links_gbit: Sequence[float]) -> list[Path]:
    """Per pair, test-split quality against bytes sent per context token, then against TTFT at each link rate;
    colour is the plan (the profile's, full reuse, the receiver), the marker the codec (hollow: lossless)."""
    panels = len(links_gbit) + 1
    fig, axes = new_figure(panels * len(summary), max_cols=panels, panel_size=(2.7, 2.3))
    for p, pair in enumerate(summary):
        for i, ax in enumerate(axes[p * panels : (p + 1) * panels]):
            for e in pair["entries"]:
                colour = ROLE_COLOURS[_role(e["plan"])]
                if i == 0 and e["plan"] == "full_prefill":  # it sends nothing: a line at its quality
                    ax.axhline(e["quality"], color=colour, lw=0.8, ls="--")
                    continue
                x = e["bytes_per_token"] / 1e3 if i == 0 else e["ttft"][str(links_gbit[i - 1])]
                low, high = e["ci"] or (e["quality"], e["quality"])
                ax.errorbar([x], [e["quality"]], yerr=[[e["quality"] - low], [high - e["quality"]]], fmt="none",
                            ecolor=colour, elinewidth=0.6, alpha=0.5)
                ax.plot([x], [e["quality"]], MARKERS[CODEC_ORDER.index(e["codec"])], color=colour, ms=5,
                        mfc="white" if e["codec"] == "lossless" else colour)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("KB sent per context token" if i == 0 else f"modelled TTFT (s), {links_gbit[i - 1]:g} Gb/s")
            if i == 0:
                ax.set_ylabel(f"{pretty_metric(pair['metric'])} (test)")
                ax.set_title(f"{pair['pair']} ({pair['accepted']})", loc="left")
    handles = [Line2D([], [], color=c, marker="o", ls="none", label=role) for role, c in ROLE_COLOURS.items()]
    handles += [Line2D([], [], color="grey", marker=m, ls="none", mfc="white" if codec == "lossless" else "grey",
                       label=codec) for codec, m in zip(CODEC_ORDER, MARKERS)]
    fig.legend(handles=handles, loc="outside lower center", frameon=False, ncol=len(handles))
    return save_figure(fig, out_dir, "fig_transfer_codecs")


# ---- page ---------------------------------------------------------------------------------------------------
def _pair_tables(pair: Mapping, links_gbit: Sequence[float]) -> dict:
    """One pair's facts and its two tables (every plan × codec; the planner's choice per link rate)."""
    links = [str(g) for g in links_gbit]
    signed = functools.partial(interval_text, signed=True)
    rows = []
    for e in pair["entries"]:
        vs = e["vs_lossless"] or {}
        rows.append([f"`{e['plan']}`", e["codec"], f"{e['bytes_per_token'] / 1e3:.1f}", f"{e['quality']:.3f}",
                     interval_text(e["ci"]), f"{e['delta']:+.3f}",
                     "–" if vs.get("delta") is None else f"{vs['delta']:+.3f} {signed(vs['delta_ci'])}",
                     f"{e['profile_relative']:.3f}", *(f"{e['ttft'][g]:.2f}" for g in links)])
    codecs = table(["plan", "codec", "KB/token sent", "quality", "95% CI", "Δ vs receiver", "Δ vs same plan lossless "
                    "(paired 95% CI)", "profile split, rel. to receiver", *(f"TTFT {g} Gb/s (s)" for g in links)], rows)
    rows = []
    for p in pair["planner"]:
        vs = p["vs_accepted"]
        rows.append([f"{p['gbit']:g}", f"`{p['choice']}`", f"{p['ttft']:.2f}",
                     "–" if p["quality"] is None else f"{p['quality']:.3f}", f"`{p['lossless_choice']}`",
                     f"{p['lossless_ttft']:.2f}", speedup_text(p["gain"], p["gain_range"]),
                     "–" if vs["delta"] is None else f"{vs['delta']:+.3f} {signed(vs['delta_ci'])}"])
    planner = table(["Gb/s", "plan × codec chosen", "TTFT (s)", "test quality", "lossless-only choice", "its TTFT (s)",
                     "TTFT gain", "Δ quality vs lossless-only (paired 95% CI)"], rows)
    return {**{k: pair[k] for k in ("pair", "task", "metric", "n", "tokens", "floor", "accepted", "timed_contexts")},
            "table": "\n".join(codecs), "planner_table": "\n".join(planner)}


def _codec_findings(summary: Sequence[Mapping]) -> list[dict]:
    """Per lossy codec: how far test quality moved against the same plan sent lossless, and the worst point."""
    findings = []
    for codec in CODEC_ORDER[1:]:
        deltas = [
            (e["vs_lossless"]["delta"], e["vs_lossless"]["delta_ci"], p["pair"], e["plan"])
            for p in summary
            for e in p["entries"]
            if e["codec"] == codec and e["vs_lossless"] and e["vs_lossless"]["delta"] is not None
        ]
        if deltas:
            worst = min(deltas, key=lambda d: d[0])
            findings.append({"codec": codec, "low": min(d[0] for d in deltas), "high": max(d[0] for d in deltas),
                             "points": len(deltas), "worst_pair": worst[2], "worst_plan": worst[3],
                             "worst_ci": worst[1], "excludes": sum(1 for d in deltas if d[1][1] < 0)})
    return findings


def _link_findings(summary: Sequence[Mapping], links_gbit: Sequence[float]) -> list[dict]:
    """Per link rate: how often the planner sends a lossy codec, and its TTFT gain over the lossless-only one."""
    findings = []
    for g in links_gbit:
        gains = [p["gain"] for s in summary for p in s["planner"] if p["gbit"] == g]
        compressed = sum(1 for s in summary for p in s["planner"] if p["gbit"] == g and " " in p["choice"])
        findings.append({"gbit": g, "compressed": compressed, "pairs": len(gains), "low": min(gains),
                         "high": max(gains)})
    return findings


def transfer_markdown(summary: Sequence[Mapping], links_gbit: Sequence[float], *, command: str, tolerance: float,
                      template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/transfer.md.j2) over the numbers of ``summary``."""
    contexts = min(p["timed_contexts"] for p in summary)
    context = {"command": command, "tolerance": tolerance, "threads": summary[0]["threads"], "contexts": contexts,
               "timing": timing_text(contexts, min(p["repeats"] for p in summary), ranged=False),
               "codec_findings": _codec_findings(summary), "link_findings": _link_findings(summary, links_gbit),
               "pairs": [_pair_tables(pair, links_gbit) for pair in summary]}
    return render_page(template, context, {"ci": functools.partial(interval_text, signed=True)})


def write_transfer_page(results: Sequence[Mapping], timing: Sequence[Mapping], chosen: Mapping[str, str],
                        out_dir: str | Path, *, links_gbit: Sequence[float], tolerance: float, command: str,
                        template: str | Path) -> Path:
    out = Path(out_dir)
    summary = transfer_summary(results, timing, chosen, links_gbit=links_gbit, tolerance=tolerance)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_transfer(summary, out, links_gbit)
    page = out / "README.md"
    page.write_text(transfer_markdown(summary, links_gbit, command=command, tolerance=tolerance,
                                       template=template))
    return page
