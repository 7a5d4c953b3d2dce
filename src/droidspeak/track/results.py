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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from droidspeak.atomic import write_text
from droidspeak.errors import DroidSpeakError
from droidspeak.faults import fault_point

RESULTS_FILE = "results.jsonl"
TIMINGS_FILE = "timings.jsonl"  # bench.retime's timing of the rows beside it (track.records.with_timings)


class ResultsFileError(DroidSpeakError, ValueError):
    """A JSONL file (results, task split, comparisons) is corrupt: a bad line before the last, or not UTF-8."""


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


def append_row(path: str | os.PathLike, row: dict) -> bool:
    """Append one JSON line atomically with respect to other writers of the same file; False (nothing written)
    when a row with the same ``key`` is already there — two processes sweeping the same points write each once.

    A torn last line (a writer killed mid-line; its row never counted) is cut off first, so it can neither swallow
    this row nor end up in the middle of the file.
    """
    path = Path(path)
    line = json.dumps(row, sort_keys=True, default=str) + "\n"
    with _locked(path), open(path, "a+b") as handle:
        handle.seek(0)
        data = handle.read()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            handle.truncate(len(data))
        if "key" in row and any(old.get("key") == row["key"] for _, old in _parse_lines(data.decode(), path)):
            return False
        fault_point("result_append", lambda: (handle.write(line.encode()[: len(line) // 2]), handle.flush()))
        handle.write(line.encode())
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Every row of a JSONL file: results, task splits, comparisons (one reader, one policy for a torn line).

    A torn last line (a writer killed mid-write) is skipped; a bad line anywhere else (not JSON, or JSON that is not
    an object) is corruption and raises, naming the file and line. A missing file has no rows.
    """
    return [row for _, row in _located(Path(path))]


def _located(path: Path) -> list[tuple[str, dict]]:
    """(``file:line``, row) for each row of one JSONL file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:  # missing, or a job file merged away by another process meanwhile
        return []
    except UnicodeDecodeError as err:
        raise ResultsFileError(f"{path}: not UTF-8 text at byte {err.start}; the file is corrupt") from None
    return _parse_lines(text, path)


def _parse_lines(text: str, path: Path) -> list[tuple[str, dict]]:
    lines = text.splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if i == last:
                break
            raise ResultsFileError(f"{path}:{i + 1}: not a JSON line ({err})") from None
        if not isinstance(row, dict):
            raise ResultsFileError(f"{path}:{i + 1}: a JSON {type(row).__name__}, not a row (a JSON object)")
        rows.append((f"{path}:{i + 1}", row))
    return rows


JOBS_DIR = "jobs"


def job_file(results: str | os.PathLike, key: str) -> Path:
    """Where one multirun job writes its row: its own file beside the results file."""
    return Path(results).parent / JOBS_DIR / f"{key}.jsonl"


def write_job_row(results: str | os.PathLike, row: dict) -> Path:
    """One multirun job's row in its own file, written whole or not at all (temporary file, then rename)."""
    path = job_file(results, row["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(row, sort_keys=True, default=str) + "\n", durable=True,
                      before_rename=lambda: fault_point("job_row"))


def _job_files(results: Path) -> list[Path]:
    return sorted((results.parent / JOBS_DIR).glob("*.jsonl"))


def read_all_rows(results: str | os.PathLike) -> list[dict]:
    """The results file's rows, then those of jobs not merged yet (a row already in the file counts once)."""
    return [row for _, row in located_rows(results)]


def located_rows(results: str | os.PathLike) -> list[tuple[str, dict]]:
    """:func:`read_all_rows` with each row's ``file:line`` (what an error about the row names)."""
    results = Path(results)
    rows = _located(results)
    seen = {row.get("key") for _, row in rows}
    for path in _job_files(results):
        for place, row in _located(path):
            if row.get("key") not in seen:
                seen.add(row.get("key"))
                rows.append((place, row))
    return rows


def merge_jobs(results: str | os.PathLike) -> int:
    """Append every job file's rows that the results file lacks, then remove the job files; returns rows added.
    Safe beside another merge of the same sweep: ``append_row`` writes a key once."""
    results, added = Path(results), 0
    for path in _job_files(results):
        for row in read_rows(path):
            added += append_row(results, row)
        path.unlink(missing_ok=True)
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


# ---- code versions -----------------------------------------------------------------------------------------
STALE_POLICIES = ("refuse", "keep", "move")


class StaleResultsError(DroidSpeakError):
    """A results file holds rows computed by another version of the engine's code."""


def stale_file(results: str | os.PathLike) -> Path:
    """Where ``stale=move`` sets rows of other code versions aside: ``results.stale.jsonl`` beside the file."""
    return Path(results).with_suffix(".stale.jsonl")


def check_code_version(results: str | os.PathLike, version: str, policy: str = "refuse") -> int:
    """Before resuming into ``results``: what to do with rows another code version wrote (returns their count).

    Resuming skips every point already there, so rows of an older engine would silently sit beside new ones.
    ``refuse`` raises, naming the versions; ``keep`` keeps them (each row carries its ``code_version``, and the
    figures list the versions they read); ``move`` sets them aside in :func:`stale_file`, so their points run again.
    """
    if policy not in STALE_POLICIES:
        raise StaleResultsError(f"stale={policy!r}: choose one of {', '.join(STALE_POLICIES)}")
    results = Path(results)
    stale = [row for row in read_all_rows(results) if "key" in row and row.get("code_version") != version]
    if not stale or policy == "keep":
        return len(stale)
    if policy == "refuse":
        versions = Counter(str(row.get("code_version")) for row in stale)
        raise StaleResultsError(
            f"{results} holds {len(stale)} rows computed by other code ("
            + ", ".join(f"{v}: {n}" for v, n in versions.most_common()) + f"); this code is {version}. Resuming would "
            "skip their points and mix versions. Rerun with stale=move (set them aside in "
            f"{stale_file(results).name} and recompute), stale=keep (keep them, marked by version), or delete the file."
        )
    for path in [results, *_job_files(results)]:
        _move_stale(path, version, stale_file(results))
    return len(stale)


def _move_stale(path: Path, version: str, aside: Path) -> None:
    with _locked(path):
        rows = read_rows(path)
        keep = [row for row in rows if "key" not in row or row.get("code_version") == version]
        if len(keep) == len(rows):
            return
        with open(aside, "a") as handle:  # every stale row, duplicates of a key included: nothing is lost
            handle.writelines(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows if row not in keep)
            handle.flush()
            os.fsync(handle.fileno())
        write_text(path, "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in keep))


PROFILE_FILES = ("*/*.json", "*/*.comparisons.jsonl")  # under <results dir>/profiles/: what a page reads
FACTS_FILE = "family.json"  # what a study page needs from the family (figures.study_page.study_facts), if written


def keep_rows(results_dir: str | os.PathLike, rows_dir: str | os.PathLike) -> list[Path]:
    """Copy a study's per-question rows beside its page so the page re-renders from the repository alone.

    ``<results_dir>/results.jsonl`` (with the rows of jobs not merged yet) becomes ``<rows_dir>/results.jsonl``, one
    line per row as the sweep writes it; every profile and its comparisons under ``<results_dir>/profiles/<pair>/``
    go to ``<rows_dir>/profiles/<pair>/``, and the family's facts (``family.json``) and the rows' re-timing
    (``timings.jsonl``) beside the rows where the study wrote them. The rows folder is replaced whole: a point the
    study no longer runs leaves.
    """
    source, target = Path(results_dir), Path(rows_dir)
    rows = read_all_rows(source / RESULTS_FILE)
    if not rows:
        raise ResultsFileError(f"{source / RESULTS_FILE}: no rows to keep; run the study first")
    profiles = sorted({path for pattern in PROFILE_FILES for path in (source / "profiles").glob(pattern)})
    facts = [source / name for name in (FACTS_FILE, TIMINGS_FILE) if (source / name).is_file()]
    if target.exists():
        for old in sorted(target.rglob("*"), reverse=True):
            old.rmdir() if old.is_dir() else old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    written = [write_text(target / RESULTS_FILE, "".join(json.dumps(row, sort_keys=True, default=str) + "\n"
                                                        for row in rows))]
    for path in [*profiles, *facts]:
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_text(copy, path.read_text()))
    return written
