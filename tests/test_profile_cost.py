"""The profiling-cost bench: paths timed in rotated rounds, several plans' answers per decode equal to one plan's,
and the page's ratios and choices computed from its own runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from droidspeak.bench.profile_cost import ProfilePath, measure
from droidspeak.figures.profile_cost_page import RUNS_FILE, cost_summary, write_cost_page
from droidspeak.profile.candidates import single_group_plans
from droidspeak.track.records import ProfileCostRun
from helpers import qa_rows

TEMPLATE = Path(__file__).resolve().parents[1] / "conf" / "pages" / "profile_cost.md.j2"


def test_paths_parse_and_refuse_what_is_not_one():
    assert ProfilePath.parse("bfloat16x8") == ProfilePath("bfloat16", 8)
    assert ProfilePath.parse("float32x1").name == "float32 × 1"
    assert ProfilePath.parse("float32x1+drafts") == ProfilePath("float32", 1, drafts=True)
    assert ProfilePath.parse("bfloat16x4+drafts").name == "bfloat16 × 4 + drafts"
    for bad in ("bfloat16", "x8", "float32x0", "float32xy", "float32x1+draft", "float32x1+"):
        with pytest.raises(ValueError, match="expected <dtype>x<plans per decode>"):
            ProfilePath.parse(bad)


def test_a_drafted_path_counts_what_it_decoded_and_is_set_beside_the_same_path_without_drafts(llama_pair):
    sender, receiver = llama_pair
    plans = single_group_plans(receiver.stack.num_layers, 3)
    paths = [ProfilePath("float32", 1), ProfilePath("float32", 1, drafts=True)]
    runs = list(measure(paths, lambda dtype: (receiver, sender), pair="tuned<-base", task="mdqa", rows=qa_rows(2),
                        plans=plans, rounds=1, batch_size=4, threads=1))
    plain, drafted = cost_summary(runs, 0.05)
    layer_answers = (len(plans) - 1) * 4  # every plan but full_prefill, on 4 questions
    assert [r.answered for r in runs] == [layer_answers, layer_answers] and runs[0].decoded == layer_answers
    assert 0 <= runs[1].decoded <= layer_answers and drafted["decoded"] == runs[1].decoded / layer_answers
    assert plain["same_as_undrafted"] is None and drafted["same_as_undrafted"] == drafted["same_answers"] == 1.0


def test_measure_rotates_the_paths_and_a_batched_decode_answers_as_one_plan_at_a_time(llama_pair, tmp_path):
    sender, receiver = llama_pair
    plans = single_group_plans(receiver.stack.num_layers, 2)
    paths = [ProfilePath("float32", 1), ProfilePath("float32", 3)]
    runs = list(measure(paths, lambda dtype: (receiver, sender), pair="tuned<-base", task="mdqa", rows=qa_rows(3),
                        plans=plans, rounds=2, batch_size=4, threads=1))
    assert [(r.round, r.path) for r in runs] == [(0, "float32 × 1"), (0, "float32 × 3"), (1, "float32 × 3"),
                                                 (1, "float32 × 1")]
    assert all(r.seconds > 0 and r.questions == 6 and r.plans == plans for r in runs)
    assert all(bool(r.answers) == (r.round == 0) for r in runs)  # the first round keeps what it answered
    assert ProfileCostRun.from_dict(json.loads(json.dumps(runs[0].to_dict()))) == runs[0]
    summary = cost_summary(runs, 0.05)
    assert [s["path"] for s in summary] == ["float32 × 1", "float32 × 3"]
    assert summary[0]["ratio"] == 1.0 and summary[0]["same_answers"] == 1.0
    assert summary[1]["same_answers"] == 1.0 and summary[1]["max_quality_gap"] == 0.0  # three plans per decode
    assert summary[1]["chosen"] == summary[0]["chosen"] and set(summary[1]["chosen"]) == {"point", "bootstrap95"}
    by_round = {(r.round, r.path): r.seconds for r in runs}
    ratios = sorted(by_round[(k, "float32 × 1")] / by_round[(k, "float32 × 3")] for k in (0, 1))
    assert summary[1]["ratio_range"] == ratios and summary[1]["ratio"] == pytest.approx(sum(ratios) / 2)
    (tmp_path / RUNS_FILE).write_text("".join(json.dumps(r.to_dict()) + "\n" for r in runs))
    page = write_cost_page(tmp_path, tolerance=0.05, command="make x", template=TEMPLATE).read_text()
    assert "`float32 × 3`" in page and "100.0% of" in page and ("is **met**" in page) == (ratios[0] >= 5)
