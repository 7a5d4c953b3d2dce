"""Timings a reader can trust: every plan timed per context in interleaved rounds beside the full prefill (its own
ratio the noise floor), kept beside the rows and joined onto them by key, never mixed with a row's single timing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from droidspeak.bench.answer_path import time_plans
from droidspeak.engine import sender_prefill
from droidspeak.track.records import TimingRecord, read_results
from droidspeak.track.results import ResultsFileError, append_row
from test_records import OLD_SWEEP_ROW

REPO = Path(__file__).resolve().parents[1]


def test_every_plan_is_timed_per_context_in_the_same_rounds_as_the_full_prefill(llama_pair):
    sender, receiver = llama_pair
    caches = sender_prefill(sender, [list(range(4, 40)), list(range(5, 30))], e_layers="all")
    layers = receiver.stack.num_layers
    timings = time_plans(receiver, caches, ["full_prefill", "full_reuse", "recompute:0-1"], layers,
                         repeats=3, warmup=1)
    assert [t.plan for t in timings] == ["full_prefill", "full_reuse", "recompute:0-1"]
    for timing in timings:
        assert (timing.contexts, timing.repeats, len(timing.ratios)) == (2, 3, 6)
        low, high = timing.spread
        assert low <= timing.speedup <= high
    baseline = timings[0].baseline_seconds
    assert all(t.baseline_seconds == baseline for t in timings)  # one full prefill per round, shared
    assert timings[0].plan_seconds != baseline  # the noise floor is a second run, not the same samples


def _timing(keys, speedup=3.0):
    return TimingRecord(keys=keys, pair="ft-a<-ft-b", task="mdqa", split="test", plan="recompute:0-1",
                        receiver="zoo:ft-a", sender="zoo:ft-b", prefill_seconds=0.1, baseline_prefill_seconds=0.3,
                        speedup=speedup, speedup_spread=[2.5, 3.5], ratios=[2.5, 3.0, 3.5], timed_contexts=3,
                        timed_repeats=1, warmup=1, context_tokens=[10, 11, 12], timed_path="p", device="cpu",
                        dtype="float32", git_sha="x", code_version="v", time="t").to_dict()


def test_rows_take_their_speedups_from_the_timings_beside_them_and_untimed_rows_lose_theirs(tmp_path):
    results = tmp_path / "results.jsonl"
    append_row(results, OLD_SWEEP_ROW)
    append_row(results, {**OLD_SWEEP_ROW, "key": "k2", "method": "full_reuse", "resolved_plan": "full_reuse"})
    assert [r.speedup for r in read_results(results)] == [2.0, 2.0]  # no timings: the rows' own
    (tmp_path / "timings.jsonl").write_text(json.dumps(_timing(["k1"])) + "\n")
    timed, untimed = read_results(results)
    assert (timed.speedup, timed.speedup_spread, timed.timed_contexts, timed.timed_repeats) == (3.0, [2.5, 3.5], 3, 1)
    assert untimed.speedup is None and untimed.speedup_spread is None  # never a single timing beside timed ones
    (tmp_path / "timings.jsonl").write_text(json.dumps(_timing(["k1", "gone"])) + "\n")
    with pytest.raises(ResultsFileError, match="timings.jsonl:1: times rows not in the results beside it"):
        read_results(results)
    (tmp_path / "timings.jsonl").write_text(json.dumps({**_timing(["k1"]), "speedup": "fast"}) + "\n")
    with pytest.raises(ResultsFileError, match="timings.jsonl:1: not a timing record"):
        read_results(results)


def test_retime_times_a_studys_rows_without_rescoring_them_and_resumes(tmp_path):
    shutil.copy(REPO / "reports" / "rows" / "results.jsonl", tmp_path / "results.jsonl")
    before = (tmp_path / "results.jsonl").read_text()
    command = [sys.executable, str(REPO / "experiments" / "retime.py"), "zoo=default",
               f"results={tmp_path / 'results.jsonl'}", "contexts=1", "repeats=1", "warmup=0", "threads=1",
               f"hydra.run.dir={tmp_path / 'hydra'}"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert (tmp_path / "results.jsonl").read_text() == before  # scores untouched
    records = [json.loads(line) for line in (tmp_path / "timings.jsonl").read_text().splitlines()]
    rows = read_results(tmp_path / "results.jsonl")
    timed = [r for r in rows if r.method != "sender"]
    assert {key for record in records for key in record["keys"]} == {r.key for r in timed}
    assert all(r.speedup is not None and r.timed_repeats == 1 for r in timed)
    assert all(r.speedup is None for r in rows if r.method == "sender")
    written = (tmp_path / "timings.jsonl").read_text()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert (tmp_path / "timings.jsonl").read_text() == written  # resumed: nothing timed twice
