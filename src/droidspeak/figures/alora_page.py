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

from droidspeak.figures.heldout import bootstrap_interval, interval_text, paired_delta
from droidspeak.figures.style import OKABE_ITO, FigureDataError, new_figure, save_figure
from droidspeak.markdown import table
from droidspeak.profile.choice import quality_target
from droidspeak.track.results import read_rows

RECEIVERS = {"lora": ("LoRA", OKABE_ITO["blue"], "o"), "alora": ("aLoRA", OKABE_ITO["orange"], "s")}
METHODS = ("full_prefill", "full_reuse", "recompute")


def _entry(row: Mapping, reference: Sequence[float]) -> dict:
    return {"method": row["method"], "plan": row.get("resolved_plan") or row["plan"], "quality": row["quality"],
            "ci": list(bootstrap_interval(row["per_sample"])), "n": row["n_samples"],
            "recomputed_fraction": row["recomputed_fraction"], "speedup": row.get("speedup"),
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
    """What a paired interval says at 95%: a difference, or none that these questions can tell."""
    low, high = d["delta_ci"]
    if low > 0 or high < 0:
        edge = low if low > 0 else high
        return ("higher" if low > 0 else "lower") + (
            f", only just (the interval ends at {edge:+.4f})" if abs(edge) < 0.01 else ""
        )
    return "not distinguishable on these questions"


def _method(e: Mapping) -> str:
    return {"full_prefill": "full prefill", "full_reuse": "full reuse"}.get(e["method"], f"`{e['plan']}`")


def _findings(summary: Sequence[Mapping], tolerance: float) -> list[str]:
    base, lines = summary[0], []
    lora = {e["method"]: e for e in base["entries"]["lora"]}
    alora = {e["method"]: e for e in base["entries"]["alora"]}
    n = lora["full_prefill"]["n"]
    floor = quality_target(lora["full_prefill"]["quality"], tolerance) - lora["full_prefill"]["quality"]
    plan, versus = lora["recompute"], base["alora_reuse_vs_lora_plan"]
    own = alora["full_prefill"]
    lines.append(f"- **Exact reuse.** From the {base['sender']}'s cache the aLoRA's full reuse changed the score of "
                 f"{base['alora_reuse_changed_questions']} of {n} questions against its own full prefill (Δ "
                 f"{_delta(base['alora_reuse_vs_own_prefill'])}), with no layer recomputed; the LoRA's full reuse: Δ "
                 f"{_delta(lora['full_reuse'])}.")
    lines.append(
        f"- **What retraining costs in quality.** The aLoRA's own quality is {own['quality']:.3f} against the "
        f"LoRA's {lora['full_prefill']['quality']:.3f}: Δ {_delta(own)}, "
        + ("inside" if own["delta"] >= floor - 1e-12 else "outside")
        + f" the {tolerance:g} tolerance ({floor:+.3f}) as a point estimate, and its interval "
        + (
            "stays inside it."
            if own["delta_ci"][0] >= floor - 1e-12
            else f"reaches {own['delta_ci'][0]:+.3f}, past it."
        )
    )
    lines.append(
        f"- **Retrain, or recompute?** From the same cache, the LoRA with its DroidSpeak plan ({_method(plan)}, "
        f"{plan['recomputed_fraction']:.0%} of the layers; its receiver prefill {plan['speedup']:.2f}× faster "
        f"than a full one) scores {plan['quality']:.3f}; the aLoRA, recomputing nothing, "
        f"{alora['full_reuse']['quality']:.3f}. aLoRA − LoRA plan: Δ {_delta(versus)}, {_verdict(versus)}."
    )
    for part in summary[1:]:
        other = {e["method"]: e for e in part["entries"]["alora"]}
        lines.append(
            f"- **From another fine-tune's cache ({part['sender']})** the aLoRA is no longer exact: its full "
            f"reuse changed {part['alora_reuse_changed_questions']} of {n} scores (Δ "
            f"{_delta(part['alora_reuse_vs_own_prefill'])} against its own prefill), and "
            f"{_method(other['recompute'])} brings it to {other['recompute']['quality']:.3f} (its own prefill: "
            f"{other['full_prefill']['quality']:.3f}). Its reuse is exact only from its base's cache."
        )
    return lines


def alora_markdown(summary: Sequence[Mapping], training: Mapping, *, command: str, tolerance: float) -> str:
    lora, alora = training["lora"], training["alora"]
    oracle = alora["oracle"]
    recipe = alora["recipe"]
    lines = ["# Activated LoRA receivers: retrain, or keep the LoRA and recompute a few layers?", "",
             f"Rebuilt by `{command}`. An activated LoRA (aLoRA; peft's `alora_invocation_tokens`) applies its adapter "
             "only from its invocation tokens on, so the K/V of a context before them are the base model's own and a "
             "base's cache serves it exactly, with nothing recomputed. But it must be trained that way. Here "
             f"`{alora['name']}` is `{lora['name']}`'s twin: the same {recipe['tasks'][0]} examples in the same order, "
             f"rank {recipe['rank']}, α {recipe['alpha']}, {recipe['steps']} steps at learning rate {recipe['lr']:g}, "
             f"batch {recipe['batch_size']}; its invocation is the query's opening, {json.dumps(recipe['invocation'])} "
             f"(tokens {alora['invocation_tokens']}).", "",
             "The engine serves it as two sets of weights (`LoadedModel.context`): the base computes every context "
             "token, on every plan; the adapter, merged, computes the query from its invocation on, which each query "
             "must start with (a query that does not, or repeats it, is refused: peft would adapt from the last "
             f"occurrence). Checked against peft's own aLoRA forward over whole prompts ({oracle['contexts']} profile "
             f"contexts of {', '.join(map(str, oracle['context_tokens']))} tokens): the largest logit difference on "
             f"the query was {oracle['max_abs_logit_error']:.1e} (logits up to {oracle['max_abs_logit']:.0f}); the "
             f"same weights merged over the whole prompt, as a plain LoRA would be, differ by "
             f"{oracle['merged_max_abs_logit_difference']:.1f}. Tests: tests/test_activated_lora.py.", "",
             "Training loss (mean over the logged steps), LoRA → aLoRA: " + "; ".join(
                 f"step {a[0]}: {a[1]:.3f} → {b[1]:.3f}" for a, b in zip(lora["curve"], alora["curve"]))
             + ". The aLoRA cannot change how the context is read, only how the query reads it.", "",
             "## Held out", "",
             f"Every {summary[0]['task']} test question ({summary[0]['entries']['lora'][0]['n']}), each receiver from "
             "each sender's cache. Δ is against the LoRA's own full prefill, paired over questions. *Speed-up* is the "
             "measured receiver prefill against recomputing every layer, in the same process (2-core CPU, one "
             "context).", ""]
    rows = []
    for part in summary:
        for kind, (label, _, _) in RECEIVERS.items():
            for e in part["entries"][kind]:
                rows.append([part["sender"], label, _method(e), f"{e['quality']:.3f} {interval_text(e['ci'])}",
                             "–" if kind == "lora" and e["method"] == "full_prefill" else _delta(e),
                             f"{(1.0 if e['method'] == 'full_prefill' else e['recomputed_fraction']):.2f}",
                             "–" if e["speedup"] is None or e["method"] == "full_prefill" else f"{e['speedup']:.2f}×"])
    lines += table(["sender's cache", "receiver", "plan", f"test {summary[0]['metric']} [95% CI]",
                    "Δ vs LoRA full prefill [paired 95% CI]", "layers recomputed", "speed-up"], rows)
    lines += ["", "## Findings", "", *_findings(summary, tolerance), "",
              "Where this setting differs: one task and one adapter pair, 135M parameters, a 60-step budget; the "
              "invocation is a fixed query opening, where production aLoRAs (Granite's) are invoked by a role "
              "token; CPU timings on one context. The comparison an operator faces also includes what this page "
              "cannot show: the aLoRA needs retraining, the LoRA plan needs a profile and the sender's E cache.", "",
              "![test quality against layers recomputed](fig_alora.png)", ""]
    return "\n".join(lines)


def write_alora_page(out_dir: str | Path, comparisons: Mapping[str, Mapping[str, str]], *, command: str,
                     tolerance: float) -> Path:
    out = Path(out_dir)
    summary = alora_summary(read_rows(out / "rows" / "results.jsonl"), comparisons)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_alora(summary, out)
    page = out / "README.md"
    page.write_text(alora_markdown(summary, json.loads((out / "training.json").read_text()), command=command,
                                   tolerance=tolerance))
    return page
