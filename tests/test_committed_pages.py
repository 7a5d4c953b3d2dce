"""Every committed page re-renders from the committed rows alone, byte for byte, with no model run."""

from __future__ import annotations

from pathlib import Path

import pytest

from droidspeak.figures.render import render_pages

REPO = Path(__file__).resolve().parents[1]
TABLES = ("summary.md", "summary.json", "profiles.md", "profiles.json")
STUDIES = {  # page folder -> its rows folder, as the Makefile renders them
    "reports": "reports/rows",
}


@pytest.mark.parametrize("page", sorted(STUDIES))
def test_a_committed_page_re_renders_from_its_committed_rows(page, tmp_path, monkeypatch):
    rows = STUDIES[page]
    monkeypatch.chdir(REPO)  # the pages name their rows by repository path
    _, written = render_pages(f"{rows}/results.jsonl", [f"{rows}/profiles/*/*.json"], tmp_path, draw=False)
    assert {path.name for path in written} == set(TABLES)
    for name in TABLES:
        assert (tmp_path / name).read_bytes() == (REPO / page / name).read_bytes(), (
            f"{page}/{name} drifted from its rows"
        )
