"""The held-out table: each pair's plan chosen on the profile split, scored on the test split beside the baselines,
every quality with a bootstrap confidence interval over questions.

Why intervals: a 5% tolerance on 64 questions is three answers, so a plan "within 5%" on one draw of questions
may not be on another. Each interval resamples the questions (percentile bootstrap, 10,000 resamples); the
difference to the receiver resamples the same questions for both (paired), which is what "is this plan as good"
asks. A difference is called significant only when a paired sign-flip test gives p < 0.05 and the paired interval
excludes zero under each of ten resampling seeds.

CacheBlend gets the same treatment as DroidSpeak's plans: where the sweep also scored CacheBlend plans on the
profile split (check layers at one compute), the best of them there is marked on the test split and compared,
paired, with DroidSpeak's plan.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from droidspeak.figures.result_plots import eval_rows

BASELINES = ("full_prefill", "sender", "full_reuse")
RESAMPLES = 10_000
LEVEL = 0.95
SEEDS = range(10)  # a difference is called significant only if every one of these resampling seeds agrees


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    values = sorted(values)
    tail = (1 - level) / 2
    low = values[int(tail * (len(values) - 1))]
    high = values[int(round((1 - tail) * (len(values) - 1)))]
    return low, high


def bootstrap_interval(scores: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``scores`` (deterministic for a seed)."""
    if not scores:
        raise ValueError("no scores to bootstrap")
    picks = np.random.default_rng(seed).integers(0, len(scores), size=(resamples, len(scores)))
    means = np.asarray(scores, dtype=np.float64)[picks].mean(axis=1)
    return _percentiles(means.tolist(), level)


