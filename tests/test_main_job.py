"""The main job end to end on the miniature family: sweeps, resume after a kill, W&B offline, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from droidspeak.track.results import read_all_rows, read_rows

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(mini_family):
    cache = mini_family[1].root.parent  # every job finds the session's family there instead of training its own
    return {
        **os.environ,
        "DROIDSPEAK_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
    }


def evaluate(env, out, *overrides, multirun=False, check=True, popen=False):
    cmd = [sys.executable, str(ROOT / "experiments" / "evaluate.py"), *(["-m"] if multirun else []), "zoo=mini",
           f"output_root={out}", "timing.repeats=1", *overrides]
    env = {k: v for k, v in env.items() if v != ""}
    if popen:
        return subprocess.Popen(
            cmd, env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
    done = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(done.stdout[-3000:] + done.stderr[-3000:])
    return done


def test_two_point_sweep_writes_jsonl_and_offline_wandb_and_resumes(env, tmp_path):
    evaluate(env, tmp_path, "method=full_prefill,full_reuse", multirun=True)
    rows = read_rows(tmp_path / "default" / "results.jsonl")
    assert sorted(r["method"] for r in rows) == ["full_prefill", "full_reuse"]
    for row in rows:
        for field in (
            "pair",
            "task",
            "plan",
            "metrics",
            "recomputed_fraction",
            "prefill_seconds",
            "baseline_prefill_seconds",
            "device",
            "seed",
            "git_sha",
            "quality",
        ):
            assert field in row, field
    assert {r["recomputed_fraction"] for r in rows} == {0.0, 1.0}
    runs = list((tmp_path / "default" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(any(run.glob("*.wandb")) for run in runs)
    # a rerun of the same sweep evaluates nothing and duplicates nothing
    again = evaluate(env, tmp_path, "method=full_prefill,full_reuse", multirun=True)
    assert again.stdout.count("skip") + again.stderr.count("skip") == 2
    assert len(read_rows(tmp_path / "default" / "results.jsonl")) == 2


def test_a_killed_sweep_resumes_without_loss_or_duplicates(env, tmp_path):
    layers = "0-0,1-1,2-2,3-3"
    results = tmp_path / "default" / "results.jsonl"
    proc = evaluate(
        env, tmp_path, "logger=none", "method=recompute", f"method.layers={layers}", multirun=True, popen=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(read_all_rows(results)) < 1:  # finished jobs' own files, not merged yet
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_all_rows(results))
    assert 1 <= done_before < 4, "the kill must land mid-sweep"
    (results.parent / "jobs" / "killed.jsonl").write_text('{"kind": "eval", "key": "torn')  # killed mid-write
    again = evaluate(env, tmp_path, "logger=none", "method=recompute", f"method.layers={layers}", multirun=True)
    assert again.stdout.count("skip") + again.stderr.count("skip") == done_before
    rows = read_rows(results)
    assert sorted(r["plan"] for r in rows) == [f"recompute:{g}-{g}" for g in range(4)]
    assert len({r["key"] for r in rows}) == 4 and not list((results.parent / "jobs").iterdir())  # all merged


def test_a_sweep_through_submitit_runs_each_job_apart_and_merges_them(env, tmp_path):
    """The SLURM launcher's code path, on this machine: submitit's local executor runs each point as its own
    process; each writes its own file; the sweep's end merges them with nothing lost or duplicated."""
    sweep = ("logger=none", "hydra/launcher=submitit_local", "method=full_prefill,full_reuse")
    done = evaluate(env, tmp_path, *sweep, multirun=True)
    results = tmp_path / "default" / "results.jsonl"
    rows = read_rows(results)
    assert sorted(r["method"] for r in rows) == ["full_prefill", "full_reuse"]
    assert "merged 2 job result(s)" in done.stdout + done.stderr
    assert list(tmp_path.glob("default/sweeps/*/.submitit/*")), "the jobs ran through submitit"
    assert not list((tmp_path / "default" / "jobs").iterdir())
    evaluate(env, tmp_path, *sweep, multirun=True)  # resumed: both skipped, nothing duplicated
    assert len(read_rows(results)) == 2


def test_unknown_task_and_out_of_range_plan_fail_clearly(env, tmp_path):
    bad_task = evaluate(env, tmp_path, "logger=none", "pair.task=no_such_task", check=False)
    assert bad_task.returncode != 0 and "unknown embedded task 'no_such_task'" in bad_task.stderr
    bad_plan = evaluate(env, tmp_path, "logger=none", "method=recompute", "method.layers=2-9", check=False)
    assert bad_plan.returncode != 0 and "4 layers" in bad_plan.stderr
    unknown_pair = evaluate(env, tmp_path, "pair=no_such_pair", check=False)
    assert unknown_pair.returncode != 0 and "no_such_pair" in unknown_pair.stderr


