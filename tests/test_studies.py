"""A study is data: every study config composes, every step's overrides compose against its script's own config,
and the runner runs steps in order, alongside ones in parallel, stopping on a failure that names the step."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import droidspeak.sweep.profile_job  # noqa: F401
from droidspeak.errors import DroidSpeakError
from droidspeak.sweep.config import check_values  # (importing it registers every config schema)
from droidspeak.sweep.point import settle_method
from droidspeak.sweep.study import Command, execute, missing_packages, plan_commands

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _study(name: str, *overrides: str):
    return compose(config_name="run_study", overrides=[f"study={name}", *overrides])


def _single_point(args: list[str]) -> list[str]:
    """A multirun's overrides as one point of its sweep (the first value of each swept key)."""
    if "-m" not in args:
        return args
    point = []
    for arg in args:
        if arg == "-m":
            continue
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith(("[", "'", '"')) and not key.startswith("hydra"):
            value = value.split(",")[0]
        point.append(f"{key}={value}")
    return point


@pytest.mark.parametrize("name", STUDIES)
def test_every_step_of_every_study_composes_against_its_scripts_config(hydra_conf, name, monkeypatch):
    monkeypatch.chdir(ROOT)  # steps name their scripts relative to the repository
    for cheap in (False, True):
        cfg = _study(name, f"cheap={cheap}")
        assert cfg.study.about and cfg.study.steps
        run, render = plan_commands(cfg)
        for command in run + render:
            script = Path(command.argv[1])
            config_name = re.search(r'@entry_point\("(\w+)"\)', script.read_text()).group(1)
            overrides = [a for a in _single_point(command.argv[2:]) if not a.startswith("hydra/")]
            composed = compose(config_name=config_name, overrides=overrides)
            assert OmegaConf.to_container(composed, resolve=False), f"{name}: step {command.step} composed empty"
            swept = compose(config_name=config_name, overrides=overrides, return_hydra_config=True).hydra.sweeper
            given = {o.split("=")[0] for o in overrides}  # the sweep's own first point, unless the step sets it
            first = [f"{k}={str(v).split(',')[0]}" for k, v in (swept.get("params") or {}).items() if k not in given]
            composed = compose(config_name=config_name, overrides=first + overrides)
            if config_name == "evaluate":
                settle_method(composed)  # no method field a step sets goes unread
            check_values(composed)  # what the step's entry point checks before it runs


def test_a_cheap_run_never_writes_over_the_studys_rows_or_page(hydra_conf, monkeypatch):
    from droidspeak.sweep.study import run_study

    monkeypatch.chdir(ROOT)
    cfg = _study("smollm2", "cheap=true", "dry_run=true")
    run_study(cfg)  # the runner itself redirects a cheap run
    assert cfg.study.results_dir == "outputs/smollm2_cheap" and cfg.study.page_dir.startswith("outputs/")
    run, render = plan_commands(cfg)
    text = " ".join(str(c) for c in run + render)
    assert "reports/" not in text and "task.limit=4" in text and "outputs/smollm2_cheap" in text


def test_only_runs_the_named_steps_and_a_wrong_name_lists_the_steps(hydra_conf, monkeypatch):
    monkeypatch.chdir(ROOT)
    run, _ = plan_commands(_study("gemma3", "only=[heldout]"))
    assert [c.step for c in run] == ["heldout"]
    with pytest.raises(DroidSpeakError, match="has the steps"):
        plan_commands(_study("gemma3", "only=[heldot]"))


def test_a_step_puts_its_named_arg_set_first_and_a_wrong_name_lists_the_sets(hydra_conf, monkeypatch):
    monkeypatch.chdir(ROOT)
    run, _ = plan_commands(_study("smollm2_serving", "only=[droidspeak,vllm]"))
    shared = list(_study("smollm2_serving").study.arg_sets.serve)
    for command in run:
        assert command.argv[2:2 + len(shared)] == shared and f"system={command.step}" in command.argv
    with pytest.raises(DroidSpeakError, match=r"arg_set 'serv' is not one of the study's arg_sets \['serve'\]"):
        plan_commands(_study("smollm2_serving", "only=[droidspeak]", "study.steps.droidspeak.arg_set=serv"))


