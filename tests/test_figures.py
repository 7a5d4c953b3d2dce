"""Every figure renders from a small JSONL / profile file, writes PNG + PDF, and leaves matplotlib's globals alone."""

from __future__ import annotations

import json

import matplotlib
import pytest

from droidspeak.engine.plan import parse_plan
from droidspeak.figures import (
    FIGURES,
    FigureDataError,
    plot_input_spread,
    plot_layer_sensitivity,
    plot_profile_pareto,
    plot_profile_transfer,
    plot_quality_bars,
    plot_quality_vs_cost,
    plot_transitions,
    profiles_summary,
    transition_strata,
    write_profiles_summary,
)
from droidspeak.figures.heldout import heldout, withheld_plans
from droidspeak.profile import (
    LayerSensitivity,
    Profile,
    ProfilePoint,
    comparisons_path,
    load_profile,
    save_profile,
    single_group_plans,
    transition_plans,
)
from droidspeak.track.results import read_rows

L = 8
HARM = [0.0, 0.01, 0.2, 0.15, 0.0, 0.05, 0.0, 0.01]


def quality(plan: str, reference: float, penalty: float = 0.02) -> float:
    parsed = parse_plan(plan, L)
    if parsed.kind == "full_prefill":
        return reference
    kept = set(parsed.recomputed_layers)
    return reference - sum(h for layer, h in enumerate(HARM) if layer not in kept) - penalty * parsed.transitions


def make_profile(task: str, reference: float) -> Profile:
    per_ref = [reference - 0.1, reference, reference + 0.1]
    points = [ProfilePoint.from_plan(p, quality(p, reference), num_layers=L) for p in single_group_plans(L)]
    points.append(ProfilePoint.from_plan("recompute:2-3+5-5", quality("recompute:2-3+5-5", reference), num_layers=L))
    transitions = [
        ProfilePoint.from_plan(p, quality(p, reference), num_layers=L)
        for k in (2, 4)
        for by_count in transition_plans(L, k, 2, per_count=3).values()
        for p in by_count
    ]
    single = [
        LayerSensitivity(i, reference - HARM[i], tuple(r - HARM[i] * (1 + 0.5 * j) for j, r in enumerate(per_ref)))
        for i in range(L)
    ]
    return Profile(
        receiver="ft_a", sender="ft_b", task=task, metric="f1", num_layers=L, reference_quality=reference,
        points=points, reference_per_input=per_ref, n_samples=3, single_layer=single, transitions=transitions,
    )


def eval_row(method: str, plan: str, q: float, seconds: float, seed: int = 0, **kw) -> dict:
    row = {
        "kind": "eval", "pair": "ft_a<-ft_b", "receiver": "ft_a", "sender": "ft_b", "task": "hotpot_like",
        "plan": plan, "method": method, "metrics": {"f1": q}, "metric": "f1", "quality": q,
        "prefill_seconds": seconds, "baseline_prefill_seconds": 0.031, "recomputed_fraction": seconds / 0.031,
        "device": "cpu", "seed": seed, "git_sha": "abc123", "n_samples": 50,
    }
    row.update(kw)
    return row


@pytest.fixture
def results_jsonl(tmp_path):
    rows = []
    for seed in (0, 1):
        d = 0.01 * seed
        rows += [
            eval_row("full_prefill", "full_prefill", 0.80 + d, 0.031, seed),
            eval_row("full_reuse", "full_reuse", 0.40 + d, 0.004, seed),
            eval_row("sender", "full_prefill", 0.35 + d, 0.031, seed, pair="ft_a<-ft_b"),
            eval_row("recompute", "recompute:2-3", 0.73 + d, 0.011, seed),
            eval_row("recompute", "recompute:2-5", 0.78 + d, 0.017, seed),
            eval_row("cacheblend", "cacheblend:0.15", 0.55 + d, 0.012, seed),
            eval_row("cacheblend", "cacheblend:0.3", 0.62 + d, 0.016, seed),
            eval_row("profile", "profile:p.json@0.05", 0.78 + d, 0.017, seed),
        ]
    rows.append(eval_row("full_prefill", "full_prefill", 0.6, 0.02, task="code_like"))
    rows.append(eval_row("full_reuse", "full_reuse", 0.2, 0.003, task="code_like"))
    rows.append({"kind": "run_start", "git_sha": "abc123"})  # non-eval rows are ignored
    path = tmp_path / "results.jsonl"
    text = "\n".join(json.dumps(r) for r in rows) + "\n" + '{"kind": "eval", "pair": "trunc'  # killed mid-write
    path.write_text(text)
    return path


