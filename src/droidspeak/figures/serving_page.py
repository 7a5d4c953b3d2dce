"""The serving page: systems served the same Poisson traces at rising loads, executed on one machine
(experiments/serve.py writes ``<system>-qps<load>.jsonl``, one row per request, and ``.run.json``, the run's summary,
beside the page).

The SLO is the issue's: p90 TTFT within ``slo_factor`` × our full prefill's median single-request TTFT, measured as the
median TTFT of the reference system's requests at its lightest load that found the server idle (waited under 50 ms).
A system meets the SLO at a load when the p90 TTFT over every request it served there (each trace seed's run at that
load pooled: more seeds make a longer trace, not more chances to miss) is within the SLO and none was refused; its
throughput at the SLO is the highest offered load up to which it meets it at every load it was run at (the loads are a
grid, so the limit lies between that load and the first it misses).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from droidspeak.figures.style import OKABE_ITO, FigureDataError, new_figure, save_figure
from droidspeak.figures.template import render_page
from droidspeak.markdown import table
from droidspeak.serve.latency import served_summary
from droidspeak.serve.modelled import StepCosts, replay

IDLE_WAIT = 0.05  # seconds: a request that waited less found the server idle
OTHER_SLO_FACTORS = (3.0, 5.0)  # the limits again at a tighter and a looser SLO: how much a ratio rests on the choice
STYLE = {"full_prefill": ("our full prefill (own prefix caches allowed)", OKABE_ITO["black"], "o"),
         "droidspeak": ("DroidSpeak (profiled plans)", OKABE_ITO["blue"], "s"),
         "cacheblend": ("CacheBlend (its check layer and ratio chosen on the profile split)", OKABE_ITO["purple"],
                        "v"),
         "alora": ("aLoRA in lora-code's place (reads the base's cache)", OKABE_ITO["green"], "D"),
         "vllm": ("vLLM (merged models, prefix caching)", OKABE_ITO["orange"], "^"),
         "vllm_adapters": ("vLLM (LoRA adapters, prefix caching)", OKABE_ITO["vermillion"], "<")}


def read_runs(rows_dir: str | Path) -> list[dict]:
    """Every run beside the page: its summary (``.run.json``) with its rows, ordered by system and load."""
    runs = []
    for summary_path in sorted(Path(rows_dir).glob("*.run.json")):
        rows_path = summary_path.with_name(summary_path.name.removesuffix(".run.json") + ".jsonl")
        if not rows_path.is_file():
            raise FigureDataError(f"{summary_path}: no rows beside it ({rows_path.name})")
        steps_path = rows_path.with_suffix(".steps.jsonl")
        runs.append({**json.loads(summary_path.read_text()), "rows": _jsonl(rows_path), "file": rows_path.name,
                     "steps": _jsonl(steps_path) if steps_path.is_file() else []})
    if not runs:
        raise FigureDataError(f"{rows_dir}: no serving runs (*.run.json); run the study first")
    order = list(STYLE)
    return sorted(runs, key=lambda r: (order.index(r["system"]) if r["system"] in order else len(order), r["qps"],
                                       r.get("seed", 0)))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def single_request_ttft(runs: Sequence[Mapping], system: str) -> tuple[float, int]:
    """(median TTFT, how many requests) of ``system``'s requests at its lightest load (every trace seed run there)
    that found the server idle."""
    own = [r for r in runs if r["system"] == system]
    if not own:
        raise FigureDataError(f"no runs of the reference system {system!r}")
    lightest = min(r["qps"] for r in own)
    idle = [row["ttft"] for run in own if run["qps"] == lightest for row in run["rows"]
            if row["error"] is None and row["queueing"] is not None and row["queueing"] < IDLE_WAIT]
    if not idle:
        raise FigureDataError(f"{system} at {lightest} qps: no request found the server idle")
    return statistics.median(idle), len(idle)


def serving_summary(every_run: Sequence[Mapping], *, slo_factor: float, reference: str) -> dict:
    """Latency, the SLO and throughput at it over the load runs; answers compared over every run, checks included
    (a run whose ``.run.json`` says ``"check": "why"``: requests served again to explain a difference, not a load)."""
    runs = [r for r in every_run if not r.get("check")]
    single, idle = single_request_ttft(runs, reference)
    slo = slo_factor * single
    table_rows = []
    for run in runs:
        summary = served_summary(run["rows"])
        meets = summary["refused"] == 0 and summary.get("ttft_p90", float("inf")) <= slo
        busy = run.get("busy_seconds") or {}
        prefills = [step for step in run["steps"] if step["kind"] == "context_prefill"]
        pace = (1000 * sum(s["seconds"] for s in prefills) / sum(s["context_tokens"] for s in prefills)
                if prefills else None)  # the machine's speed during this run: a full prefill's seconds per 1K tokens
        table_rows.append({"system": run["system"], "qps": run["qps"], "seed": run.get("seed", 0), "meets_slo": meets,
                           "busy": busy,
                           "prefill_seconds_per_1k": pace,
                           **{k: v for k, v in summary.items() if k != "served_by"},
                           "served_by": summary.get("served_by", {})})
    systems = list(dict.fromkeys(r["system"] for r in runs))
    loads = load_verdicts(runs, slo)
    sustained = highest_sustained([(v["system"], v["qps"], v["meets_slo"]) for v in loads])
    modelled = modelled_vs_executed(runs, slo)
    agreement = answer_agreement(every_run, reference)
    highest = {s: max(r["qps"] for r in runs if r["system"] == s) for s in systems}
    lowest_load = {s: min(r["qps"] for r in runs if r["system"] == s) for s in systems}
    # a system that sustained the highest load it ran has no limit found: "at least", and no ratio
    at_least = {s: sustained.get(s, 0.0) >= highest[s] for s in systems}
    ratios = {s: _ratio(sustained, at_least, s, reference) for s in systems}
    # the loads are a grid: a limit found lies between the highest load sustained and the next load run above it
    next_load = {s: min((r["qps"] for r in runs if r["system"] == s and r["qps"] > sustained.get(s, 0.0)),
                        default=None) for s in systems}
    vllms = [r["system"] for r in runs if r.get("engine") == "vllm"]
    # the strongest vLLM way run here: the one sustaining the highest load (what a user would pick instead)
    vllm_best = max(dict.fromkeys(vllms), key=lambda s: sustained.get(s, 0.0), default=None)
    first = runs[0]
    readings = [(f"{factor:g}× (the SLO)", slo, loads) if factor == slo_factor else
                (f"{factor:g}×", factor * single, load_verdicts(runs, factor * single))
                for factor in sorted({slo_factor, *OTHER_SLO_FACTORS})]
    first_seed = min(r.get("seed", 0) for r in runs)
    readings.append((f"{slo_factor:g}×, trace seed {first_seed} only", slo,
                     load_verdicts([r for r in runs if r.get("seed", 0) == first_seed], slo)))
    invalid = sorted({a["system"] for a in agreement if a["same"] * 2 < a["requests"] and not a.get("check")
                      and not a["stand_in"]})  # a stand-in is another model: its answers may differ
    return {"slo_seconds": slo,
            "other_readings": [{"reading": name, "slo_seconds": seconds, "limits": limits_text(verdicts)}
                               for name, seconds, verdicts in readings],
            "invalid": invalid,
            "quality_at_limit": {s: [a for a in agreement if a["system"] == s and a["qps"] == sustained.get(s)]
                                 for s in systems},
            "single_ttft": single, "single_ttft_requests": idle, "slo_factor": slo_factor,
            "reference": reference, "runs": table_rows, "systems": systems,
            "throughput_at_slo": {s: sustained.get(s, 0.0) for s in systems}, "ratio_to_reference": ratios,
            "vllm_best": vllm_best, "ratio_to_vllm": {s: _ratio(sustained, at_least, s, vllm_best) for s in systems},
            "next_load": next_load,
            "ratio_range_to_reference": {s: _ratio_range(sustained, next_load, at_least, s, reference)
                                         for s in systems},
            "ratio_range_to_vllm": {s: _ratio_range(sustained, next_load, at_least, s, vllm_best) for s in systems},
            "anchor_pace": _median_pace([r for r in table_rows if r["system"] == reference
                                         and r["qps"] == lowest_load[reference]]),  # the SLO's single-request runs
            "median_pace": _median_pace(table_rows), "lowest_load": lowest_load,
            "at_least": at_least, "seeds": sorted({r["seed"] for r in table_rows}),
            "load_verdicts": loads, "pooled_loads": [v for v in loads if len(v["seeds"]) > 1],
            "setting": {k: first.get(k) for k in ("receivers", "task", "split", "dtype", "threads", "device",
                                                   "max_batch", "readers", "shuffle_readers")},
            "requests_per_run": sorted({len(r["rows"]) for r in runs}),
            "dtypes": {r["system"]: r.get("dtype") for r in runs},
            "vllm_modes": {r["system"]: r.get("vllm_mode") or "adapters" for r in runs if r.get("engine") == "vllm"},
            "plans": {r["system"]: r.get("plans", {}) for r in runs},
            "profiles": {r["system"]: r.get("profiles", {}) for r in runs}, "modelled": modelled,
            "agreement": agreement,
            "model_tolerance": MODEL_TOLERANCE}


def load_verdicts(runs: Sequence[Mapping], slo: float) -> list[dict]:
    """Per (system, offered load): the requests of every run there (each trace seed) pooled, their p90 TTFT, and
    whether it meets the SLO with none refused."""
    pooled: dict[tuple[str, float], list[Mapping]] = {}
    for run in runs:
        pooled.setdefault((run["system"], run["qps"]), []).append(run)
    verdicts = []
    for (system, qps), at_load in pooled.items():
        summary = served_summary([row for run in at_load for row in run["rows"]])
        p90 = summary.get("ttft_p90")
        verdicts.append({"system": system, "qps": qps, "seeds": sorted(run.get("seed", 0) for run in at_load),
                         "requests": summary["requests"], "refused": summary["refused"], "ttft_p90": p90,
                         "meets_slo": summary["refused"] == 0 and p90 is not None and p90 <= slo})
    return verdicts


def limits_text(verdicts: Sequence[Mapping]) -> dict[str, str]:
    """Per system, its throughput at the SLO these load verdicts give, as a page cell: the limit, "≥" where it met
    the highest load it was run at, "none" where it missed its lightest."""
    sustained = highest_sustained([(v["system"], v["qps"], v["meets_slo"]) for v in verdicts])
    out = {}
    for system in dict.fromkeys(v["system"] for v in verdicts):
        top = max(v["qps"] for v in verdicts if v["system"] == system)
        limit = sustained.get(system)
        out[system] = "none" if limit is None else f"≥ {limit:g}" if limit >= top else f"{limit:g}"
    return out


def highest_sustained(verdicts: Sequence[tuple[str, float, bool]]) -> dict[str, float]:
    """Per system, the highest load up to which it met the SLO at every load it was run at (a miss at a lower load
    bounds it, whatever a higher one did); systems that missed their lightest load are absent."""
    out: dict[str, float] = {}
    for system in dict.fromkeys(s for s, _, _ in verdicts):
        for _, qps, meets in sorted(v for v in verdicts if v[0] == system):
            if not meets:
                break
            out[system] = qps
    return out


def _ratio(sustained: Mapping[str, float], at_least: Mapping[str, bool], system: str, other: str | None):
    """``system``'s throughput at the SLO over ``other``'s, where both limits were found (None otherwise)."""
    if other is None or not sustained.get(other) or at_least[system] or at_least[other]:
        return None
    return sustained.get(system, 0.0) / sustained[other]


def _ratio_range(sustained: Mapping[str, float], next_load: Mapping[str, float | None],
                 at_least: Mapping[str, bool], system: str, other: str | None) -> tuple[float, float] | None:
    """What the grid allows the ratio of two found limits to be: each limit lies in [sustained, next load run)."""
    if _ratio(sustained, at_least, system, other) is None or not sustained.get(system) or next_load[system] is None \
            or next_load[other] is None:
        return None
    return sustained[system] / next_load[other], next_load[system] / sustained[other]


def _median_pace(rows: Sequence[Mapping]) -> float | None:
    """The median of runs' full-prefill seconds per 1K tokens (the machine's pace; None where no run measured it)."""
    paces = [r["prefill_seconds_per_1k"] for r in rows if r["prefill_seconds_per_1k"] is not None]
    return statistics.median(paces) if paces else None


def answer_agreement(runs: Sequence[Mapping], reference: str) -> list[dict]:
    """Per system, load and receiver: how many of its answers equal the reference system's to the same request, and
    their mean scores. A trace seed draws the same requests at every load (only the gaps scale), so a request is
    (seed, rid); its reference answer is the reference's at the same load where it ran there (the same batching
    pressure), else at its lightest load with that seed (``reference_qps`` says which). A model served in another's
    place (the aLoRA for its LoRA) is compared with the model it replaces, under both names. Where a system's quality
    differs from the reference's, this says whether its answers or its scoring do."""
    own = sorted((r for r in runs if r["system"] == reference and not r.get("check")), key=lambda r: r["qps"])
    out = []
    for run in runs:
        if run["system"] == reference:
            continue
        seed = run.get("seed", 0)
        same_seed = [r for r in own if r.get("seed", 0) == seed]
        match = next((r for r in same_seed if r["qps"] == run["qps"]), same_seed[0] if same_seed else None)
        if match is None:
            continue
        answers = {row["rid"]: row for row in match["rows"]}
        stand_ins = stand_ins_for(run, match)
        by_receiver: dict[str, list[tuple[Mapping, Mapping]]] = {}
        for row in run["rows"]:
            theirs = answers.get(row["rid"])
            if (theirs is None or row["error"] is not None or theirs["error"] is not None
                    or theirs["context_id"] != row["context_id"]
                    or stand_ins.get(row["receiver"], row["receiver"]) != theirs["receiver"]):
                continue
            asker = row["receiver"] if row["receiver"] == theirs["receiver"] else (
                f"{row['receiver']} (ours: {theirs['receiver']})")
            by_receiver.setdefault(asker, []).append((row, theirs))
        for receiver, pairs in sorted(by_receiver.items()):
            out.append({"system": run["system"], "qps": run["qps"], "seed": seed, "receiver": receiver,
                        "stand_in": pairs[0][0]["receiver"] != pairs[0][1]["receiver"],
                        "reference_qps": match["qps"], "requests": len(pairs),
                        "check": run.get("check"),
                        "same": sum(a["answer"] == b["answer"] for a, b in pairs),
                        "score": statistics.fmean(a["score"] for a, _ in pairs),
                        "reference_score": statistics.fmean(b["score"] for _, b in pairs)})
    return out


