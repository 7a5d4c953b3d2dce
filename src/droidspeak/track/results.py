"""The results JSONL: append-only, one line per evaluated point, safe under parallel sweep jobs.

A point's identity (``point_key``) is what determines its result; a rerun of a sweep skips points whose key
is already in the file, so a killed sweep resumes with nothing lost or duplicated.

Jobs of a multirun (joblib, SLURM via submitit, Ray) never share a file: each writes its own
``jobs/<key>.jsonl`` beside ``results.jsonl`` (no lock that a cluster filesystem might not honour), and the sweep's
end merges them in (``merge_jobs``). Until then readers see both, so a killed sweep loses nothing either way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS_FILE = "results.jsonl"


def point_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_row(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line atomically with respect to other writers of the same file.

    A torn last line (a writer killed mid-line; its row never counted) is cut off first, so it can neither swallow
    this row nor end up in the middle of the file.
    """
    path = Path(path)
    line = json.dumps(row, sort_keys=True, default=str) + "\n"
    with _locked(path), open(path, "a+b") as handle:
        handle.seek(0)
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
        handle.write(line.encode())
        handle.flush()
        os.fsync(handle.fileno())


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Every row of a JSONL file: results, task splits, comparisons (one reader, one policy for a torn line).

    A torn last line (a writer killed mid-write) is skipped; a bad line anywhere else is corruption and raises,
    naming the file and line. A missing file has no rows.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == last:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line ({err})") from None
    return rows


JOBS_DIR = "jobs"


def job_file(results: str | os.PathLike, key: str) -> Path:
    """Where one multirun job writes its row: its own file beside the results file."""
    return Path(results).parent / JOBS_DIR / f"{key}.jsonl"


def write_job_row(results: str | os.PathLike, row: dict) -> Path:
    """One multirun job's row in its own file, written whole or not at all (temporary file, then rename)."""
    path = job_file(results, row["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        handle.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def _job_files(results: Path) -> list[Path]:
    return sorted((results.parent / JOBS_DIR).glob("*.jsonl"))


def read_all_rows(results: str | os.PathLike) -> list[dict]:
    """The results file's rows, then those of jobs not merged yet (a row already in the file counts once)."""
    results = Path(results)
    rows = read_rows(results)
    seen = {row.get("key") for row in rows}
    for path in _job_files(results):
        for row in read_rows(path):
            if row.get("key") not in seen:
                seen.add(row.get("key"))
                rows.append(row)
    return rows


def merge_jobs(results: str | os.PathLike) -> int:
    """Append every job file's rows that the results file lacks, then remove the job files; returns rows added."""
    results = Path(results)
    done, added = {row.get("key") for row in read_rows(results)}, 0  # the file alone: job rows are what we add
    for path in _job_files(results):
        for row in read_rows(path):
            if row.get("key") not in done:
                append_row(results, row)
                done.add(row.get("key"))
                added += 1
        path.unlink()
    return added


def finished_keys(path: str | os.PathLike) -> set[str]:
    return {row["key"] for row in read_all_rows(path) if "key" in row}


CODE_PATHS = (":/src", ":/conf", ":/experiments", ":/pyproject.toml", ":/Makefile")  # what a row's numbers depend on


def git_sha(where: str | Path = Path(__file__).parent) -> str:
    """The commit of the checkout holding ``where`` (default: this code), with ``-dirty`` when its code (not its
    reports or outputs) differs from that commit: such a row did not come from the commit alone. ``unknown``
    outside a git checkout."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=where)

    try:
        sha = git("rev-parse", "--short=7", "HEAD").stdout.strip()
        if not sha:
            return "unknown"
        return sha + ("-dirty" if git("diff", "--quiet", "HEAD", "--", *CODE_PATHS).returncode else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
