"""Held-out tables: bootstrap intervals over questions (or whole contexts), paired differences, and which rows
count."""

from __future__ import annotations

import pytest

from droidspeak.figures.glance import split_label
from droidspeak.figures.heldout import baselines_on, heldout, markdown, one_held_out_split
from droidspeak.figures.intervals import bootstrap_interval, paired_difference_interval, sign_flip_p
from droidspeak.figures.style import FigureDataError


def test_interval_holds_the_mean_and_narrows_with_more_questions():
    few = [1.0, 0.0] * 8
    many = [1.0, 0.0] * 128
    low, high = bootstrap_interval(few)
    assert low < 0.5 < high and bootstrap_interval(few) == (low, high)  # deterministic
    wide, narrow = high - low, bootstrap_interval(many)[1] - bootstrap_interval(many)[0]
    assert narrow < wide / 2


def test_paired_difference_sees_what_unpaired_intervals_miss():
    receiver = [1.0] * 30 + [0.0] * 34
    plan = [1.0] * 29 + [
        0.0
    ] * 35  # one answer lost: the intervals overlap, the paired difference does not hold 0 above
    low, high = paired_difference_interval(plan, receiver)
    assert high <= 0 and low < 0
    assert paired_difference_interval(receiver, receiver) == (0, 0)
    with pytest.raises(ValueError, match="same questions"):
        paired_difference_interval(plan[:-1], receiver)


def test_contexts_resampled_whole_widen_an_interval_their_questions_share():
    """Four questions per context that always agree: 16 contexts are 16 draws, not 64, so the interval that resamples
    contexts is about twice as wide (sqrt 4); one question per context is the question bootstrap exactly."""
    scores = [float(c % 2) for c in range(16) for _ in range(4)]
    contexts = [f"c{c}" for c in range(16) for _ in range(4)]
    by_question, by_context = bootstrap_interval(scores), bootstrap_interval(scores, clusters=contexts)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(by_context) > 1.6 * width(by_question)
    assert bootstrap_interval(scores, clusters=list(range(64))) == by_question
    with pytest.raises(ValueError, match="cluster labels"):
        bootstrap_interval(scores, clusters=contexts[:-1])


def test_the_sign_flip_test_flips_a_contexts_questions_together():
    """Four contexts, each losing all four of its questions: 16 independent losses would be overwhelming (p < 0.001);
    4 contexts' worth of evidence is not (p = 2 / 2^4)."""
    diffs, contexts = [-1.0] * 16, [c for c in range(4) for _ in range(4)]
    assert sign_flip_p(diffs) < 0.001
    assert sign_flip_p(diffs, clusters=contexts) == pytest.approx(2 / 16)


def _row(method, quality, scores, split="test", source="sweep", plan=None):
    return {"pair": "r<-s", "task": "t", "metric": "f1", "num_layers": 30, "split": split, "source": source,
            "method": method, "plan": plan or method, "resolved_plan": plan or method, "quality": quality,
            "per_sample": scores, "n_samples": len(scores or [0, 0]), "recomputed_fraction": 0.2, "speedup": 3.0}


def test_the_table_takes_test_split_sweep_rows_in_a_fixed_order():
    rows = [
        _row("cacheblend", 0.5, [0.5, 0.5], plan="cacheblend:0.2"),
        _row("profile", 0.75, [1.0, 0.5], plan="recompute:4-9"),
        _row("full_reuse", 0.25, [0.5, 0.0]),
        _row("full_prefill", 1.0, [1.0, 1.0]),
        _row("recompute", 0.9, [0.9, 0.9], split="profile", source="profile"),  # the profiler's own rows: not held out
    ]
    [panel] = heldout(rows)
    assert [e["method"] for e in panel["rows"]] == ["full_prefill", "full_reuse", "profile", "cacheblend"]
    chosen = panel["rows"][2]
    assert chosen["plan"] == "recompute:4-9" and chosen["delta"] == pytest.approx(-0.25)
    text = "\n".join(markdown([panel]))
    assert "plan chosen on the profile split" in text and "`recompute:4-9`" in text and "-0.250" in text


def test_rows_without_per_question_scores_show_no_interval():
    [panel] = heldout([_row("full_prefill", 1.0, None), _row("profile", 1.0, None, plan="full_reuse")])
    assert panel["rows"][0]["ci"] is None and "| – |" in "\n".join(markdown([panel]))
    assert heldout([_row("full_prefill", 1.0, [1.0])]) == []  # no plan chosen elsewhere: nothing held out