def test_online_wandb_without_login_fails_before_any_compute(env, tmp_path):
    bare = {**env, "HOME": str(tmp_path), "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")}
    done = evaluate(bare, tmp_path, "logger=wandb_online", check=False)
    assert done.returncode != 0 and "wandb login" in done.stderr
    assert not (tmp_path / "default" / "results.jsonl").exists()


def test_figures_rebuild_reports_from_the_jsonl_alone(env, tmp_path):
    evaluate(env, tmp_path, "logger=none", "method=full_prefill,full_reuse,sender", multirun=True)
    evaluate(env, tmp_path, "logger=none", "method=recompute", "method.layers=0-1,2-3", multirun=True)
    results = tmp_path / "default" / "results.jsonl"
    out = tmp_path / "reports"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "figures.py"),
            f"results={results}",
            f"out_dir={out}",
            "logger=wandb_offline",
            "run_name=test",
        ],
        env={k: v for k, v in env.items() if v != ""},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["in_sample"][0]["plans_measured"] == 4  # full reuse, two groups, full prefill
    assert summary["held_out"] == []  # no method=profile point in this sweep
    rows = read_rows(results)
    assert all(len(r["per_sample"]) == r["n_samples"] for r in rows)  # each question's score, for the intervals
    assert [r["quality"] for r in rows] == pytest.approx([sum(r["per_sample"]) / r["n_samples"] for r in rows])
    for stem in ("fig06_quality_bars", "fig14_quality_vs_speedup", "fig14_quality_vs_fraction"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").exists()
    assert "| ft-mdqa<-base | mdqa |" in (out / "summary.md").read_text()
    assert list((tmp_path / "outputs" / "test" / "wandb").glob("offline-run-*"))  # never beside the rows it reads

    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "wandb_report.py"), f"results={results}",
                           f"out_dir={out}", "run_name=default"], env={k: v for k, v in env.items() if v != ""},
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "logger=wandb_online" in done.stdout  # says how to publish
    spec = json.loads((out / "wandb_report.json").read_text())
    grids = [b for b in spec["blocks"] if b["type"] == "PanelGrid"]
    pair_grid = grids[0]
    assert 'Config("pair.name") == "ft-mdqa<-base"' in pair_grid["runsets"][0]["filters"]
    assert [p["type"] for p in pair_grid["panels"]] == ["ScatterPlot", "BarPlot", "ScatterPlot"]
    assert {p["type"] for p in grids[-1]["panels"]} == {"MediaBrowser", "WeavePanelSummaryTable"}
    assert (out / "fig06_quality_bars.png").exists()


def test_quickstart_example_runs(env, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "zoo=mini"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in env.items() if v != ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "full_reuse:" in done.stdout and "recompute:0-1:" in done.stdout


def test_a_longbench_task_config_runs_through_lm_eval_on_a_local_stand_in(env, tmp_path):
    """task=longbench_hotpotqa, with lm-eval's own prompt and metric, reading a local JSONL instead of the hub."""
    import lm_eval

    shipped = Path(lm_eval.__file__).parent / "tasks" / "longbench" / "hotpotqa.yaml"
    rows = [
        {"context": f"record {i} : alpha beta gamma", "question": f"what is {i}", "answers": ["alpha"]}
        for i in range(3)
    ]
    data = tmp_path / "hotpotqa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "standin"
    tasks.mkdir()
    (tasks / "hotpotqa_standin.yaml").write_text(
        f"include: {shipped}\ntask: longbench_hotpotqa_standin\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "generation_kwargs:\n  max_gen_toks: 4\n  do_sample: false\n  until: []\n"
    )
    evaluate(env, tmp_path, "logger=none", "task=longbench_hotpotqa", "task.lm_eval_task=longbench_hotpotqa_standin",
             f"task.include_path={tasks}", "method=recompute", "method.layers=1-2")
    (row,) = read_rows(tmp_path / "default" / "results.jsonl")
    assert row["lm_eval_task"] == "longbench_hotpotqa_standin" and row["metric"] == "qa_f1_score"
    assert row["n_samples"] == 3 and 0.0 <= row["quality"] <= 1.0


def test_a_sweep_point_is_quiet_and_an_error_is_one_line(env, tmp_path):
    loud = {k: v for k, v in env.items() if k != "WANDB_SILENT"}  # as a user's shell has it
    done = evaluate(loud, tmp_path, "method=full_reuse", "logger=wandb_offline")
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 20 and not any(line.startswith("wandb:") for line in lines), lines
    assert any("full_reuse" in line and "speedup" in line for line in lines)  # its result
    bad = evaluate(loud, tmp_path, "method=recompute", "method.layers=0-99", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and bad.stderr.startswith("error: PlanError: ")
    debug = evaluate({**loud, "DROIDSPEAK_DEBUG": "1"}, tmp_path, "method=recompute", "method.layers=0-99", check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
