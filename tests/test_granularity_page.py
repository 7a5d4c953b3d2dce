"""The search-granularity page: every search's choice from one exhaustive fine profile and the study's coarser one,
the coarse-to-fine search replayed from the stored scores, and the chosen plans on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from droidspeak.engine.plan import parse_plan
from droidspeak.figures.granularity_page import granularity_summary, write_granularity_page
from droidspeak.profile.candidates import single_group_plans
from droidspeak.profile.points import ProfilePoint
from droidspeak.profile.profile_file import LayerSensitivity, Profile, ProfileError
from droidspeak.track.records import ResultRow

L, N = 30, 40
CRITICAL = set(range(11, 17))
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "conf/pages/granularity.md.j2"


def _scores(plan: str) -> tuple[float, ...]:
    """Question i is right when the plan recomputes more than i/N of the critical layers: monotone in the plan."""
    parsed = parse_plan(plan, L)
    recomputed = set(range(L)) if parsed.kind == "full_prefill" else {x for s, e in parsed.groups
                                                                       for x in range(s, e + 1)}
    share = len(recomputed & CRITICAL) / len(CRITICAL)
    return tuple(float(share > i / N) for i in range(N))


def _profile(granularity: int, inputs: list[str] | None = None, **fields) -> Profile:
    points = [ProfilePoint.from_plan(p, sum(_scores(p)) / N, num_layers=L, per_input=_scores(p))
              for p in single_group_plans(L, granularity)]
    single = [LayerSensitivity(layer, 1.0, tuple([1.0] * N)) for layer in range(L)]
    return Profile(**{"receiver": "lora-code", "sender": "base", "task": "long_code", "metric": "edit_sim",
                      "num_layers": L, "reference_quality": 1.0, "points": points, "granularity": granularity,
                      "n_samples": N, "inputs": inputs or [f"q{i}" for i in range(N)],
                      "reference_per_input": [1.0] * N, "single_layer": single, "choice_rule": "bootstrap95",
                      "timing": {"total_seconds": 600.0 * granularity}, **fields})


def _row(method: str, plan: str, speedup: float, misses: int = 0) -> ResultRow:
    scores = [1.0] * (N - misses) + [0.0] * misses
    return ResultRow.from_dict({
        "key": plan, "source": "sweep", "pair": "smol-lora-code<-base", "task": "long_code", "split": "test_wide",
        "method": method, "plan": plan if method != "profile" else "profile:p.json@0.05", "resolved_plan": plan,
        "metric": "edit_sim", "quality": sum(scores) / N, "n_samples": N, "num_layers": L,
        "recomputed_fraction": None, "prefill_seconds": 1.0, "baseline_prefill_seconds": speedup,
        "speedup": speedup, "speedup_spread": [speedup - 0.1, speedup + 0.1], "timed_contexts": 5,
        "timed_repeats": 3, "eval_seconds": 1.0, "device": "cpu", "dtype": "float32", "git_sha": "abc",
        "time": "2026-12-08", "per_sample": scores,
        "profile": {"rule": "bootstrap95", "tolerance": 0.05} if method == "profile" else None})


ROWS = [_row("full_prefill", "full_prefill", 1.0), _row("profile", "recompute:10-17", 2.5),
        _row("profile", "recompute:10-19", 2.1, misses=10)]


def test_every_search_chooses_from_the_same_questions_and_the_fine_one_saves_layers():
    summary = granularity_summary(_profile(2), _profile(5), ROWS, coarse=10, tolerance=0.05, tolerances=[0.05, 0.2])
    assert summary["repeat"] == {"plans": 30 + 7, "scores": 37 * N, "same": 37 * N}  # singles and 10-aligned groups
    study, coarse_only, fast, full, together = summary["choices"]
    assert (study["plan"], study["plans"]) == ("recompute:10-19", 22)
    assert (together["rule"], together["plan"]) == ("simultaneous95", full["plan"])  # exact answers: nothing to widen
    assert coarse_only["plan"] == "recompute:10-19" and coarse_only["plans"] == 7
    assert full["plan"] == fast["plan"] == "recompute:10-17" and fast["plans"] < full["plans"] == 121
    assert all(a["same"] and a["hull_misses"] == 0 for a in summary["agreement"])
    assert summary["inversions"] == 0 < summary["nested_pairs"]  # monotone: recomputing more never scores worse
    held = {h["plan"]: h for h in summary["test"]["plans"]}
    assert held["recompute:10-17"]["holds"] and held["recompute:10-17"]["speedup"] == 2.5
    assert not held["recompute:10-19"]["holds"]  # a quarter of the test questions lost


def test_the_page_says_what_each_search_chose_and_marks_what_the_test_split_did_not_score(tmp_path):
    page = write_granularity_page(_profile(2), _profile(5), ROWS[:1] + ROWS[2:], tmp_path, coarse=10,
                                  tolerance=0.05, tolerances=[0.05], command="make study NAME=x", template=TEMPLATE,
                                  study_profile=tmp_path.parent / "study" / "long_code.json")
    text = page.read_text()
    assert "chooses `recompute:10-17`, 2 layers fewer than the study's `recompute:10-19`" in text
    assert "It was not scored on the test split; the study's plan misses on the test split" in text
    assert "| no | not quoted: misses |" in text  # a plan that misses its target has no speedup on the page
    assert "It chooses the exhaustive search's plan, `recompute:10-17`" in text
    assert "By `simultaneous95` instead" in text and "chooses `recompute:10-17`, the same plan" in text
    assert "| exhaustive | 2 | 121 | 8/30 `recompute:10-17` |" in text and "not scored" in text
    assert "does not always score better" not in text  # monotone: no group beats a larger one
    assert "](../study/long_code.json)" in text and "one-sided 95% lower bound" in text
    assert (tmp_path / "fig_granularity.png").is_file() and (tmp_path / "summary.json").is_file()


def test_by_the_point_rule_the_page_says_so(tmp_path):
    page = write_granularity_page(_profile(2, choice_rule="point"), _profile(5, choice_rule="point"),
                                  [ROWS[0]], tmp_path, coarse=10, tolerance=0.05, tolerances=[0.05],
                                  command="x", template=TEMPLATE, study_profile=tmp_path / "p.json")
    text = page.read_text()
    assert "`point`, the fewest layers whose mean stays above" in text and "lower bound of its paired" not in text


def test_profiles_of_other_questions_or_test_rows_of_other_pairs_are_refused():
    with pytest.raises(ProfileError, match="read different"):
        granularity_summary(_profile(2), _profile(5, [f"other{i}" for i in range(N)]), ROWS, coarse=10,
                            tolerance=0.05, tolerances=[])
    stray = ResultRow.from_dict({**ROWS[1].to_dict(), "pair": "smol-lora-code<-lora-fieldqa"})
    with pytest.raises(ValueError, match="test rows must be lora-code<-base's"):
        granularity_summary(_profile(2), _profile(5), [*ROWS, stray], coarse=10, tolerance=0.05, tolerances=[0.05])
    with pytest.raises(ValueError, match="no full_prefill row"):
        granularity_summary(_profile(2), _profile(5), ROWS[1:], coarse=10, tolerance=0.05, tolerances=[0.05])
    unscored = ResultRow.from_dict({**ROWS[1].to_dict(), "per_sample": None})
    with pytest.raises(ValueError, match="no per-question scores"):
        granularity_summary(_profile(2), _profile(5), [ROWS[0], unscored], coarse=10, tolerance=0.05,
                            tolerances=[0.05])
    with pytest.raises(ValueError, match="chosen by bootstrap95 at tolerance 0.05, the page by bootstrap95 at 0.1"):
        granularity_summary(_profile(2), _profile(5), ROWS, coarse=10, tolerance=0.1, tolerances=[0.05])


def test_a_fine_profile_that_is_not_exhaustive_or_a_rule_apart_is_refused():
    steered = _profile(2, extra={"search": {"kind": "coarse_to_fine"}})
    with pytest.raises(ProfileError, match="searched coarse_to_fine"):
        granularity_summary(steered, _profile(5), ROWS, coarse=10, tolerance=0.05, tolerances=[0.05])
    thin = _profile(2)
    thin.points = thin.points[:-5]
    with pytest.raises(ProfileError, match="lacks 5 of the groups aligned to 2"):
        granularity_summary(thin, _profile(5), ROWS, coarse=10, tolerance=0.05, tolerances=[0.05])
    with pytest.raises(ProfileError, match="choose by bootstrap95 and point"):
        granularity_summary(_profile(2), _profile(5, choice_rule="point"), ROWS, coarse=10, tolerance=0.05,
                            tolerances=[0.05])


def test_the_study_scores_the_plan_its_replayed_coarse_to_fine_search_chooses():
    """The study names that plan in its config (it is known only once the profile is); the committed page says it."""
    study = yaml.safe_load((ROOT / "conf/study/smollm2_granularity.yaml").read_text())
    summary = json.loads((ROOT / "reports/smollm2_granularity/summary.json").read_text())
    for step, index, search in (("coarse_plan", 2, "coarse-to-fine"),
                                ("together_plan", 4, "exhaustive, bounds together")):
        layers = next(a.split("=", 1)[1] for a in study["steps"][step]["args"] if a.startswith("method.layers="))
        assert summary["choices"][index]["search"] == search
        assert summary["choices"][index]["plan"] == f"recompute:{layers}"
    assert all(p["quality"] is not None for p in summary["test"]["plans"])  # every search's plan scored on test
