"""README stays short and its results are generated: the block it shows is what the committed pages give."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from droidspeak.figures.glance import BEGIN, END, compute_limit_text, glance_block

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_are_the_committed_pages_results():
    cfg = yaml.safe_load((ROOT / "conf" / "readme_glance.yaml").read_text())
    text = (ROOT / "README.md").read_text()
    shown = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert shown == glance_block(list(cfg["studies"].items()), ROOT, tolerance=cfg["tolerance"]), (
        "README's results drifted from reports/: run .venv/bin/python experiments/readme_glance.py")


def test_the_compute_only_limit_is_one_over_the_recomputed_share():
    assert compute_limit_text(1 / 3) == "3.00×" and compute_limit_text(1.0) == "1.00×"
    assert compute_limit_text(0.0).startswith("unbounded") and compute_limit_text(None) == "–"


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


def test_every_number_in_readme_prose_is_the_one_the_code_uses():
    """README's prose outside the generated block quotes few numbers; each is checked against where it lives."""
    from droidspeak.codec import get_codec

    text = (ROOT / "README.md").read_text()
    glance = yaml.safe_load((ROOT / "conf" / "readme_glance.yaml").read_text())
    assert f"within {glance['tolerance']:.0%} of the receiver" in text  # the tolerance the glance table applies
    assert f"stays above −{glance['tolerance']:.0%} of the receiver" in text
    quickstart = (ROOT / "examples" / "quickstart.py").read_text()
    shown = int(re.search(r"runs this on (\d+) test questions", text).group(1))
    assert f'["test"])[:{shown}]' in quickstart
    torch_pin = re.search(r"^torch==([\d.]+)$", (ROOT / "constraints-cpu.txt").read_text(), flags=re.M).group(1)
    assert f"CPU torch\n{torch_pin} through" in text or f"CPU torch {torch_pin} through" in text
    from droidspeak.engine.plan import DEFAULT_CHOICE_RULE
    from droidspeak.profile.choice import choice_rule

    level = choice_rule(DEFAULT_CHOICE_RULE).level
    assert f"`{DEFAULT_CHOICE_RULE}`, the default for new profiles, needs the one-sided {level:.0%}" in text
    groups = {grouping.group for _, grouping in get_codec("int4").grouping}
    assert groups == {int(re.search(r"groups of (\d+)\)", text).group(1))}
