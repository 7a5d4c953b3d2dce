"""Every command README.md shows runs as typed, in bash, from the repository root: the ones that take minutes
verbatim (they carry their own cheap override, task.limit or --limit), the hour-long make targets as ``make -n``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of README's bash blocks, continuation lines joined and comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command:
                commands.append(command)
    return commands


def test_readme_shows_the_two_fresh_machine_commands_and_the_entry_points():
    commands = readme_commands()
    assert commands[:2] == ["make demo", "make test"]
    assert any(c.startswith(".venv/bin/droidspeak-eval") for c in commands)
    assert any(c.startswith(".venv/bin/python experiments/evaluate.py") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_typed(tmp_path):
    """In README's order: the sweep installs the toy family and writes its lm-eval tasks, which the lm-eval
    command after it reads (README says: after make demo). They run in a checkout of their own (the repository's
    venv, code, configs and model cache, linked), so what they write lands in a fresh outputs/."""
    (ROOT / ".cache").mkdir(exist_ok=True)
    for shared in (".venv", "experiments", "conf", ".cache"):
        (tmp_path / shared).symlink_to(ROOT / shared)
    ran = []
    for command in sorted(readme_commands(), key=lambda c: c.startswith(".venv/bin/droidspeak-eval")):
        make = command.startswith("make ")
        argv = ["make", "-n", *command.split()[1:]] if make else ["bash", "-c", command]
        done = subprocess.run(argv, cwd=ROOT if make else tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        ran.append(command)
    assert len(ran) == len(readme_commands())
    (scores,) = (tmp_path / "outputs" / "lm_eval").rglob("results_*.json")
    results = json.loads(scores.read_text())
    model_args = results["config"]["model_args"]  # a dict, or the string as typed (by lm-eval version)
    plan = model_args.get("plan") if isinstance(model_args, dict) else model_args.rsplit("plan=")[-1]
    assert plan == "recompute:0-1" and results["results"]["droidspeak_mdqa"]["f1,none"] == 1.0  # it recovers
    assert results["n-samples"]["droidspeak_mdqa"]["effective"] == 16