def stand_ins_for(run: Mapping, reference: Mapping) -> dict[str, str]:
    """The models ``run`` asks in another's place: where both runs read each context in sessions of as many readers,
    the reader at each position of ``run``'s order that differs from the reference's there (the aLoRA where our full
    prefill had its LoRA). A request (seed, rid) is then the same question asked of the stand-in."""
    ours, theirs = run.get("readers") or [], reference.get("readers") or []
    if len(ours) != len(theirs) or run.get("shuffle_readers") or reference.get("shuffle_readers"):
        return {}
    return {mine: other for mine, other in zip(ours, theirs) if mine != other}


def agreement_table(summary: Mapping) -> list[str]:
    rows = [[STYLE.get(r["system"], (r["system"],))[0] + (f" — check: {r['check']}" if r["check"] else ""),
             _load(r, summary), r["receiver"], f"{r['reference_qps']:g}", f"{r['same']}/{r['requests']}",
             f"{r['score']:.3f}", f"{r['reference_score']:.3f}"] for r in summary["agreement"]]
    return table(["system", "trace (offered qps)", "receiver", "ours at (qps)", "answers equal to ours",
                  "its mean score", "our full prefill's"], rows, empty="one system only")


MODEL_TOLERANCE = 0.15  # the modelled loop must predict median TTFT and throughput at the SLO this closely
SATURATED = 0.9  # a run whose loop was busy this share of its span is at or past saturation