def test_cacheblend_is_chosen_on_the_profile_split_and_compared_with_droidspeak_on_the_test_split():
    def blend(plan, quality, scores, split):
        return {**_row("cacheblend", quality, scores, split=split, plan=plan), "recomputed_fraction": 1 / 3}

    rows = [
        _row("full_prefill", 1.0, [1.0, 1.0, 1.0, 1.0]),
        {**_row("recompute", 0.5, [1.0, 0.0, 1.0, 0.0], plan="recompute:10-19"), "recomputed_fraction": 1 / 3},
        blend("cacheblend:0.333", 0.9, [1.0, 1.0, 1.0, 0.5], "test"),  # best on test, not where the choice is made
        blend("cacheblend:0.231@4", 0.75, [1.0, 1.0, 0.5, 0.5], "test"),
        blend("cacheblend:0.333", 0.5, [0.5] * 4, "profile"),
        blend("cacheblend:0.231@4", 0.8, [0.8] * 4, "profile"),
    ]
    [panel] = heldout(rows)
    marked = {e["plan"]: (e["chosen"], e["profile_quality"]) for e in panel["rows"] if e["method"] == "cacheblend"}
    assert marked == {"cacheblend:0.333": (False, 0.5), "cacheblend:0.231@4": (True, 0.8)}
    versus = panel["versus"]
    assert versus["cacheblend"] == "cacheblend:0.231@4" and versus["droidspeak"] == "recompute:10-19"
    assert versus["delta"] == pytest.approx(0.25) and versus["delta_ci"][1] > 0
    text = "\n".join(markdown([panel]))
    assert "0.800 on the profile split, chosen there" in text and "minus DroidSpeak's `recompute:10-19`" in text
    assert heldout(rows[:4]) == []  # nothing chosen on the profile split: a recompute sweep is in-sample, not held out
    swept = heldout([*rows, _row("profile", 0.75, [1.0, 0.5, 1.0, 0.5], plan="recompute:4-9")])
    assert [e["method"] for e in swept[0]["rows"]][:2] == ["full_prefill", "profile"]  # a profile's plan first


def test_each_held_out_split_is_its_own_panel_and_a_page_summarizes_the_wide_one_only():
    rows = [_row(m, q, s, split=split) for split in ("test", "test_wide", "dev")
            for m, q, s in (("full_prefill", 1.0, [1.0, 1.0]), ("profile", 0.5, [1.0, 0.0]))]
    panels = heldout(rows)
    assert [p["split"] for p in panels] == ["test", "test_wide"]  # the dev split tunes recipes: never reported
    assert "test_wide split" in "\n".join(markdown(panels[1:]))
    assert {r["split"] for r in one_held_out_split(rows)} == {"test_wide"}  # never an average over two splits
    assert {r["split"] for r in one_held_out_split([r for r in rows if r["split"] != "test_wide"])} == {"test"}
    assert split_label("test_wide", 128) == "128 q., test_wide" and split_label("test", 64) == "64 q."


