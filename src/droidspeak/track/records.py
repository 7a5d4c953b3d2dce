"""The result row: one typed schema for every evaluated point, whoever measured it.

The sweep (``source="sweep"``: one lm-eval run per point) and the profiler (``source="profile"``: plans scored on a
split by the engine directly) both write a :class:`ResultRow`, built by :func:`new_row`, the one place that fills a
row's provenance (commit, engine code version, time, device and dtype) from what ran. Figures and the W&B mirror read
rows back through :func:`read_results`, which also reads rows of earlier schema versions (1: no source or split; 2:
no ``question_set``, the digest of the questions a row was scored on, so such rows compare with nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from droidspeak.track.results import TIMINGS_FILE, ResultsFileError, git_sha, located_rows
from droidspeak.track.version import code_version

SCHEMA_VERSION = 3


@dataclass
class ResultRow:
    key: str  # point_key of what determines the result: a resumed sweep skips rows it already has
    source: str  # "sweep" (lm-eval) or "profile" (the profiler, on its split)
    pair: str
    task: str
    split: str
    method: str  # full_prefill, full_reuse, recompute, cacheblend, profile, sender, hybrid
    plan: str  # as configured (a profile: plan stays the profile reference)
    resolved_plan: str  # what ran
    metric: str
    quality: float
    n_samples: int
    num_layers: int
    recomputed_fraction: float | None
    prefill_seconds: float | None
    baseline_prefill_seconds: float | None  # every layer recomputed, same process, interleaved
    speedup: float | None
    eval_seconds: float
    device: str
    dtype: str
    git_sha: str
    time: str
    metrics: dict = field(default_factory=dict)  # every metric the task reported
    receiver: str | None = None
    sender: str | None = None
    receiver_invocation: list[int] | None = None  # an activated LoRA receiver: the tokens its adapter applies from
    lm_eval_task: str | None = None
    recomputed_layers: int | None = None
    transitions: int | None = None
    bytes_loaded: int | None = None  # at the cache's own precision
    codec: str = "lossless"  # the transfer codec K/V and E crossed the link with (droidspeak.codec)
    transfer_bytes: int | None = None  # what crossed the link through that codec, summed over the point's prefills
    cost: dict | None = None  # droidspeak.engine.plan.PrefillCost summed over the point's prefills
    speedup_spread: list[float] | None = None  # the smallest and largest ratio over every timed (context, repeat)
    timed_contexts: int | None = None
    timed_repeats: int | None = None  # interleaved rounds per context (rows before it: one batched timing)
    timed_path: str | None = None  # the code path its prefill_seconds timed (e.g. bench.answer_path.CONTEXT_PREFILL)
    sender_prefills: int | None = None
    sender_cache_hits: int | None = None
    seed: int | None = None
    family: str | None = None
    per_sample: list[float] | None = None  # the metric of each question, in document order: bootstrap intervals
    profile: dict | None = None  # a profile: plan's provenance (profile.profile_file.ResolvedProfile.record())
    code_version: str | None = None  # track.version.code_version(): rows of other versions are stale
    warnings: list[str] | None = None  # pair mismatches the pair's allow_mismatch accepted (the paper's RoPE, window)
    question_set: str | None = None  # question_set_digest(): rows of different digests never share a table
    kind: str = "eval"
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "ResultRow":
        """A row of any schema version; unknown keys (a newer writer) are dropped, not fatal."""
        row = dict(row)
        if row.get("schema", 1) == 1:  # before the schema: sweep rows had no source and no split
            row.setdefault("source", "sweep")
            row.setdefault("split", "test")
        if row.get("schema", 1) < SCHEMA_VERSION:  # version 2: no question_set (None: unknown questions)
            row["schema"] = SCHEMA_VERSION
        return _typed(cls, row)


@dataclass
class TimingRecord:
    """A re-timing of result rows' prefill (droidspeak.bench.retime), kept beside them in ``timings.jsonl``: the
    rows keep their scores, :func:`read_results` takes their speedups from here."""

    keys: list[str]  # the result rows it times (one plan of one pair, task and split)
    pair: str
    task: str
    split: str
    plan: str  # the resolved plan timed
    receiver: str | None
    sender: str | None
    prefill_seconds: float  # medians over every (context, repeat)
    baseline_prefill_seconds: float
    speedup: float  # the median ratio
    speedup_spread: list[float]  # its smallest and largest
    ratios: list[float]  # every (context, repeat) ratio, context by context within each repeat
    timed_contexts: int
    timed_repeats: int
    warmup: int
    context_tokens: list[int]
    timed_path: str
    device: str
    dtype: str
    git_sha: str
    code_version: str
    time: str
    kind: str = "timing"
    schema: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "TimingRecord":
        return _typed(cls, record)


@dataclass
class ProfileCostRun:
    """One scoring path's pass over every plan and question of a profile, timed once (bench.profile_cost; a line of
    profile_cost.jsonl): what a profile costs per (plan × question) on that path, and what it answered."""

    pair: str
    task: str
    path: str  # ProfilePath.name
    dtype: str
    plans_per_batch: int
    round: int
    order: int  # its place in the round (the order rotates)
    seconds: float  # Profiler.evaluate_many over every plan, wall time
    prefill_seconds: float  # of which the receiver's prefills (the plans' shares of the shared passes)
    plans: list[str]
    num_layers: int
    questions: int
    batch_size: int
    threads: int
    scores: dict[str, list[float]]  # first round only (else empty): plan -> per-question score
    answers: dict[str, list[str]]  # first round only (else empty): plan -> answers
    device: str
    git_sha: str
    code_version: str
    time: str
    drafts: bool = False  # the receiver's own answers checked first as each plan's (Profiler's drafts)
    decoded: int | None = None  # of the layer plans' answers, those decoded token by token (None: not counted)
    answered: int | None = None  # the layer plans' answers in all
    kind: str = "profile_cost"
    schema: int = 1

    @property
    def seconds_per_answer(self) -> float:
        return self.seconds / (len(self.plans) * self.questions)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "ProfileCostRun":
        return _typed(cls, record)


def _typed(cls, record: dict):
    """``cls`` from a JSON object: unknown keys dropped, missing required fields and wrong types refused."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    record = {k: v for k, v in record.items() if k in fields}
    missing = [f.name for f in fields.values() if f.name not in record and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    for name, value in record.items():
        if not _fits(value, fields[name].type):
            raise ValueError(f"{name}={value!r:.60} is not {fields[name].type}")
    return cls(**record)


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict}


