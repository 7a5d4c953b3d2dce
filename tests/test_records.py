"""The one result-row schema: what the sweep and the profiler write is what figures read, old rows included."""

from __future__ import annotations

import json

import torch

from droidspeak.track.records import (
    SCHEMA_VERSION,
    ResultRow,
    cpu_matmul_flags,
    new_row,
    question_set_digest,
    read_results,
)
from droidspeak.track.results import append_row, read_rows
from droidspeak.track.version import code_version

OLD_SWEEP_ROW = {  # a version-1 row as the sweep wrote it before the schema (no source, split or schema)
    "kind": "eval", "key": "k1", "pair": "ft-a<-ft-b", "receiver": "zoo:ft-a", "sender": "zoo:ft-b", "task": "mdqa",
    "lm_eval_task": "droidspeak_mdqa", "method": "recompute", "plan": "recompute:0-1", "resolved_plan": "recompute:0-1",
    "metrics": {"f1": 0.9}, "metric": "f1", "quality": 0.9, "n_samples": 64, "num_layers": 8, "recomputed_layers": 2,
    "recomputed_fraction": 0.25, "transitions": 0, "bytes_loaded": 10, "cost": {"e_bytes": 0}, "prefill_seconds": 0.1,
    "baseline_prefill_seconds": 0.2, "speedup": 2.0, "timed_contexts": 4, "eval_seconds": 3.0, "sender_prefills": 16,
    "sender_cache_hits": 0, "device": "cpu", "dtype": "float32", "seed": 0, "git_sha": "abc1234", "family": "zoo-x",
    "time": "2026-11-27T10:00:00",
}


def test_old_rows_still_read_and_upgrade(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, OLD_SWEEP_ROW)
    append_row(path, {"kind": "run_start", "note": "not a result"})
    (row,) = read_results(path)
    assert row.schema == SCHEMA_VERSION and row.source == "sweep" and row.split == "test"
    assert row.quality == 0.9 and row.metrics == {"f1": 0.9} and row.speedup == 2.0


def test_a_row_round_trips_and_newer_keys_are_ignored(tmp_path):
    row = ResultRow.from_dict({**OLD_SWEEP_ROW, "source": "profile", "split": "profile", "schema": SCHEMA_VERSION,
                               "a_field_from_a_newer_writer": 1})
    path = tmp_path / "results.jsonl"
    append_row(path, row.to_dict())
    assert read_results(path) == [row]
    assert "a_field_from_a_newer_writer" not in read_rows(path)[0]


def test_a_torn_last_line_is_ignored_then_cut_off_by_the_next_writer(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, OLD_SWEEP_ROW)
    with path.open("a") as handle:
        handle.write('{"kind": "eval", "key": "torn')
    assert [r.key for r in read_results(path)] == ["k1"]
    append_row(path, {**OLD_SWEEP_ROW, "key": "k2"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k2"]


def test_job_files_are_read_until_merged_then_merged_once(tmp_path):
    from droidspeak.track.results import finished_keys, job_file, merge_jobs, read_all_rows, write_job_row

    results = tmp_path / "results.jsonl"
    append_row(results, {"kind": "eval", "key": "a"})
    write_job_row(results, {"kind": "eval", "key": "b"})
    write_job_row(results, {"kind": "eval", "key": "a"})  # a rerun's duplicate of a merged point
    job_file(results, "torn").write_text('{"kind": "eval", "key": "c')  # a job killed mid-write: never counted
    assert [r["key"] for r in read_all_rows(results)] == ["a", "b"] and finished_keys(results) == {"a", "b"}
    assert merge_jobs(results) == 1
    assert [r["key"] for r in read_rows(results)] == ["a", "b"] and not list((tmp_path / "jobs").iterdir())
    assert merge_jobs(results) == 0 and len(read_rows(results)) == 2


def test_version_2_rows_read_as_version_3_with_an_unknown_question_set(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, {**OLD_SWEEP_ROW, "source": "sweep", "split": "test", "schema": 2})
    (row,) = read_results(path)
    assert row.schema == SCHEMA_VERSION == 3 and row.question_set is None


def test_the_question_set_digest_tells_question_sets_apart():
    base = question_set_digest("mdqa", "test", 64, "sha-of-the-split-file")
    assert base == question_set_digest("mdqa", "test", 64, "sha-of-the-split-file")
    others = {question_set_digest("mdqa", "profile", 64, "sha-of-the-split-file"),
              question_set_digest("mdqa", "test", 16, "sha-of-the-split-file"),
              question_set_digest("mdqa", "test", 64, "another-version"),
              question_set_digest("code", "test", 64, "sha-of-the-split-file")}
    assert base not in others and len(others) == 4


def test_new_row_fills_provenance_from_what_ran():
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    row = new_row(model, key="k", source="sweep", pair="a<-b", task="mdqa", split="test", method="full_prefill",
                  plan="full_prefill", resolved_plan="full_prefill", metric="f1", quality=1.0, n_samples=1,
                  num_layers=2, recomputed_fraction=1.0, prefill_seconds=None, baseline_prefill_seconds=None,
                  speedup=None, eval_seconds=0.0)
    assert row.dtype == "bfloat16" and row.device.startswith("cpu (") and "threads" in row.device
    assert row.code_version == code_version() and row.git_sha and row.time[:4].isdigit()


def test_a_cpu_row_names_the_instruction_sets_its_matmuls_ran_on(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_matmul_flags(str(cpuinfo)) == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    cpuinfo.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_matmul_flags(str(cpuinfo)) == ["avx2"]
    assert cpu_matmul_flags(str(tmp_path / "absent")) == []
