"""Nothing lost, nothing reused across identities: stale rows, concurrent writers, fault points, bad inputs, and
the campaign itself in a reduced form (the full one writes reports/robustness.md)."""

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from droidspeak.engine.cache import ContextCache
from droidspeak.robustness.bad_inputs import CASES, Bench, try_all
from droidspeak.track.results import (
    StaleResultsError,
    append_row,
    check_code_version,
    merge_jobs,
    read_all_rows,
    read_rows,
    stale_file,
    write_job_row,
)
from droidspeak.track.version import code_version

ROOT = Path(__file__).resolve().parents[1]


def rows(*keys, version="v1"):
    return [{"kind": "eval", "key": k, "quality": 0.5, "code_version": version} for k in keys]


def test_code_version_hashes_the_engine_not_the_figures():
    version = code_version()
    assert version.startswith("0.") and "+" in version and len(version.split("+")[1]) == 12


def test_rows_of_another_code_version_are_refused_kept_or_moved_never_mixed(tmp_path):
    results = tmp_path / "results.jsonl"
    for row in rows("a", "b", version="old") + rows("c", version="new"):
        append_row(results, row)
    with pytest.raises(StaleResultsError, match=r"2 rows computed by other code \(old: 2\); this code is new"):
        check_code_version(results, "new")
    assert check_code_version(results, "new", "keep") == 2 and len(read_rows(results)) == 3  # kept, still marked
    assert check_code_version(results, "new", "move") == 2
    assert [r["key"] for r in read_rows(results)] == ["c"]
    assert [r["key"] for r in read_rows(stale_file(results))] == ["a", "b"]  # set aside, nothing lost
    assert check_code_version(results, "new") == 0  # nothing stale left
    with pytest.raises(StaleResultsError, match="choose one of"):
        check_code_version(results, "new", "ignore")


def test_a_row_without_a_code_version_is_stale(tmp_path):
    results = tmp_path / "results.jsonl"
    append_row(results, {"kind": "eval", "key": "a", "quality": 1.0})
    with pytest.raises(StaleResultsError, match="None: 1"):
        check_code_version(results, "new")


def _append_many(path: str, start: int) -> None:
    for i in range(40):
        append_row(path, {"kind": "eval", "key": f"k{(start + i) % 40}", "writer": start, "pad": "x" * 2000})


def test_four_processes_appending_the_same_points_write_each_once_and_tear_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    procs = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(str(path), 10 * w)) for w in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    lines = path.read_text().splitlines()
    assert len(lines) == 40 and len({json.loads(line)["key"] for line in lines}) == 40


def test_concurrent_merges_and_job_writers_of_one_key_lose_and_duplicate_nothing(tmp_path):
    results = tmp_path / "results.jsonl"
    for row in rows("a", "b", "c"):
        write_job_row(results, row)
        write_job_row(results, row)  # a second job computed the same point: one file, replaced whole
    threads = [threading.Thread(target=merge_jobs, args=(results,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["key"] for r in read_rows(results)) == ["a", "b", "c"]
    assert read_all_rows(results) == read_rows(results) and not list((tmp_path / "jobs").iterdir())


def test_two_writers_saving_one_cache_never_leave_a_torn_file(tmp_path):
    cache = ContextCache(
        token_ids=torch.arange(64),
        keys=[torch.randn(2, 64, 8) for _ in range(3)],
        values=[torch.randn(2, 64, 8) for _ in range(3)],
        hidden={1: torch.randn(64, 16)},
        sender="s" * 64,
    )
    path = tmp_path / "c.safetensors"
    threads = [threading.Thread(target=cache.save, args=(path,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(ContextCache.load(path).keys[2], cache.keys[2])
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left behind


def test_a_fault_point_kills_the_process_there_and_only_there(tmp_path):
    code = ("from droidspeak.track.results import append_row; import sys; "
            "[append_row(sys.argv[1], {'key': str(i)}) for i in range(5)]")
    env = {**os.environ, "DROIDSPEAK_FAULT": "result_append:3"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.jsonl")], env=env, timeout=120)
    assert done.returncode == -9
    text = (tmp_path / "r.jsonl").read_text()
    assert text.count("\n") == 2 and not text.endswith("\n")  # two rows and half of the third: a torn line
    assert [r["key"] for r in read_rows(tmp_path / "r.jsonl")] == ["0", "1"]
    append_row(tmp_path / "r.jsonl", {"key": "2"})  # the next writer cuts the torn line off first
    assert [r["key"] for r in read_rows(tmp_path / "r.jsonl")] == ["0", "1", "2"]


def test_every_bad_input_gives_one_clear_error_on_the_mini_family(mini_family, tmp_path, monkeypatch):
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(mini_family[1].root.parent))
    outcomes = try_all(Bench(mini_family[1], tmp_path))
    assert len(outcomes) == len(CASES) >= 71  # 33 from the first campaign, 38 from the no-silent-answer issue
    unclear = [(o.name, o.observed, o.error, o.message) for o in outcomes if not o.ok]
    assert not unclear


@pytest.mark.slow
def test_the_campaign_runs_in_a_reduced_form_and_writes_its_report(mini_family, tmp_path):
    env = {**os.environ, "DROIDSPEAK_CACHE": str(mini_family[1].root.parent), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "robustness.py"), "zoo=mini", "kill_trials=2", "writers=2",
         "layers=[0-0,2-3]", "limit=4", "memory_limit=8", f"work_dir={tmp_path / 'work'}", f"out_dir={tmp_path}",
         "progress=false"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tallies = json.loads((tmp_path / "robustness.json").read_text())  # kept beside the page, which re-renders from it
    assert tallies["config"]["points"] == 2  # the clean sweep's rows: what every trial is checked against
    assert sum(k["killed"] for k in tallies["kills"]) == 2 and all(k["ok"] for k in tallies["kills"])
    assert tallies["writers"]["ok"] and tallies["memory"]["ok"] and tallies["memory"]["bounded"]["evictions"] > 0
    bounded = tallies["memory"]["bounded"]
    assert bounded["sender_prefills"] > bounded["distinct_contexts"]  # evicted contexts were prefilled anew
    page = (tmp_path / "robustness.md").read_text()
    for heading in ("## Bad inputs", "## Kills", "## Concurrent writers", "## Memory bound"):
        assert heading in page
    (tmp_path / "robustness.md").unlink()
    again = subprocess.run([sys.executable, str(ROOT / "experiments" / "robustness.py"), "render_only=true",
                            f"out_dir={tmp_path}", f"work_dir={tmp_path / 'work'}"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "robustness.md").read_text() == page
