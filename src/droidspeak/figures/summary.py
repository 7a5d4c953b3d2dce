"""The headline table of a sweep, from its JSONL rows: per (pair, task), receiver / sender / full-reuse quality
and the fewest recomputed layers within the tolerance of the receiver (the paper's plan choice)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from droidspeak.figures.heldout import markdown as heldout_markdown
from droidspeak.figures.intervals import RESAMPLES, SEEDS, speedup_text
from droidspeak.figures.result_plots import eval_rows
from droidspeak.profile.choice import choose_point
from droidspeak.profile.points import ProfilePoint


def _mean(rows: list[Mapping], field: str = "quality") -> float | None:
    values = [float(r[field]) for r in rows if isinstance(r.get(field), (int, float))]
    return statistics.fmean(values) if values else None


def _timing(name: str, rows: list[Mapping]) -> dict:
    """``<name>_speedup`` and its spread, from the first of ``rows`` that was timed (a plan has one row per panel)."""
    timed = next((row for row in rows if row.get("speedup") is not None), {})
    return {f"{name}_speedup": timed.get("speedup"), f"{name}_speedup_spread": timed.get("speedup_spread")}


def summarize(rows: Iterable[Mapping], tolerance: float = 0.05) -> list[dict]:
    """One entry per (pair, task) that has at least the receiver's own (full_prefill) result."""
    panels: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in eval_rows(rows):
        panels[(row["pair"], row["task"])].append(row)
    summary = []
    for (pair, task), panel in sorted(panels.items()):
        by_method: dict[str, list[Mapping]] = defaultdict(list)
        by_plan: dict[str, list[Mapping]] = defaultdict(list)
        for row in panel:
            by_method[row["method"]].append(row)
            if row["method"] in ("recompute", "full_reuse", "full_prefill"):
                by_plan[row["resolved_plan"]].append(row)
        receiver = _mean(by_method["full_prefill"])
        if receiver is None:
            continue
        num_layers = int(panel[0]["num_layers"])
        points = [ProfilePoint.from_plan(plan, _mean(rs), num_layers=num_layers) for plan, rs in by_plan.items()]
        chosen = choose_point(points, receiver, tolerance)
        entry = {
            "pair": pair,
            "task": task,
            "metric": panel[0]["metric"],
            "questions": by_method["full_prefill"][0].get("n_samples"),
            "num_layers": num_layers,
            "receiver": receiver,
            "sender": _mean(by_method["sender"]),
            "full_reuse": _mean(by_method["full_reuse"]),
            "tolerance": tolerance,
            "plans_measured": len(points),
            "chosen_plan": chosen.plan if chosen else None,
            "chosen_layers": chosen.recomputed_layers if chosen else None,
            "chosen_quality": chosen.quality if chosen else None,
            **_timing("chosen", by_plan[chosen.plan] if chosen else []),
            **_timing("full_reuse", by_method["full_reuse"]),
        }
        summary.append(entry)
    return summary


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_summary(
    summary: list[dict],
    out_dir: str | Path,
    *,
    source: str = "",
    held_out: list[dict] | None = None,
    dev: list[dict] | None = None,
    code_versions: Mapping[str, int] | None = None,
) -> tuple[Path, Path]:
    """summary.json (machine-readable) and summary.md (the table a reader sees first): the held-out tables (plan
    chosen on the profile split, scored on the test split, with intervals) where the sweep has them, then the
    in-sample table. Rows of more than one code version (a sweep resumed with ``stale=keep``) are flagged on top.
    ``dev``: the baselines on the dev split (heldout.baselines_on), kept in summary.json only where there are any."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "summary.json"
    json_path.write_text(
        json.dumps({"in_sample": summary, "held_out": held_out or [], **({"dev": dev} if dev else {})}, indent=2,
                   sort_keys=True) + "\n"
    )
    lines = [
        "# Sweep summary",
        "",
        f"Rebuilt by `experiments/figures.py` from {source or 'the results JSONL'}. Quality is the task's own metric.",
        "",
    ]
    if code_versions and len(code_versions) > 1:
        lines += ["**These rows come from more than one version of the engine's code** (kept with `stale=keep`): "
                  + ", ".join(f"`{v}` ({n} rows)" for v, n in sorted(code_versions.items(), key=lambda kv: -kv[1])), ""]
    if held_out:
        lines += [
            "## Held out: the plan chosen on the profile split, scored on held-out questions (each table names its "
            "split)",
            "",
            "Each pair's plan is the profile file's fewest-layer plan within the tolerance (as `method=profile`",
            "serves it), chosen on the profile split and never tuned on these questions. Intervals are percentile",
            f"bootstraps ({RESAMPLES:,} resamples) over what each table names: questions, or whole contexts (a",
            "context's questions resampled together, as they are read over one document); Δ is paired (the same",
            "resamples for both); a Δ is *significant* only where a paired sign-flip test (a context's questions",
            f"flipped together) gives p < 0.05 and its interval excludes zero under each of {len(SEEDS)} resampling",
            "seeds.",
            "*Speedup* is the receiver's full prefill time over this plan's, one context at a time, in the same",
            "process and the same interleaved rounds: the median ratio [smallest–largest]. The receiver's own row is",
            "its full prefill timed against itself, the noise floor: two speedups differ only where their ranges do",
            "not overlap. A plan that misses its target on these questions has its speedup withheld.",
            "",
            *heldout_markdown(held_out),
        ]
    lines += [
        "## In sample: the fewest layers within the tolerance, picked on the test split itself",
        "",
        "*Fewest layers* is the plan with the fewest recomputed layers whose quality on these same test questions",
        "is within the tolerance of the receiver's (an optimistic, in-sample choice: the held-out table is the",
        "honest one); *speedup* is receiver prefill time of full recompute over that plan, timed as above.",
        "",
        "| pair (receiver<-sender) | task | metric | questions | receiver | sender | full reuse | fewest layers within "
        "tol. | its quality | its speedup | full-reuse speedup |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        chosen = "–" if e["chosen_plan"] is None else f"{e['chosen_layers']}/{e['num_layers']} (`{e['chosen_plan']}`)"
        lines.append(
            f"| {e['pair']} | {e['task']} | {e['metric']} | {fmt(e.get('questions'))} | {fmt(e['receiver'])} | "
            f"{fmt(e['sender'])} | "
            f"{fmt(e['full_reuse'])} | {chosen} | {fmt(e['chosen_quality'])} | "
            f"{speedup_text(e['chosen_speedup'], e['chosen_speedup_spread'])} | "
            f"{speedup_text(e['full_reuse_speedup'], e['full_reuse_speedup_spread'])} |"
        )
    md_path = out / "summary.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path
