"""Every committed page re-renders from the committed rows alone, byte for byte, with no model run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from droidspeak.figures.render import render_pages
from droidspeak.sweep.config import InformativeCriteria

REPO = Path(__file__).resolve().parents[1]
TABLES = ("summary.md", "summary.json", "profiles.md", "profiles.json")


def _studies() -> dict[str, str]:
    """Each study config that renders a page -> its page folder."""
    studies = {}
    for path in sorted((REPO / "conf" / "study").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if cfg.get("render"):
            studies[cfg["name"]] = cfg.get("page_dir", f"reports/{cfg['name']}")
    return studies


STUDIES = _studies()


def test_the_demo_tables_re_render_from_its_committed_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the pages name their rows by repository path
    _, written = render_pages("reports/rows/results.jsonl", ["reports/rows/profiles/*/*.json"], tmp_path, draw=False)
    assert {path.name for path in written} == set(TABLES)
    for name in TABLES:
        assert (tmp_path / name).read_bytes() == (REPO / "reports" / name).read_bytes(), f"reports/{name} drifted"


@pytest.mark.slow  # draws every figure again
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_page_re_renders_byte_for_byte_from_the_repository_alone(study, tmp_path):
    page = STUDIES[study]
    for shared in ("conf", "experiments"):
        (tmp_path / shared).symlink_to(REPO / shared)
    shutil.copytree(REPO / page, tmp_path / page, ignore=shutil.ignore_patterns("README.md", "*.png", "*.pdf",
                                                                                 "summary.*", "profiles.*"))
    for other in (REPO / "reports").iterdir():  # the other studies' pages, as committed (a page may read a companion's)
        if other.is_dir() and not (tmp_path / "reports" / other.name).exists():
            (tmp_path / "reports" / other.name).symlink_to(other)
    before = {p.name for p in (tmp_path / page).glob("*") if p.is_file()}
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "run_study.py"), f"study={study}",
                           "render_only=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = {p.name for p in (tmp_path / page).glob("*") if p.is_file()} - before
    assert rendered & {"README.md", "summary.md"}, f"{page}: the render wrote no page ({sorted(rendered)})"
    for name in sorted(rendered):
        assert (REPO / page / name).exists(), f"{page}/{name} is rendered but not committed"
        assert (tmp_path / page / name).read_bytes() == (REPO / page / name).read_bytes(), f"{page}/{name} drifted"


def test_the_robustness_page_re_renders_from_its_committed_tallies(tmp_path):
    shutil.copy(REPO / "reports" / "robustness.json", tmp_path / "robustness.json")
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "robustness.py"), "render_only=true",
                           f"out_dir={tmp_path}", f"work_dir={tmp_path / 'work'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "robustness.md").read_bytes() == (REPO / "reports" / "robustness.md").read_bytes()


def test_the_smollm2_study_keeps_the_receivers_in_range_and_sets_the_others_aside():
    """What the two pages' headings say of their pairs, read off their committed held-out tables: every receiver of
    the smollm2 study scores within the range a pair needs on its own task, every one set aside outside it."""
    criteria = InformativeCriteria()

    def receivers(study: str) -> dict[str, float]:
        summary = json.loads((REPO / "reports" / study / "summary.json").read_text())
        return {panel["pair"]: next(e["quality"] for e in panel["rows"] if e["method"] == "full_prefill")
                for panel in summary["held_out"]}

    def in_range(quality: float) -> bool:
        return criteria.receiver_min <= round(quality, 3) <= criteria.receiver_max

    kept, aside = receivers("smollm2"), receivers("smollm2_set_aside")
    assert kept and aside and not set(kept) & set(aside)
    assert all(map(in_range, kept.values())), kept
    assert not any(map(in_range, aside.values())), aside