def test_a_pair_is_informative_only_with_a_receiver_in_range_a_weak_sender_and_a_costly_full_reuse():
    from droidspeak.figures.study_page import _informative_table
    from droidspeak.sweep.config import InformativeCriteria

    criteria = vars(InformativeCriteria())
    receiver = [1.0] * 8 + [0.0] * 2  # 0.8
    cases = {  # sender, full reuse: the receiver's scores with some answers lost
        "yes": ([0.0] * 10, [1.0] * 6 + [0.0] * 4),  # full reuse 0.6: loses 25%
        "cheap reuse": ([0.0] * 10, [1.0] * 8 + [0.0] * 2),
        "strong sender": ([1.0] * 7 + [0.0] * 3, [1.0] * 6 + [0.0] * 4),  # 0.7: only 0.1 below
    }
    panels = [heldout([{**r, "pair": name} for r in (
        _row("full_prefill", 0.8, receiver), _row("sender", sum(s) / 10, s, plan="full_prefill"),
        _row("full_reuse", sum(f) / 10, f), _row("profile", 0.8, receiver, plan="recompute:0-9"))])[0]
        for name, (s, f) in cases.items()]
    lines = _informative_table(panels, criteria)
    verdicts = {line.split(" | ")[0].strip("| "): line.rsplit(" | ", 1)[1].strip(" |") for line in lines[2:]}
    assert verdicts == {"yes": "**yes**", "cheap reuse": "no", "strong sender": "no"}
    assert "25% [" in lines[2] and "| 0.800 [" in lines[2]
    saturated = heldout([{**r, "pair": "saturated"} for r in (
        _row("full_prefill", 1.0, [1.0] * 10), _row("sender", 0.0, [0.0] * 10, plan="full_prefill"),
        _row("full_reuse", 0.5, [1.0] * 5 + [0.0] * 5), _row("profile", 1.0, [1.0] * 10, plan="recompute:0-9"))])
    assert _informative_table(saturated, criteria)[2].count("**no**") == 1  # only the receiver's range fails
    on_the_line = heldout([{**r, "pair": "edge"} for r in (  # 0.5 - 0.7 is -0.19999...: printed -0.200, it meets
        _row("full_prefill", 0.7, [1.0] * 7 + [0.0] * 3),
        _row("sender", 0.5, [1.0] * 5 + [0.0] * 5, plan="full_prefill"),
        _row("full_reuse", 0.63, [0.9] * 7 + [0.0] * 3), _row("profile", 0.7, [1.0] * 7 + [0.0] * 3, plan="x"))])
    assert _informative_table(on_the_line, criteria)[2].endswith("| **yes** |")
    unpaired = heldout([{**r, "pair": "bare"} for r in (  # no per-question scores, a receiver scoring 0: undecided
        _row("full_prefill", 0.0, None), _row("sender", 0.0, None, plan="full_prefill"),
        _row("full_reuse", 0.0, None), _row("profile", 0.0, None, plan="x"))])
    line = _informative_table(unpaired, criteria)[2]
    assert line.count("–") == 4 and line.endswith("| no |")  # the receiver is out of range: decided on that alone


def test_the_page_names_each_informative_pair_whose_interval_reaches_past_a_criterion():
    """The verdicts are point estimates: an informative pair whose interval crosses a bound is named with the bound,
    a pair whose intervals clear every bound is not, and a pair that is not informative is no business of this."""
    from droidspeak.figures.study_page import _margins_text
    from droidspeak.sweep.config import InformativeCriteria

    criteria = vars(InformativeCriteria())

    def panel(name: str, receiver: list[float], reuse: list[float]) -> dict:
        return heldout([{**r, "pair": name} for r in (
            _row("full_prefill", sum(receiver) / len(receiver), receiver),
            _row("sender", 0.0, [0.0] * len(receiver), plan="full_prefill"),
            _row("full_reuse", sum(reuse) / len(reuse), reuse),
            _row("profile", 0.8, receiver, plan="recompute:0-9"))])[0]

    clear = panel("clear", [1.0] * 80 + [0.5] * 20, [0.5] * 100)  # 0.900 on 100 questions, full reuse loses 44%
    wide = panel("wide", [1.0] * 8 + [0.0] * 2, [1.0] * 6 + [0.0] * 4)  # 0.8 on 10 questions: an interval of ±0.2
    cheap = panel("cheap", [1.0] * 8 + [0.0] * 2, [1.0] * 8 + [0.0] * 2)  # full reuse loses nothing: not informative
    assert _margins_text([clear], criteria) == ("The informative pair meets every criterion across its whole 95% "
                                                "intervals.")
    text = _margins_text([clear, wide, cheap], criteria)
    assert text.startswith("Point estimates decide, and 1 of the 2 informative pairs")
    assert "wide: the receiver's interval down to" in text and "(below 0.70)" in text and "(above 0.98)" in text
    assert "clear" not in text and "cheap" not in text
    assert _margins_text([cheap], criteria) == ""


def test_receivers_are_placed_against_the_range_and_those_that_move_between_splits_are_named():
    from droidspeak.figures.study_page import ReceiverRange

    splits = {"steady": {"test_wide": 0.9, "dev": 0.85, "profile": 0.88},
              "saturated": {"test_wide": 0.992, "dev": 0.958, "profile": 0.99},
              "weak": {"test_wide": 0.434, "dev": 0.469}}
    placed = ReceiverRange(splits, "test_wide", 0.70, 0.98)
    assert placed.placed(["saturated", "weak"]) == ("saturated (0.992, above the range: saturated) and "
                                                    "weak (0.434, below the range: weak)")
    assert placed.disagreements() == ("saturated is above the range on test_wide (0.992), in range on the dev split "
                                      "(0.958)")
    assert placed.tried_only() == ""
    tried = ReceiverRange({**splits, "tried": {"dev": 0.979}}, "test_wide", 0.70, 0.98)
    assert tried.tried_only() == "tried (0.979 on the dev split, in range)"  # a recipe no other split scored


