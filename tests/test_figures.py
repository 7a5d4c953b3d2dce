"""Every figure renders from a small JSONL / profile file, writes PNG + PDF, and leaves matplotlib's globals alone."""

from __future__ import annotations

import json

import matplotlib
import pytest

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
    read_jsonl,
)
from droidspeak.profile import LayerSensitivity, Profile, ProfilePoint, save_profile, single_group_plans, transition_plans
from droidspeak.plan import parse_plan

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
        for p in transition_plans(L, k, 2).values()
    ]
    single = [
        LayerSensitivity(l, reference - HARM[l], tuple(r - HARM[l] * (1 + 0.5 * i) for i, r in enumerate(per_ref)))
        for l in range(L)
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
    return [save_profile(tmp_path / f"{task}.json", make_profile(task, ref)) for task, ref in (("hotpot_like", 0.8), ("code_like", 0.6))]


def test_read_jsonl_skips_a_truncated_last_line_only(results_jsonl, tmp_path):
    rows = read_jsonl(results_jsonl)
    assert len(rows) == 19 and rows[-1]["kind"] == "run_start"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{broken\n{"a": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(bad)


def _check(paths, out_dir, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    for p in paths:
        assert p.parent == out_dir and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


def test_every_figure_renders_png_and_pdf_without_touching_rcparams(results_jsonl, profile_paths, tmp_path):
    rows = read_jsonl(results_jsonl)
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


def test_quality_vs_cost_accepts_other_cost_axes(results_jsonl, tmp_path):
    paths = plot_quality_vs_cost(read_jsonl(results_jsonl), tmp_path, x="recomputed_fraction", stem="by_fraction")
    _check(paths, tmp_path, "by_fraction")


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
