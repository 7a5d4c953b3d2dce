"""The activated-LoRA page (reports/smollm2_alora/): retrain the adapter as an aLoRA, or keep the LoRA and recompute
a few layers?

Reads two files beside the page: ``rows/results.jsonl`` (the sweep's ResultRow rows, conf/experiment/smollm2_alora.yaml:
both receivers from each sender's cache under full prefill, full reuse and the LoRA's DroidSpeak plan, on the test
split) and ``training.json`` (both adapters' recipes and losses, and the aLoRA's check against peft's own forward,
copied from the family report by experiments/alora_page.py). Every interval is a percentile bootstrap over questions;
every difference is paired (the same questions for both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from droidspeak.figures.heldout import speedup_cell
from droidspeak.figures.intervals import (
    bootstrap_interval,
    interval_text,
    paired_delta,
    paired_test_text,
    speedup_text,
    timing_fields,
    timing_text,
)
from droidspeak.figures.style import OKABE_ITO, FigureDataError, new_figure, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.profile.choice import quality_target
from droidspeak.track.records import read_results

RECEIVERS = {"lora": ("LoRA", OKABE_ITO["blue"], "o"), "alora": ("aLoRA", OKABE_ITO["orange"], "s")}
METHODS = ("full_prefill", "full_reuse", "recompute")


def _entry(row: Mapping, reference: Sequence[float]) -> dict:
    return {"method": row["method"], "plan": row.get("resolved_plan") or row["plan"], "quality": row["quality"],
            "ci": list(bootstrap_interval(row["per_sample"])), "n": row["n_samples"],
            "recomputed_fraction": row["recomputed_fraction"], **timing_fields(row),
            "invocation": row.get("receiver_invocation"), **paired_delta(row["per_sample"], reference)}


def alora_summary(rows: Sequence[Mapping], comparisons: Mapping[str, Mapping[str, str]]) -> list[dict]:
    """Per sender: both receivers under every method (quality, CI, paired Δ vs the LoRA's own full prefill), the
    aLoRA's full reuse against its own full prefill question by question, and against the LoRA's DroidSpeak plan."""
    by_point = {(r["pair"], r["method"]): r for r in rows if r.get("split", "test") == "test"}
    summary = []
    for sender, pairs in comparisons.items():
        missing = [(pairs[k], m) for k in RECEIVERS for m in METHODS if (pairs[k], m) not in by_point]
        if missing:
            raise FigureDataError(f"the aLoRA page needs every (pair, method) of the sweep; missing {missing}")
        point = lambda kind, method: by_point[(pairs[kind], method)]  # noqa: E731
        reference = point("lora", "full_prefill")["per_sample"]
        entries = {kind: [_entry(point(kind, m), reference) for m in METHODS] for kind in RECEIVERS}
        alora_own, alora_reuse = (
            point("alora", "full_prefill")["per_sample"],
            point("alora", "full_reuse")["per_sample"],
        )
        summary.append({
            "sender": sender, "pairs": dict(pairs), "metric": point("lora", "full_prefill")["metric"],
            "task": point("lora", "full_prefill")["task"], "entries": entries,
            "alora_reuse_changed_questions": sum(a != b for a, b in zip(alora_own, alora_reuse)),
            "alora_reuse_vs_own_prefill": paired_delta(alora_reuse, alora_own),
            "alora_reuse_vs_lora_plan": paired_delta(alora_reuse, point("lora", "recompute")["per_sample"]),
        })
    return summary


def plot_alora(summary: Sequence[Mapping], out_dir: Path) -> list[Path]:
    """Test quality against the fraction of layers the receiver recomputes, one panel per sender."""
    fig, axes = new_figure(len(summary), panel_size=(3.6, 2.7), max_cols=2)
    for ax, part in zip(axes, summary):
        for kind, (label, colour, marker) in RECEIVERS.items():
            points = sorted(((1.0 if e["method"] == "full_prefill" else e["recomputed_fraction"]), e)
                            for e in part["entries"][kind])
            ax.errorbar(
                [x for x, _ in points],
                [e["quality"] for _, e in points],
                yerr=[[e["quality"] - e["ci"][0] for _, e in points], [e["ci"][1] - e["quality"] for _, e in points]],
                color=colour,
                marker=marker,
                capsize=2,
                linewidth=1,
                label=label,
            )
        ax.set_title(f"from the {part['sender']}'s cache", fontsize=9)
        ax.set_xlabel("fraction of layers recomputed")
        ax.set_ylabel(f"test {part['metric']}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", frameon=False, ncol=len(labels))
    return save_figure(fig, out_dir, "fig_alora")


def _delta(d: Mapping) -> str:
    return f"{d['delta']:+.3f} {interval_text(d['delta_ci'])}"


def _verdict(d: Mapping) -> str:
    """What the paired test says: higher or lower only where the difference is significant (heldout.paired_delta)."""
    if d["significant"]:
        return ("higher" if d["delta"] > 0 else "lower") + f", significant ({paired_test_text(d).split(',')[0]})"
    return f"not significant ({paired_test_text(d).split(',')[0]}): these questions cannot tell them apart"


def _method(e: Mapping) -> str:
    return {"full_prefill": "full prefill", "full_reuse": "full reuse"}.get(e["method"], f"`{e['plan']}`")


def alora_markdown(summary: Sequence[Mapping], training: Mapping, *, command: str, tolerance: float,
                   template: str | Path) -> str:
    """The page: ``template``'s prose (conf/pages/alora.md.j2) over the numbers of ``summary`` and ``training``."""
    rows = []
    for part in summary:
        for kind, (label, _, _) in RECEIVERS.items():
            for e in part["entries"][kind]:
                rows.append([part["sender"], label, _method(e), f"{e['quality']:.3f} {interval_text(e['ci'])}",
                             "–" if kind == "lora" and e["method"] == "full_prefill" else _delta(e),
                             f"{(1.0 if e['method'] == 'full_prefill' else e['recomputed_fraction']):.2f}",
                             speedup_cell(e)])
    heldout_table = table(["sender's cache", "receiver", "plan", f"test {summary[0]['metric']} [95% CI]",
                           "Δ vs LoRA full prefill [paired 95% CI]", "layers recomputed", "speed-up"], rows)
    by_method = lambda part, kind: {e["method"]: e for e in part["entries"][kind]}  # noqa: E731
    base = summary[0]
    base_lora = by_method(base, "lora")
    reference = base_lora["full_prefill"]["quality"]
    context = {
        "command": command, "tolerance": tolerance, "lora": training["lora"], "alora": training["alora"],
        "recipe": training["alora"]["recipe"], "oracle": training["alora"]["oracle"],
        "losses": list(zip(training["lora"]["curve"], training["alora"]["curve"])),
        "task": base["task"], "n": base_lora["full_prefill"]["n"], "heldout_table": "\n".join(heldout_table),
        "base": base, "base_lora": base_lora, "base_alora": by_method(base, "alora"),
        "own": by_method(base, "alora")["full_prefill"], "plan": base_lora["recompute"],
        "floor": quality_target(reference, tolerance) - reference,
        "others": [(part, by_method(part, "alora")) for part in summary[1:]],
        "timing": timing_text(*base_lora["full_prefill"]["timed"]),
    }
    return render_page(template, context, {"delta": _delta, "verdict": _verdict, "method": _method,
                                           "speedup": lambda e: speedup_text(e["speedup"], e["speedup_spread"])})


def write_alora_page(out_dir: str | Path, comparisons: Mapping[str, Mapping[str, str]], *, command: str,
                     tolerance: float, template: str | Path) -> Path:
    out = Path(out_dir)
    summary = alora_summary([row.to_dict() for row in read_results(out / "rows" / "results.jsonl")], comparisons)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_alora(summary, out)
    page = out / "README.md"
    page.write_text(alora_markdown(summary, json.loads((out / "training.json").read_text()), command=command,
                                   tolerance=tolerance, template=template))
    return page
