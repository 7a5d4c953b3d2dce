"""README stays short and its results are generated: the block it shows is what the committed pages give."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from droidspeak.figures.glance import BEGIN, END, glance_block

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_are_the_committed_pages_results():
    cfg = yaml.safe_load((ROOT / "conf" / "readme_glance.yaml").read_text())
    text = (ROOT / "README.md").read_text()
    shown = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert shown == glance_block(list(cfg["studies"].items()), ROOT, tolerance=cfg["tolerance"]), (
        "README's results drifted from reports/: run .venv/bin/python experiments/readme_glance.py")


def test_readme_is_at_most_200_lines_and_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", text):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


@pytest.mark.slow  # installs the shipped toy family and generates answers
def test_the_quickstart_shows_full_reuse_losing_and_a_recomputed_group_recovering():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    score = {line.split(": ")[0].strip(): float(line.split(" score ")[1].split()[0])  # "  plan: task score 1.00 | ..."
             for line in done.stdout.splitlines() if " score " in line}
    assert score["full_reuse"] < score["full_prefill"] and score["recompute:0-1"] == score["full_prefill"]
    assert score["recompute:2-7"] < score["full_prefill"]