def modelled_vs_executed(runs: Sequence[Mapping], slo: float) -> list[dict]:
    """Per run of a system with a step log: its executed median TTFT and whether it met the SLO, beside the modelled
    loop's (droidspeak.serve.modelled), its costs fitted to the step log of every run of that system; and each system's
    throughput at the SLO both ways."""
    out, replayed = [], []
    for system in dict.fromkeys(r["system"] for r in runs):
        own = [r for r in runs if r["system"] == system and r["steps"]]
        if not own:
            continue
        costs = StepCosts.fit([step for r in own for step in r["steps"]])
        for run in own:
            replayed.append({**run, "rows": replay(run, costs)})
            executed, modelled = served_summary(run["rows"]), served_summary(replayed[-1]["rows"])
            busy = run.get("busy_seconds") or {}
            span = max(r["last_token"] for r in run["rows"] if r["error"] is None) - min(
                r["arrival"] for r in run["rows"] if r["error"] is None)
            utilization = (busy.get("prefill", 0.0) + busy.get("decode", 0.0)) / span if span > 0 else None
            error = modelled["ttft_p50"] / executed["ttft_p50"] - 1
            meets = (executed["ttft_p90"] <= slo, modelled["ttft_p90"] <= slo)
            out.append({"system": system, "qps": run["qps"], "seed": run.get("seed", 0),
                        "executed_ttft_p50": executed["ttft_p50"],
                        "modelled_ttft_p50": modelled["ttft_p50"], "ttft_error": error, "utilization": utilization,
                        "below_saturation": utilization is not None and utilization < SATURATED,
                        "within_tolerance": abs(error) <= MODEL_TOLERANCE,
                        "executed_meets_slo": meets[0], "modelled_meets_slo": meets[1]})
    # throughput at the SLO as the page reads it (seeds pooled per load, a lower miss bounding the limit), both ways
    logged = [r for r in runs if r["steps"]]
    executed, modelled = limits_text(load_verdicts(logged, slo)), limits_text(load_verdicts(replayed, slo))
    for row in out:  # as the page prints a limit: "≥" where it met its highest load, "none" where it missed it all
        row["executed_throughput_at_slo"] = executed[row["system"]]
        row["modelled_throughput_at_slo"] = modelled[row["system"]]
    return out