def test_a_task_no_pair_makes_informative_is_named_with_the_criterion_every_panel_misses(tmp_path):
    """The sentence is the panels' own verdicts across pages (a dev panel two pages share counted once); a task with
    one informative panel, or panels missing different criteria, is not said to fail on one criterion."""
    import json

    from droidspeak.figures.study_page import never_informative
    from droidspeak.sweep.config import InformativeCriteria

    criteria = vars(InformativeCriteria())

    def panel(pair: str, split: str, reuse: list[float], sender: float = 0.0) -> dict:
        receiver = [1.0] * 9 + [0.0]  # 0.9
        return baselines_on([{**r, "pair": pair, "split": split, "task": pair.split("-")[0]} for r in (
            _row("full_prefill", 0.9, receiver), _row("sender", sender, [sender] * 10, plan="full_prefill"),
            _row("full_reuse", sum(reuse) / 10, reuse))], split)[0]

    cheap = [1.0] * 8 + [0.0] * 2  # full reuse 0.8: loses 11% of 0.9, enough
    cheaper = [1.0] * 9 + [0.0]  # loses nothing
    pages = {"study": {"held_out": [panel("fieldqa-a", "test_wide", cheaper)],
                       "dev": [panel("fieldqa-a", "dev", cheaper), panel("fieldqa-b", "dev", [0.95] * 9 + [0.0]),
                               panel("code-a", "dev", cheap)]},
             "aside": {"dev": [panel("fieldqa-a", "dev", cheaper),
                               panel("mixed-a", "dev", cheaper), panel("mixed-b", "dev", cheap, sender=0.8)]}}
    for name, summary in pages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    own = {f"{task}-{r}": task for task in ("fieldqa", "code", "mixed") for r in "ab"}
    text = never_informative([tmp_path / "study", tmp_path / "aside"], own, criteria)
    assert text == ("No pair on fieldqa is informative on any split it was scored on (dev and test_wide; 3 panels, "
                    "2 pairs): in every one, full reuse loses too little of the receiver's quality (point estimates "
                    "at most 5%, under 10%). No pair on mixed is informative on any split it was scored on (dev; "
                    "2 panels, 2 pairs): each misses a criterion, no one criterion in all.")


def test_the_profile_table_keeps_each_receiver_on_its_own_task_and_names_the_transfer_apart():
    from droidspeak.figures.study_page import _profile_section

    def entry(pair: str, task: str) -> dict:
        return {"pair": pair, "task": task, "receiver": 0.8, "full_reuse": 0.6, "critical_layers": [3],
                "chosen_plan": "recompute:0-4", "chosen_layers": 5, "num_layers": 30, "chosen_quality": 0.8,
                "uses_e_cache": False, "questions": 48}

    lines = _profile_section({"profiles": [entry("a<-base", "code"), entry("a<-base", "qa")], "tolerance": 0.05},
                             {"a": "code"})
    assert sum(line.startswith("| a<-base |") for line in lines) == 1 and "| code |" in lines[2]
    assert lines[-1].endswith("(the transfer section below): a<-base on qa.") and ": 0 of 1." in lines[-1]
    together = [{**entry(f"{name}<-base", "code"), "rule": "bootstrap95", "together_rule": "simultaneous95",
                 "chosen_together": plan} for name, plan in (("a", "recompute:0-4"), ("b", "recompute:0-9"))]
    lines = _profile_section({"profiles": [*together, entry("c<-base", "code")], "tolerance": 0.05},
                             {"a": "code", "b": "code", "c": "code"})
    assert "plan chosen at 5% (bootstrap95)" in lines[0]
    assert "chosen by simultaneous95 (bounds holding for all the profile's plans" in lines[0]
    cells = {line.split(" | ")[0].strip("| "): line.split(" | ")[8] for line in lines[2:5]}
    assert cells == {"a<-base": "same", "b<-base": "`recompute:0-9` (10/30)", "c<-base": "–"}  # c: none applies


