"""Provenance of result rows: the commit they came from, marked when the code had uncommitted changes."""

import subprocess

import pytest

from droidspeak.track.results import git_sha


@pytest.mark.slow  # runs git in subprocesses
def test_git_sha_marks_a_dirty_checkout(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True)

    assert git_sha(tmp_path) == "unknown"  # not a git checkout
    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "summary.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short=7", "HEAD").stdout.strip()
    assert git_sha(tmp_path) == head
    (tmp_path / "reports" / "summary.md").write_text("regenerated\n")
    assert git_sha(tmp_path / "reports") == head  # outputs changing is not code changing
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_sha(tmp_path / "src") == f"{head}-dirty"