def _load(row: Mapping, summary: Mapping) -> str:
    """A run's offered load, with its trace seed where the page holds more than one."""
    return f"{row['qps']:g}" + (f" · seed {row['seed']}" if len(summary["seeds"]) > 1 else "")


def _cell(value, spec=".2f") -> str:
    return "–" if value is None else format(value, spec)


def _sources(served_by: Mapping[str, int]) -> dict[str, int]:
    """How many requests each cache source served, a prefix hit's token count left out (vLLM names it)."""
    merged: dict[str, int] = {}
    for label, count in served_by.items():
        label = re.sub(r" \(\d+ tokens\)", "", label)
        merged[label] = merged.get(label, 0) + count
    return merged


def markdown_table(summary: Mapping) -> list[str]:
    rows = []
    for r in summary["runs"]:
        quality = "–" if r.get("quality") is None else (
            f"{r['quality']:.3f}" + (f" [{r['quality_ci'][0]:.3f}, {r['quality_ci'][1]:.3f}]" if r.get("quality_ci")
                                     else ""))
        busy = r["busy"]
        rows.append([STYLE.get(r["system"], (r["system"],))[0], _load(r, summary), f"{r['served']}/{r['requests']}",
                     _cell(r.get("ttft_p50")), _cell(r.get("ttft_p90")), _cell(r.get("tbt_mean_p50"), ".3f"),
                     _cell(r.get("e2e_p50")), _cell(r.get("e2e_p90")), _cell(r.get("throughput_rps"), ".3f"),
                     quality, "yes" if r["meets_slo"] else "no",
                     "–" if not busy else f"{busy['prefill']:.0f} / {busy['decode']:.0f}",
                     _cell(r["prefill_seconds_per_1k"]),
                     "; ".join(f"{k}: {v}" for k, v in sorted(_sources(r["served_by"]).items()))])
    return table(["system", "offered qps", "served", "TTFT p50 (s)", "TTFT p90 (s)", "TBT p50 (s)", "E2E p50 (s)",
                  "E2E p90 (s)", "completed / s", "quality [95% CI]", "within SLO", "prefill / decode busy (s)",
                  "full prefill s / 1K tokens", "served by"], rows)


