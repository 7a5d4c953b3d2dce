"""Kills and concurrent writers, on real sweeps (``experiments/evaluate.py -m`` in subprocesses, as a user runs them).

A *clean* sweep gives the reference rows. A kill trial starts the same sweep in a fresh folder, SIGKILLs it —
at a named fault point (``droidspeak.faults``: mid cache write, mid results line, mid job file, mid W&B log) or
at a random moment — then resumes it, and checks the result against the reference: every point present once,
every quality identical (so no corrupt or foreign cache was served), every cache file on disk verifiable, no job
file left unmerged. A concurrency trial runs several such sweeps at once into one results file and cache folder.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from droidspeak.errors import CacheFormatError
from droidspeak.faults import FAULT_ENV
from droidspeak.store import DiskStore
from droidspeak.track.results import JOBS_DIR, RESULTS_FILE, ResultsFileError, read_rows

KILL_MODES = ("cache_write", "result_append", "job_row", "wandb_write", "random_time")


@dataclass(frozen=True)
class Sweep:
    """One sweep command: ``script`` (experiments/evaluate.py) with Hydra ``overrides``, run in ``env``."""

    script: Path
    overrides: tuple[str, ...]
    env: dict = field(default_factory=dict, compare=False)
    timeout: float = 600.0

    def command(self, out: Path, *extra: str) -> list[str]:
        return [sys.executable, str(self.script), "-m", *self.overrides, f"output_root={out.resolve()}", *extra]

    def environment(self, fault: str | None = None) -> dict:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}
        env.pop(FAULT_ENV, None)
        return env | ({FAULT_ENV: fault} if fault else {})

    def run(self, out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        out.mkdir(parents=True, exist_ok=True)
        return subprocess.run(self.command(out, *extra), env=self.environment(fault), cwd=out, capture_output=True,
                              text=True, timeout=self.timeout)

    def start(self, out: Path, *extra: str, log: Path | None = None) -> subprocess.Popen:
        out.mkdir(parents=True, exist_ok=True)
        sink = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 — the child owns it until it exits
        return subprocess.Popen(self.command(out, *extra), env=self.environment(), cwd=out, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)


def results_path(out: Path) -> Path:
    return out / "default" / RESULTS_FILE


def cache_folder(out: Path) -> Path:
    return out / "default" / "sender_caches"


@dataclass
class Check:
    """What a finished sweep folder holds, against the reference rows (key -> quality)."""

    rows: int
    missing: int
    duplicated: int
    differing: int  # rows whose quality differs from the clean run's
    torn_lines: int  # results lines that do not parse (a reader skips only a torn last line)
    unmerged_job_files: int
    cache_files: int
    bad_cache_files: int  # fail verification now
    set_aside: int  # *.corrupt files: rejected by a reader, never served
    temporary_files: int  # left by writers killed mid-write (never read)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.differing or self.torn_lines or self.unmerged_job_files
                    or self.bad_cache_files)


def check_folder(out: Path, reference: dict[str, float]) -> Check:
    results = results_path(out)
    try:
        rows = read_rows(results)
        torn = 0
    except ResultsFileError:
        rows, torn = [], 1
    keys = Counter(row["key"] for row in rows if "key" in row)
    caches = cache_folder(out)
    files = sorted(caches.glob("*.safetensors")) if caches.exists() else []
    bad = 0
    if files:
        store = DiskStore(caches)
        for path in files:
            try:
                store.get(path.name.removesuffix(".safetensors"))
            except CacheFormatError:
                bad += 1
    jobs = results.parent / JOBS_DIR
    return Check(
        rows=len(rows),
        missing=len(set(reference) - set(keys)),
        duplicated=sum(n - 1 for n in keys.values()),
        differing=sum(1 for row in rows if row.get("key") in reference and row["quality"] != reference[row["key"]]),
        torn_lines=torn,
        unmerged_job_files=len(list(jobs.glob("*.jsonl"))) if jobs.exists() else 0,
        cache_files=len(files),
        bad_cache_files=bad,
        set_aside=len(list(caches.glob("*.corrupt"))) if caches.exists() else 0,
        temporary_files=len(list(caches.glob(".*.tmp"))) if caches.exists() else 0,
    )


@dataclass
class KillTrial:
    trial: int
    mode: str
    fault: str | None
    killed: bool  # the process died by SIGKILL (a fault point not reached lets it finish: not counted)
    rows_before_resume: int
    resumed: bool  # the resumed sweep exited 0
    check: Check
    seconds: float

    @property
    def ok(self) -> bool:
        return self.resumed and self.check.ok

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def reference_rows(sweep: Sweep, out: Path) -> tuple[dict[str, float], float]:
    """The clean sweep's key -> quality, and how long it took (the window random kills land in)."""
    started = time.perf_counter()
    done = sweep.run(out)
    if done.returncode != 0:
        raise RuntimeError(f"the clean reference sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    rows = read_rows(results_path(out))
    if not rows:
        raise RuntimeError(f"the clean reference sweep wrote no rows to {results_path(out)}")
    return {row["key"]: row["quality"] for row in rows}, time.perf_counter() - started


def kill_trial(sweep: Sweep, out: Path, trial: int, mode: str, rng: random.Random, *, reference: dict[str, float],
               clean_seconds: float, counts: dict[str, int]) -> KillTrial:
    """One kill at ``mode`` (a fault point, its Nth passage drawn from ``counts``; or a random moment), then a
    resume."""
    started = time.perf_counter()
    fault = None
    if mode == "random_time":
        proc = sweep.start(out)
        time.sleep(rng.uniform(0.1, 0.8) * clean_seconds)  # the same sweep can run faster than the clean one did
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
    else:
        fault = f"{mode}:{rng.randint(1, max(1, counts[mode]))}"
        killed = sweep.run(out, fault=fault).returncode == -signal.SIGKILL
    try:
        before = len(read_rows(results_path(out)))
    except ResultsFileError:
        before = -1
    resumed = sweep.run(out).returncode == 0
    return KillTrial(
        trial, mode, fault, killed, before, resumed, check_folder(out, reference), time.perf_counter() - started
    )


@dataclass
class WritersTrial:
    writers: int
    exit_codes: list[int]
    rejected_cache_reads: int  # "sender cache recomputed" in the writers' logs: a cache read while half-written
    check: Check
    seconds: float

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.exit_codes) and self.check.ok and not self.rejected_cache_reads

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def writers_trial(sweeps: list[Sweep], out: Path, reference: dict[str, float]) -> WritersTrial:
    """``len(sweeps)`` processes at once, into one results file and one cache folder (each its own Hydra dir)."""
    started = time.perf_counter()
    logs = [out / f"writer-{i}.log" for i in range(len(sweeps))]
    procs = [sweep.start(out, f"hydra.sweep.dir={out}/sweeps/writer-{i}", log=log)
             for i, (sweep, log) in enumerate(zip(sweeps, logs))]
    codes = [proc.wait(timeout=sweeps[0].timeout) for proc in procs]
    rejected = sum(log.read_text(errors="replace").count("sender cache recomputed") for log in logs)
    return WritersTrial(len(sweeps), codes, rejected, check_folder(out, reference), time.perf_counter() - started)