def paired_difference_interval(scores: Sequence[float], reference: Sequence[float], *, resamples: int = RESAMPLES,
                               level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of mean(scores - reference), the same questions resampled for both."""
    if len(scores) != len(reference) or not scores:
        raise ValueError(f"paired scores need the same questions: {len(scores)} vs {len(reference)}")
    diffs = [a - b for a, b in zip(scores, reference)]
    return bootstrap_interval(diffs, resamples=resamples, level=level, seed=seed)


def _plan_of(row: Mapping) -> str:
    return row.get("resolved_plan") or row["plan"]


def sign_flip_p(diffs: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of a paired sign-flip (permutation) test that the mean difference is 0: exact over every
    sign pattern of the non-zero differences when there are at most 2^14 of them, else ``resamples`` random ones."""
    nonzero = np.asarray([d for d in diffs if d != 0], dtype=np.float64)
    if nonzero.size == 0:
        return 1.0
    if nonzero.size <= 14:
        signs = 1 - 2 * ((np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, nonzero.size))
    observed = abs(nonzero.sum())
    return float(np.mean(np.abs(signs @ nonzero) >= observed - 1e-12))


def paired_delta(scores: Sequence[float] | None, reference: Sequence[float] | None) -> dict:
    """``delta`` (mean of scores minus reference's), its paired ``delta_ci`` (seed 0), the sign-flip test's ``p``,
    and ``significant``: p < 0.05 and the interval excludes 0 under every seed of SEEDS. None where the questions
    differ."""
    if not scores or not reference or len(scores) != len(reference):
        return {"delta": None, "delta_ci": None, "p": None, "significant": None}
    intervals = [paired_difference_interval(scores, reference, seed=seed) for seed in SEEDS]
    p = sign_flip_p([a - b for a, b in zip(scores, reference)])
    return {"delta": statistics.fmean(scores) - statistics.fmean(reference), "delta_ci": intervals[0], "p": p,
            "significant": p < 1 - LEVEL and all(low > 0 or high < 0 for low, high in intervals)}


def paired_test_text(d: Mapping) -> str:
    """The paired test as the pages print it: p, and whether the difference is significant (– for none)."""
    if d.get("p") is None:
        return "–"
    p = "p < 0.001" if d["p"] < 0.001 else f"p = {d['p']:.3f}"
    return f"{p}, {'significant' if d['significant'] else 'not significant'}"


def _entry(row: Mapping, reference: Sequence[float] | None) -> dict:
    scores = row.get("per_sample")
    return {"method": row["method"], "plan": _plan_of(row), "quality": row["quality"], "n": row.get("n_samples"),
            "recomputed_fraction": row.get("recomputed_fraction"), "speedup": row.get("speedup"),
            "ci": bootstrap_interval(scores) if scores else None, **paired_delta(scores, reference)}


def _best_on_profile(rows: Iterable[Mapping]) -> str | None:
    """The CacheBlend plan with the best quality on the profile split (ties: the cheaper one)."""
    blends = [r for r in rows if r["method"] == "cacheblend"]
    if not blends:
        return None
    return _plan_of(max(blends, key=lambda r: (r["quality"], -(r.get("recomputed_fraction") or 0.0))))


def _versus(blend: Mapping, droidspeak: Mapping) -> dict:
    """CacheBlend's chosen plan against DroidSpeak's on the same questions: paired difference and both costs."""
    return {"cacheblend": _plan_of(blend), "droidspeak": _plan_of(droidspeak),
            "fractions": (blend.get("recomputed_fraction"), droidspeak.get("recomputed_fraction")),
            **paired_delta(blend.get("per_sample"), droidspeak.get("per_sample"))}


def heldout(rows: Iterable[Mapping], split: str = "test") -> list[dict]:
    """Per (pair, task) with a receiver result and a plan chosen elsewhere on ``split``: the baselines, the
    DroidSpeak plan (method ``profile``; or, where CacheBlend was chosen on the profile split, the ``recompute``
    plan it is compared with) and every CacheBlend point, each with its interval and its paired difference to the
    receiver; the CacheBlend plan best on the profile split is marked ``chosen`` and compared with the DroidSpeak
    plan (``versus``)."""
    panels: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    profile_split: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in eval_rows(rows):
        if row.get("source", "sweep") != "sweep":
            continue
        if row.get("split", "test") == split:
            panels[(row["pair"], row["task"])].append(row)
        elif row.get("split") == "profile":
            profile_split[(row["pair"], row["task"])].append(row)
    table = []
    for (pair, task), panel in sorted(panels.items()):
        by_method = defaultdict(list)
        for row in panel:
            by_method[row["method"]].append(row)
        chosen = _best_on_profile(profile_split[(pair, task)])
        # held out means: a plan chosen elsewhere (by a profile file, or CacheBlend's on the profile split), scored
        # here beside the receiver; a named recompute plan is DroidSpeak's side only of that CacheBlend comparison
        droidspeak_rows = by_method["profile"] or (by_method["recompute"] if chosen else [])
        if not by_method["full_prefill"] or not droidspeak_rows:
            continue
        receiver = by_method["full_prefill"][0]
        reference = receiver.get("per_sample")
        ordered = [r for m in BASELINES for r in by_method[m]] + droidspeak_rows
        ordered += sorted(by_method["cacheblend"], key=lambda r: (r.get("recomputed_fraction") or 0.0, r["plan"]))
        entries = [_entry(r, reference) for r in ordered]
        profile_quality = {_plan_of(r): r["quality"] for r in profile_split[(pair, task)]}
        for e in entries:
            e["profile_quality"] = profile_quality.get(e["plan"]) if e["method"] == "cacheblend" else None
            e["chosen"] = e["method"] == "cacheblend" and e["plan"] == chosen
        blend = next((r for r, e in zip(ordered, entries) if e["chosen"]), None)
        table.append({"pair": pair, "task": task, "metric": receiver["metric"], "num_layers": receiver["num_layers"],
                      "split": split, "versus": None if blend is None else _versus(blend, droidspeak_rows[0]),
                      "rows": entries})
    return table


def check_layer(plan: str) -> int:
    """The check layer of a ``cacheblend:R[@L]`` plan (0 where it names none)."""
    return int(plan.partition("@")[2] or 0)


def interval_text(ci, signed: bool = False) -> str:
    """A 95% interval as the pages print it (– where there is none); ``signed`` for differences."""
    form = "{:+.3f}" if signed else "{:.3f}"
    return "–" if ci is None else f"[{form.format(ci[0])}, {form.format(ci[1])}]"


def _method_name(e: Mapping) -> str:
    names = {"full_prefill": "receiver (full prefill)", "sender": "sender answers", "full_reuse": "full KV reuse",
             "profile": "plan chosen on the profile split", "recompute": "DroidSpeak plan", "cacheblend": "CacheBlend"}
    name = names.get(e["method"], e["method"])
    if e["method"] == "cacheblend":  # a CacheBlend is named by the layer its tokens are ranked at (LMCache's is 1)
        name = f"CacheBlend, check layer {check_layer(e['plan'])}"
    if e.get("profile_quality") is not None:
        name += f" ({e['profile_quality']:.3f} on the profile split{', chosen there' if e.get('chosen') else ''})"
    return name


def markdown(table: list[dict]) -> list[str]:
    """The held-out tables (one per pair) as markdown lines."""
    lines = []
    for panel in table:
        lines += [f"**{panel['pair']}** on {panel['task']} ({panel['metric']}, {panel['split']} split, "
                  f"{panel['rows'][0]['n']} questions)", "",
                  "| method | plan | quality | 95% CI | Δ vs receiver | paired 95% CI of Δ | paired test | "
                  "recomputed | speedup |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in panel["rows"]:
            delta = "–" if e["delta"] is None else f"{e['delta']:+.3f}"
            fraction = "–" if e["recomputed_fraction"] is None else f"{e['recomputed_fraction']:.0%}"
            timed = e["speedup"] is not None and e["method"] not in ("sender", "full_prefill")  # the baseline itself
            speedup = f"{e['speedup']:.2f}×" if timed else "–"
            lines.append(
                f"| {_method_name(e)} | `{e['plan']}` | {e['quality']:.3f} | "
                f"{interval_text(e['ci'])} | {delta} | {interval_text(e['delta_ci'])} | "
                f"{paired_test_text(e) if e['method'] != 'full_prefill' else '–'} | {fraction} | {speedup} |"
            )
        versus = panel.get("versus")
        if versus and versus["delta"] is not None:
            blend, droidspeak = versus["fractions"]
            lines += ["", f"CacheBlend chosen on the profile split (check layer {check_layer(versus['cacheblend'])}, "
                      f"`{versus['cacheblend']}`, {blend:.0%} recomputed) "
                      f"minus DroidSpeak's `{versus['droidspeak']}` ({droidspeak:.0%}): {versus['delta']:+.3f}, "
                      f"paired 95% CI {interval_text(versus['delta_ci'])}; {paired_test_text(versus)}."]
        lines.append("")
    return lines