def _fits(value, annotation: str) -> bool:
    """Whether a JSON value fits a field's annotation (``float``, ``str | None``, ``list[float] | None``...)."""
    options = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        if option.startswith("list["):
            inner = _TYPES.get(option[5:-1])
            if isinstance(value, list) and (inner is None or all(_fits_one(v, inner) for v in value)):
                return True
        elif option.startswith("dict[") and isinstance(value, dict):
            return True
        elif option in _TYPES and _fits_one(value, _TYPES[option]):
            return True
    return False


def _fits_one(value, kind) -> bool:
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def question_set_digest(task: str, split: str, questions: int, task_version: str) -> str:
    """The identity of the questions a row was scored on: the task, its split, how many of them (the first ones, in
    document order) and the version of the task's data (the split file's sha256, or lm-eval's task version)."""
    payload = json.dumps({"task": task, "split": split, "questions": questions, "version": task_version})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def device_name(device) -> str:
    """What a row ran on: the CUDA card, or the CPU with the torch threads it used (timings depend on both)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    flags = cpu_matmul_flags()
    return (f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
            + (f"; {' '.join(flags)}" if flags else "") + ")")


MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what decides a CPU's float32 and bf16 matmul speed


def cpu_matmul_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The CPU's matmul-relevant instruction sets (x86 Linux; [] elsewhere): a bf16 timing means little without them
    (AMX makes bf16 several times faster than float32; without it bf16 can be slower)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    present = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return [flag for flag in MATMUL_FLAGS if flag in present]


def new_row(model, **fields) -> ResultRow:
    """A row with its provenance filled from what ran: ``model`` (the receiver's weights) gives the device and dtype;
    the commit, the engine's code version and the time come from this process."""
    parameter = next(model.parameters())
    return ResultRow(**fields, device=device_name(parameter.device), dtype=str(parameter.dtype).removeprefix("torch."),
                     **new_record_provenance())


def new_record_provenance() -> dict:
    """What every record says of the process that wrote it: the commit, the engine's code version, the time."""
    return dict(git_sha=git_sha(), code_version=code_version(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))


def read_results(path: str | os.PathLike) -> list[ResultRow]:
    """Every evaluated point in a results file (its other lines, e.g. benchmark records, are not results). A line that
    is no result row is an error naming its file and line; so are rows that would share a table unlike (below)."""
    rows, places = [], []
    for place, row in located_rows(path):
        if row.get("kind", "eval") != "eval":
            continue
        try:
            rows.append(ResultRow.from_dict(row))
        except (ValueError, TypeError) as err:
            raise ResultsFileError(f"{place}: not a result row ({err})") from None
        places.append(place)
    check_comparable(rows, places)
    timings = Path(path).parent / TIMINGS_FILE
    return with_timings(rows, read_timings(timings)) if timings.is_file() else rows


def read_timings(path: str | os.PathLike) -> list[tuple[str, TimingRecord]]:
    """Every timing record of a ``timings.jsonl`` with its file:line; another line is an error naming both."""
    records = []
    for place, record in located_rows(path):
        try:
            records.append((place, TimingRecord.from_dict(record)))
        except (ValueError, TypeError) as err:
            raise ResultsFileError(f"{place}: not a timing record ({err})") from None
    return records


TIMED_FIELDS = ("speedup", "speedup_spread", "prefill_seconds", "baseline_prefill_seconds", "timed_contexts",
                "timed_repeats", "timed_path")  # what a timing record gives the rows it times


def with_timings(rows: list[ResultRow], records: list[tuple[str, TimingRecord]]) -> list[ResultRow]:
    """Rows whose speedups come from their re-timing; a row it does not time loses its own single timing (a page
    never shows it beside timed ones), and a record timing no row here is an error (its rows changed since)."""
    timed: dict[str, TimingRecord] = {}
    known = {row.key for row in rows}
    for place, record in records:
        stray = [key for key in record.keys if key not in known]
        if stray:
            raise ResultsFileError(f"{place}: times rows not in the results beside it ({', '.join(stray[:3])}): "
                                   "the rows changed since; re-time them (experiments/retime.py)")
        timed.update(dict.fromkeys(record.keys, record))
    untimed = dict.fromkeys(("speedup", "speedup_spread", "timed_contexts", "timed_repeats", "timed_path"))
    return [dataclasses.replace(row, **({name: getattr(timed[row.key], name) for name in TIMED_FIELDS}
                                        if row.key in timed else untimed)) for row in rows]


def check_comparable(rows: list[ResultRow], places: list[str]) -> None:
    """Rows of one pair, task and split sit in one table, so they must be scored on one question set (the digest;
    the count where an older row has none) by one code version: two ``task.limit`` values, or rows kept from other
    code, would put a plan on 8 questions beside the receiver on 16."""
    seen: dict[tuple, tuple[tuple, str]] = {}
    for row, place in zip(rows, places):
        panel = (row.pair, row.task, row.split)
        scored = (row.question_set or f"{row.n_samples} questions", row.code_version)
        first = seen.setdefault(panel, (scored, place))
        if first[0] != scored:
            what = "question sets" if first[0][0] != scored[0] else "code versions"
            raise ResultsFileError(
                f"{place} and {first[1]}: rows of {row.pair} / {row.task} / {row.split} on two {what} ({first[0][0]}, "
                f"code {first[0][1]} vs {scored[0]}, code {scored[1]}) would share a table; keep one per results file "
                "(rerun with one task.limit, or stale=move to set rows of other code aside)")
