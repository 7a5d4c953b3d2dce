"""Provenance of result rows: the commit they came from, marked when the checkout had uncommitted changes."""

import subprocess

from droidspeak.track.results import git_sha


def test_git_sha_marks_a_dirty_checkout(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True)

    assert git_sha(tmp_path) == "unknown"  # not a git checkout
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    git("tag", "v1")  # a tag must not replace the commit id
    head = git("rev-parse", "--short=7", "HEAD").stdout.strip()
    assert git_sha(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_sha(tmp_path) == f"{head}-dirty"
