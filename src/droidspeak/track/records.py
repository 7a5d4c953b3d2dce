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

from droidspeak.track.results import git_sha, read_all_rows
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
    timed_contexts: int | None = None
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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


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
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def new_row(model, **fields) -> ResultRow:
    """A row with its provenance filled from what ran: ``model`` (the receiver's weights) gives the device and dtype;
    the commit, the engine's code version and the time come from this process."""
    parameter = next(model.parameters())
    return ResultRow(**fields, device=device_name(parameter.device), dtype=str(parameter.dtype).removeprefix("torch."),
                     git_sha=git_sha(), code_version=code_version(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))


def read_results(path: str | os.PathLike) -> list[ResultRow]:
    """Every evaluated point in a results file (its other lines, e.g. benchmark records, are not results)."""
    return [ResultRow.from_dict(row) for row in read_all_rows(path) if row.get("kind", "eval") == "eval"]
