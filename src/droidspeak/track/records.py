"""The result row: one typed schema for every evaluated point, whoever measured it.

The sweep (``source="sweep"``: one lm-eval run per point) and the profiler (``source="profile"``: plans scored on a
split by the engine directly) both write a :class:`ResultRow`; figures and the W&B mirror read them back through
:func:`read_results`, which also reads rows written before the schema had a version (version 1).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from droidspeak.track.results import read_all_rows

SCHEMA_VERSION = 2


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
    cost: dict | None = None  # droidspeak.plan.PrefillCost summed over the point's prefills
    timed_contexts: int | None = None
    sender_prefills: int | None = None
    sender_cache_hits: int | None = None
    seed: int | None = None
    family: str | None = None
    per_sample: list[float] | None = None  # the metric of each question, in document order: bootstrap intervals
    profile: dict | None = None  # a profile: plan's provenance (profile.profile_file.ResolvedProfile.record())
    code_version: str | None = None  # track.version.code_version(): rows of other versions are stale
    warnings: list[str] | None = None  # pair mismatches the pair's allow_mismatch accepted (the paper's RoPE, window)
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
            row["schema"] = SCHEMA_VERSION
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def read_results(path: str | os.PathLike) -> list[ResultRow]:
    """Every evaluated point in a results file (its other lines, e.g. benchmark records, are not results)."""
    return [ResultRow.from_dict(row) for row in read_all_rows(path) if row.get("kind", "eval") == "eval"]