def _python(step: str, code: str, alongside: bool = False, threads: int = 1) -> Command:
    return Command(step, [sys.executable, "-c", code], threads, alongside)


def test_alongside_steps_run_in_parallel_and_steps_see_their_threads(tmp_path):
    marks = tmp_path / "marks"
    write = "import os, sys, time; time.sleep({s}); open(sys.argv[1], 'a').write('{n}' + os.environ['OMP_NUM_THREADS'])"
    started = time.perf_counter()
    execute([
        Command("slow", [sys.executable, "-c", write.format(s=1.0, n="a"), str(marks)], 2, True),
        Command("fast", [sys.executable, "-c", write.format(s=0.0, n="b"), str(marks)], 1, False),
        Command("after", [sys.executable, "-c", write.format(s=0.0, n="c"), str(marks)], 1, False),
    ])
    assert marks.read_text() == "b1a2c1"  # the alongside step was joined before the step after the next one
    assert time.perf_counter() - started < 3.0


def test_a_failed_step_stops_the_study_and_is_named(tmp_path):
    after = tmp_path / "after"
    with pytest.raises(DroidSpeakError, match=r"\['broken'\]"):
        execute([_python("broken", "raise SystemExit(3)"), _python("next", f"open({str(after)!r}, 'w')")])
    assert not after.exists()


def test_missing_packages_are_those_not_installed_at_the_pinned_version():
    assert missing_packages(["pytest"]) == []
    assert missing_packages(["pytest==0.0.1", "no-such-package-here==1.0"]) == ["pytest==0.0.1",
                                                                                  "no-such-package-here==1.0"]


@pytest.mark.slow  # a subprocess: the command line a user types
def test_make_study_dry_run_prints_every_step_and_runs_nothing():
    done = subprocess.run(["make", "-s", "study", "NAME=smollm2_cacheblend", "ARGS=dry_run=true"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("OMP_NUM_THREADS=")]
    assert [line.split()[2] for line in lines] == ["experiments/build_zoo.py", "experiments/evaluate.py",
                                                   "experiments/evaluate.py", "experiments/study_page.py",
                                                   "experiments/retime.py", "experiments/figures.py"]


def test_the_serving_study_serves_cacheblend_as_its_own_study_chose_it():
    """The serving study's CacheBlend plan (a value of its config) is the one the CacheBlend study chose for
    lora-code<-base on the profile split, and lora-code-seed1's is CacheBlend at that check layer spending the compute
    of its own DroidSpeak plan: change one, and this fails until the other follows."""
    import json
    from types import SimpleNamespace

    from droidspeak.engine.plan import parse_plan
    from droidspeak.sweep.point import cacheblend_plan

    serving = OmegaConf.load(CONF / "study/smollm2_serving.yaml")
    values = serving["values"]
    held_out = json.loads((ROOT / "reports/smollm2_cacheblend/summary.json").read_text())["held_out"]
    chosen = [row["plan"] for pair in held_out if pair["pair"] == "smol-lora-code<-base"
              for row in pair["rows"] if row["method"] == "cacheblend" and row["chosen"]]
    assert chosen == [values["cacheblend"]]
    assert values["profile"].endswith("smol-lora-code_from_base/long_code.json")
    assert values["profile_seed1"].endswith("smol-lora-code-seed1_from_base/long_code.json")
    equal_compute = SimpleNamespace(check_layer=parse_plan(values["cacheblend"]).check_layer, ratio=None,
                                    compute_of=f"profile:{ROOT / values['profile_seed1']}")
    assert cacheblend_plan(equal_compute, ("lora-code-seed1", "base")) == values["cacheblend_seed1"]