def modelled_table(summary: Mapping) -> list[str]:
    rows = [[STYLE.get(r["system"], (r["system"],))[0], _load(r, summary), _cell(r["utilization"], ".0%"),
             f"{r['executed_ttft_p50']:.2f}", f"{r['modelled_ttft_p50']:.2f}", f"{r['ttft_error']:+.0%}",
             "yes" if r["within_tolerance"] else "no", "yes" if r["executed_meets_slo"] else "no",
             "yes" if r["modelled_meets_slo"] else "no"] for r in summary["modelled"]]
    return table(["system", "offered qps", "loop busy", "executed TTFT p50 (s)", "modelled TTFT p50 (s)", "error",
                  f"within {summary['model_tolerance']:.0%}", "executed within SLO", "modelled within SLO"], rows,
                 empty="no run with a step log")


def figure(summary: Mapping, out_dir: str | Path) -> list[Path]:
    """Fig. 15's shape: TTFT (p50 and p90) and end-to-end p50 against offered load, per system, the SLO drawn; where a
    load ran with several trace seeds, the p90 line goes through the p90 of their requests pooled (what the SLO verdict
    reads), the others through their mean, and each seed's own p90 is a faint point."""
    fig, axes = new_figure(2)
    for system in summary["systems"]:
        label, color, marker = STYLE.get(system, (system, OKABE_ITO["sky"], "x"))
        runs = [r for r in summary["runs"] if r["system"] == system and r.get("ttft_p50") is not None]
        loads = sorted({r["qps"] for r in runs})
        mean = lambda key, qps: statistics.fmean(r[key] for r in runs if r["qps"] == qps)  # noqa: E731
        pooled = {v["qps"]: v["ttft_p90"] for v in summary["load_verdicts"] if v["system"] == system}
        axes[0].plot(loads, [pooled[q] for q in loads], color=color, marker=marker)  # what the verdict reads
        axes[0].plot(loads, [mean("ttft_p50", q) for q in loads], color=color, marker=marker, linestyle=":")
        axes[1].plot(loads, [mean("e2e_p50", q) for q in loads], color=color, marker=marker, label=label)
        if len(runs) > len(loads):
            axes[0].scatter([r["qps"] for r in runs], [r["ttft_p90"] for r in runs], color=color, alpha=0.3, s=8)
    axes[0].axhline(summary["slo_seconds"], color="#999999", linestyle="--")
    axes[0].set(xlabel="offered load (requests / s)", ylabel="TTFT (s)", yscale="log",
                title="p90 solid (seeds pooled), p50 dotted; dashed: the SLO")
    axes[1].set(xlabel="offered load (requests / s)", ylabel="end-to-end p50 (s)", yscale="log")
    fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=6)
    return save_figure(fig, out_dir, "fig15_serving")


def write_serving_page(rows_dir: str | Path, out_dir: str | Path, template: str | Path, *, slo_factor: float,
                       reference: str, command: str) -> list[Path]:
    summary = serving_summary(read_runs(rows_dir), slo_factor=slo_factor, reference=reference)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = figure(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    page = render_page(template, {**summary, "table": "\n".join(markdown_table(summary)),
                                  "modelled_table": "\n".join(modelled_table(summary)),
                                  "agreement_table": "\n".join(agreement_table(summary)), "command": command,
                                  "names": {s: STYLE.get(s, (s,))[0] for s in summary["systems"]}})
    (out / "README.md").write_text(page)
    return [*written, out / "summary.json", out / "README.md"]