@pytest.fixture
def profile_paths(tmp_path):
    return [
        save_profile(tmp_path / f"{task}.json", make_profile(task, ref))
        for task, ref in (("hotpot_like", 0.8), ("code_like", 0.6))
    ]


def test_read_jsonl_skips_a_truncated_last_line_only(results_jsonl, tmp_path):
    rows = read_rows(results_jsonl)
    assert len(rows) == 19 and rows[-1]["kind"] == "run_start"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{broken\n{"a": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_rows(bad)


def _check(paths, out_dir, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    for p in paths:
        assert p.parent == out_dir and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # renders all seven figures, PNG and PDF
def test_every_figure_renders_png_and_pdf_without_touching_rcparams(results_jsonl, profile_paths, tmp_path):
    rows = read_rows(results_jsonl)
    before = dict(matplotlib.rcParams)
    out = tmp_path / "figs"
    calls = {
        "fig06_quality_bars": lambda: plot_quality_bars(rows, out),
        "fig07_layer_sensitivity": lambda: plot_layer_sensitivity(profile_paths, out),
        "fig08_input_spread": lambda: plot_input_spread(profile_paths[0], out),
        "fig10_transitions": lambda: plot_transitions(profile_paths, out),
        "fig11_profile_pareto": lambda: plot_profile_pareto([json.loads(p.read_text()) for p in profile_paths], out),
        "fig14_quality_vs_cost": lambda: plot_quality_vs_cost(rows, out),
        "fig17_profile_transfer": lambda: plot_profile_transfer(profile_paths, out),
    }
    assert set(calls) == set(FIGURES)
    for stem, call in calls.items():
        _check(call(), out, stem)
    assert dict(matplotlib.rcParams) == before


def test_layer_sensitivity_marks_the_rarer_attention_type(profile_paths, tmp_path, monkeypatch):
    layers = make_profile("hotpot_like", 0.8).num_layers
    kinds = ["sliding_attention"] * layers
    kinds[1] = "full_attention"
    drawn = []
    monkeypatch.setattr("droidspeak.figures.profile_plots.save_figure",
                        lambda fig, out, stem: drawn.append([t.get_text() for t in fig.legends[0].get_texts()]) or [])
    plot_layer_sensitivity(profile_paths, tmp_path, layer_types=kinds)
    plot_layer_sensitivity(profile_paths, tmp_path, layer_types=["full_attention"] * layers)  # one kind: no mark
    assert drawn[0][-1] == "full attention layer (the others: sliding attention)"
    assert not any("attention" in text for text in drawn[1])


def test_quality_vs_cost_accepts_other_cost_axes(results_jsonl, tmp_path):
    paths = plot_quality_vs_cost(read_rows(results_jsonl), tmp_path, x="recomputed_fraction", stem="by_fraction")
    _check(paths, tmp_path, "by_fraction")


def test_quality_vs_cost_draws_a_plan_not_shown_within_its_target_apart(tmp_path, monkeypatch):
    """The tables withhold such a plan's speedup; the figure, given the tables' verdicts, must not show it like one
    that holds."""
    receiver_scores = [1.0, 0.0] * 32

    def rows(plan_scores):
        common = {"pair": "r<-s", "task": "t", "metric": "f1", "speedup": 1.0, "num_layers": 4, "n_samples": 64}
        return [{**common, "method": "full_prefill", "plan": "full_prefill", "quality": 0.5,
                 "per_sample": receiver_scores},
                {**common, "method": "profile", "plan": "profile:p.json@0.05", "resolved_plan": "recompute:0-3",
                 "speedup": 2.0, "per_sample": plan_scores, "quality": sum(plan_scores) / len(plan_scores),
                 "profile": {"tolerance": 0.05}}]

    def draw(plan_scores):
        plot_quality_vs_cost(rows(plan_scores), tmp_path, x="speedup",
                             withheld=withheld_plans(heldout(rows(plan_scores))))

    drawn = []
    monkeypatch.setattr("droidspeak.figures.result_plots.save_figure",
                        lambda fig, out, stem: drawn.append([t.get_text() for t in fig.legends[0].get_texts()]) or [])
    draw(receiver_scores)  # the receiver's own answers: it holds
    draw([0.0] * 64)  # every answer lost: not shown within 5%
    withheld = "DroidSpeak (profiled plan), not shown within its target (its speedup not quoted)"
    assert "DroidSpeak (profiled plan)" in drawn[0] and withheld not in drawn[0]
    assert withheld in drawn[1] and "DroidSpeak (profiled plan)" not in drawn[1]


def test_figures_reject_inputs_that_lack_their_data(tmp_path):
    with pytest.raises(FigureDataError):
        plot_quality_bars([{"kind": "eval", "method": "recompute", "quality": 0.5}], tmp_path)
    with pytest.raises(FigureDataError):
        plot_quality_vs_cost([], tmp_path)
    bare = make_profile("hotpot_like", 0.8)
    bare.single_layer, bare.transitions = [], []
    with pytest.raises(FigureDataError):
        plot_layer_sensitivity(bare, tmp_path)
    with pytest.raises(FigureDataError):
        plot_profile_transfer([bare], tmp_path)  # one task only


def test_transition_strata_separate_plans_that_recompute_the_critical_layers():
    prof = make_profile("hotpot_like", 0.8)
    assert prof.critical_layers() == [2, 3]  # HARM: 0.2 and 0.15 of 0.8 exceed 10%
    study = [transition_plans(L, 4, 3, per_count=6), transition_plans(L, 4, 3, per_count=6, include=[2, 3])]
    plans = {p for by_count in study for plans in by_count.values() for p in plans}
    prof.transitions = [ProfilePoint.from_plan(p, quality(p, 0.8), num_layers=L) for p in sorted(plans)]
    k, strata = transition_strata(prof)
    assert k == 4
    holds, misses = strata["recomputes critical {2,3}"], strata["misses a critical layer"]
    for by_t in (holds, misses):
        for t, losses in by_t.items():
            expected = sorted(100 * (0.8 - p.quality) / 0.8 for p in prof.transitions if p.transitions == t
                              and ({2, 3} <= set(parse_plan(p.plan, L).recomputed_layers)) == (by_t is holds))
            assert sorted(losses) == pytest.approx(expected)
    assert max(max(v) for v in holds.values()) < min(min(v) for v in misses.values())  # harm 0.15+ vs ≤ 0.08


def _comparison_rows(pair: str, task: str) -> list[dict]:
    """One proxy, one multigroup and two hybrid rows as profile.job writes them (made up, mutually consistent)."""
    ids = {"pair": pair, "task": task}
    return [
        {
            **ids,
            "comparison": "proxy",
            "plans": 30,
            "samples": 4,
            "task_samples": 3,
            "proxy_contexts": 2,
            "task_contexts": 3,
            "spearman_top1": 0.91,
            "kendall_top1": 0.8,
            "spearman_kl": None,
            "kendall_kl": 0.62,
            "same_best_top1": True,
            "same_best_kl": False,
            "search_repeats": 3,
            "proxy_seconds": 3.0,
            "proxy_seconds_range": [2.9, 3.4],
            "task_seconds": 12.6,
            "task_group_prefill_seconds": 2.5,
            "task_seconds_equal_samples": 9.3,
            "task_seconds_equal_samples_range": [9.0, 9.9],
            "cost_ratio_equal_samples": 3.1,
            "cost_ratio_equal_samples_range": [2.8, 3.3],
            "tolerance": 0.05,
            "reference_quality": 0.8,
            "exhaustive_plan": "recompute:2-5",
            "exhaustive_layers": 4,
            "exhaustive_quality": 0.78,
            "proxy_plan": "recompute:2-3",
            "proxy_layers": 2,
            "proxy_quality": 0.72,
            "proxy_within_tolerance": False,
            "budgets": 9,
            "budgets_same_quality": 7,
            "budget_regret_mean": 0.0125,
        },
        {
            **ids,
            "comparison": "multigroup",
            "search": "dp_measured_groups",
            "recomputed_layers": 3,
            "plan": "recompute:2-3+5-5",
            "groups": 2,
            "transitions": 2,
            "predicted_quality": 0.75,
            "quality": 0.74,
            "best_single_plan": "recompute:1-3",
            "best_single_quality": 0.72,
            "delta_vs_best_single": 0.02,
            "transition_penalty": 0.02,
            "reference_quality": 0.8,
        },
        {
            **ids,
            "comparison": "hybrid",
            "budget_fraction": 0.25,
            "method": "group",
            "plan": "recompute:2-3",
            "quality": 0.7,
            "compute_fraction": 0.25,
            "prefill_seconds": 0.011,
            "reference_quality": 0.8,
        },
        {
            **ids,
            "comparison": "hybrid",
            "budget_fraction": 0.25,
            "method": "cacheblend",
            "plan": "cacheblend:0.25",
            "quality": 0.55,
            "compute_fraction": 0.26,
            "prefill_seconds": 0.012,
            "reference_quality": 0.8,
        },
    ]


def test_profiles_summary_tabulates_profiles_and_their_comparison_rows(profile_paths, tmp_path):
    hotpot = profile_paths[0]
    assert comparisons_path(hotpot) == tmp_path / "hotpot_like.comparisons.jsonl"
    comparisons_path(hotpot).write_text(
        "".join(json.dumps(r) + "\n" for r in _comparison_rows("ft_a<-ft_b", "hotpot_like"))
    )
    summary = profiles_summary(profile_paths, 0.05)
    json_path, md_path = write_profiles_summary(summary, tmp_path / "reports", source="`two profiles`")
    assert (json_path.name, md_path.name) == ("profiles.json", "profiles.md")
    assert json.loads(json_path.read_text()) == summary
    md = md_path.read_text()
    assert "from `two profiles`" in md

    # Profiles: one row each, the beyond file or not; the plan is the profile's own choice at the tolerance.
    assert [e["task"] for e in summary["profiles"]] == ["hotpot_like", "code_like"]
    for path, entry in zip(profile_paths, summary["profiles"]):
        prof = load_profile(path)
        chosen = prof.point(prof.choose(0.05))
        assert (entry["chosen_plan"], entry["chosen_layers"], entry["chosen_quality"]) == (
            chosen.plan, chosen.recomputed_layers, chosen.quality)
        assert entry["critical_layers"] == [2, 3]
        assert f"| ft_a<-ft_b | {prof.task} | f1 | – | 3 | 1 | {prof.reference_quality:.3f} | – |" in md
        assert f"{chosen.recomputed_layers}/8 `{chosen.plan}` | {chosen.quality:.3f} |" in md
    assert summary["profiles"][0]["chosen_plan"] != "full_prefill"  # the test profile has a cheaper plan in tolerance

    # Transitions: the strata of profile_plots.transition_strata, averaged.
    k, strata = transition_strata(load_profile(hotpot))
    entry = summary["transitions"][0]
    assert entry["k"] == k and {s["stratum"] for s in entry["strata"]} == set(strata)
    counts = sorted({t for by_t in strata.values() for t in by_t})  # the code_like profile has the same study
    for label, by_t in strata.items():
        cells = [f"{sum(by_t[t]) / len(by_t[t]):.1f} ({len(by_t[t])})" if t in by_t else "–" for t in counts]
        assert f"| ft_a<-ft_b | hotpot_like | {k}/8 | {label} | {' | '.join(cells)} |" in md

    # Beyond the paper: rows only from the file beside hotpot_like.
    assert [r["task"] for r in summary["proxy"] + summary["multigroup"]] == ["hotpot_like", "hotpot_like"]
    assert ("| ft_a<-ft_b | hotpot_like | 4 / 2 | 3 / 3 | 0.91 / – | 2/8 `recompute:2-3` (0.720) | "
            "4/8 `recompute:2-5` (0.780) | no | 7/9 (1.2%) | 12.60 (2.50) |") in md
    assert "| 3.00 s [2.90–3.40] | 9.30 s [9.00–9.90] | 3.10× [2.80–3.30] (3) |" in md  # medians of 3 runs, ranges
    assert ("| ft_a<-ft_b | hotpot_like | dp_measured_groups | 1 | 3 | 3: `recompute:2-3+5-5` (+0.020) | – | "
            "+0.020 |") in md
    assert [h["budget_fraction"] for h in summary["hybrid"]] == [0.25]
    assert set(summary["hybrid"][0]["methods"]) == {"group", "cacheblend"}
    assert ("| ft_a<-ft_b | hotpot_like | 0.250 (2/8) | `recompute:2-3` | 0.700 | 11.0 | `cacheblend:0.25` | 0.550 | "
            "12.0 | – | – | – |") in md
    assert "_No" not in md  # every section has data


def test_profiles_summary_notes_sections_without_data(tmp_path):
    bare = make_profile("code_like", 0.6)
    bare.points = [p for p in bare.points if p.plan in ("full_reuse", "recompute:0-3", "full_prefill")]
    bare.transitions, bare.single_layer = [], []
    path = save_profile(tmp_path / "code_like.json", bare)
    comparisons_path(path).write_text("")  # the beyond comparisons were off
    summary = profiles_summary([path], 0.05)
    assert summary["profiles"][0]["chosen_plan"] == "full_prefill" == bare.choose(0.05)
    assert summary["transitions"] == summary["proxy"] == summary["multigroup"] == summary["hybrid"] == []
    md = write_profiles_summary(summary, tmp_path)[1].read_text()
    assert "| ft_a<-ft_b | code_like | f1 | – | 3 | 1 | 0.600 | – | 0.180 | – | 8/8 `full_prefill` | 0.600 |" in md
    for note in ("No profile holds a transition study", "No proxy comparison", "No multi-group comparison",
                 "No hybrid comparison"):
        assert f"_{note}" in md
    assert sum(line.startswith("|---") for line in md.splitlines()) == 1  # the Profiles table only


@pytest.mark.slow  # renders the Pareto figures twice, PNG and PDF
def test_redrawing_a_figure_gives_the_same_bytes(profile_paths, tmp_path):
    """Regenerated reports/ must not show changes where the data did not change (PDFs carry no timestamp)."""
    first = plot_profile_pareto(profile_paths, tmp_path / "a")
    second = plot_profile_pareto(profile_paths, tmp_path / "b")
    for one, two in zip(first, second, strict=True):
        assert one.read_bytes() == two.read_bytes(), one.name
    assert b"/CreationDate" not in first[1].read_bytes()  # a timestamp would differ from one second to the next


def test_study_page_transfer_table_applies_the_own_task_plan_on_the_second_task():
    from droidspeak.figures.study_page import _transfer_table

    own, second = make_profile("hotpot_like", 0.8), make_profile("news_like", 0.5)
    lines = _transfer_table([second, own], {"ft_a": "hotpot_like"}, 0.05)
    plan = own.choose(0.05)
    there = next(p.quality for p in second.points if p.plan == plan)
    assert len([line for line in lines if line.startswith("| ft_a<-ft_b")]) == 1  # own task -> second task only
    row = next(line for line in lines if line.startswith("| ft_a<-ft_b"))
    assert "hotpot_like → news_like" in row and f"`{plan}`" in row and f"{there:.3f} ({there / 0.5:.0%})" in row
    assert _transfer_table([own], {"ft_a": "hotpot_like"}, 0.05) == []  # no second task: no section


def test_figures_draw_with_matplotlibs_own_fonts_never_the_systems():
    """A system DejaVu Sans of another version changes a PDF's font subset: the committed pages would drift byte for
    byte between machines. The figure style pins matplotlib's bundled fonts."""
    from pathlib import Path

    import matplotlib
    from matplotlib import font_manager

    import droidspeak.figures.style  # noqa: F401  (pins the fonts on import)

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    assert Path(font_manager.findfont("DejaVu Sans")).parent == bundled
    assert all(Path(font.fname).parent == bundled for font in font_manager.fontManager.ttflist)