def test_a_speedup_is_judged_against_the_layer_count_bound_by_its_median_and_its_range():
    """18/6 = 3.00x counts every layer as equal cost: a range reaching above it is layer costs, a whole range above
    it is a timing fault, and neither may read as plainly "within the bound"."""
    from droidspeak.figures.study_page import _bound_verdict

    assert _bound_verdict(2.5, 2.4, 2.9, 3.0) == "within the bound"
    assert _bound_verdict(2.99, 2.87, 3.32, 3.0).startswith("median within the layer-count bound, range reaching above")
    assert _bound_verdict(3.1, 2.9, 3.3, 3.0).startswith("median above the layer-count bound, range straddling")
    assert _bound_verdict(3.5, 3.2, 3.8, 3.0) == "above the bound: the timing is off"


def test_a_split_whose_contexts_are_known_resamples_them_and_refuses_scores_of_other_questions():
    rows = [_row("full_prefill", 1.0, [1.0] * 8), _row("profile", 0.5, [1.0] * 4 + [0.0] * 4, plan="recompute:4-9")]
    [by_question] = heldout(rows)
    [by_context] = heldout(rows, {"t": {"test": ["a"] * 4 + ["b"] * 4}})
    assert (by_question["resampled"], by_context["resampled"], by_context["contexts"]) == ("questions", "contexts", 2)
    assert by_context["rows"][1]["delta_ci"] == (-1.0, 0.0) != by_question["rows"][1]["delta_ci"]
    assert "intervals resample its 2 contexts whole" in "\n".join(markdown([by_context]))
    with pytest.raises(FigureDataError, match="scored on other questions"):
        heldout(rows, {"t": {"test": ["a"] * 4 + ["b"] * 3}})
    limited = [_row("full_prefill", 1.0, [1.0] * 6), _row("profile", 0.5, [1.0] * 4 + [0.0] * 2, plan="recompute:4-9")]
    [first_six] = heldout(limited, {"t": {"test": ["a"] * 4 + ["b"] * 4}})  # lm-eval's limit: the first 6 questions
    assert first_six["contexts"] == 2 and first_six["rows"][1]["delta_ci"] == (-1.0, 0.0)  # b drawn twice: -4 of 4


def test_lm_evals_documents_come_in_the_task_files_order_the_context_layout_assumes(mini_family, tmp_path):
    """A row's per-question scores are sorted by lm-eval's doc_id and resampled by the family's layout of contexts
    read from the task file: the two agree only if lm-eval numbers the file's rows in order, at every limit."""
    from lm_eval.tasks import TaskManager

    from droidspeak.figures.study_page import question_contexts
    from droidspeak.lmeval.task_yaml import embedded_task_name, write_embedded_tasks

    _, family = mini_family
    layout = question_contexts(family.task_files)
    task = sorted(family.task_files)[0]
    include = write_embedded_tasks(family.task_files, tmp_path / "tasks", split="test")
    name = embedded_task_name(task)
    docs = list(TaskManager(include_path=str(include)).load(name)["tasks"][name].test_docs())
    assert len(set(layout[task]["test"])) > 1  # several contexts: an order to get wrong
    assert [doc["context_id"] for doc in docs] == layout[task]["test"]


def test_the_dev_split_gives_each_recipe_its_baselines_and_nothing_else():
    """A recipe is judged on the dev split by its receiver, the sender answering and full reuse; a plan scored there,
    or the same baselines on another split, is not part of that judgement."""
    rows = [_row("full_prefill", 0.75, [1.0, 0.5, 1.0, 0.5], split="dev"),
            _row("sender", 0.25, [0.5, 0.0, 0.5, 0.0], split="dev"),
            _row("full_reuse", 0.625, [1.0, 0.0, 1.0, 0.5], split="dev"),
            _row("profile", 0.75, [1.0, 0.5, 1.0, 0.5], split="dev", plan="recompute:4-9"),
            _row("full_prefill", 1.0, [1.0, 1.0], split="test")]
    [panel] = baselines_on(rows, "dev", {"t": {"dev": ["a", "a", "b", "b"]}})
    assert [e["method"] for e in panel["rows"]] == ["full_prefill", "sender", "full_reuse"]
    assert (panel["split"], panel["resampled"], panel["contexts"]) == ("dev", "contexts", 2)
    assert panel["rows"][2]["delta"] == -0.125 and panel["rows"][2]["delta_ci"] == (-0.25, 0.0)  # a's loss, or b's none
    assert baselines_on(rows, "profile") == [] and baselines_on(rows[1:], "dev") == []  # no receiver: no panel
