"""Typed schemas of the main job's Hydra config (registered in Hydra's ConfigStore).

Config groups map one-to-one onto these dataclasses: ``pair``, ``task``, ``method``, ``logger``; the family
recipe is ``zoo`` (droidspeak.zoo.recipe). A misspelt key or a wrong type fails when the config is composed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from droidspeak.zoo.recipe import ZooConfig


@dataclass
class PairConfig:
    """Receiver and sender: ``zoo:NAME`` (the embedded family) or an HF id / local path, each with an adapter."""

    name: str = "???"
    receiver: str = "???"
    sender: str = "???"
    receiver_adapter: str | None = None
    sender_adapter: str | None = None
    task: str | None = None  # the receiver's own task, where the pair has one
    family: str | None = None  # the zoo family its zoo: models belong to (checked against zoo.name)
    allow_mismatch: list[str] = field(default_factory=list)  # accepted differences: rope, sliding_window (the paper
    # reused across them); recorded as a warning in every result row. Without it the pair check refuses them.


@dataclass
class TaskConfig:
    """An lm-eval task: ``source: zoo`` (generated from the family's JSONL) or ``lm_eval`` (shipped with it)."""

    name: str = "???"
    source: str = "zoo"
    lm_eval_task: str | None = None  # defaults to droidspeak_<name> for zoo tasks
    include_path: str | None = None  # extra lm-eval YAML folder (e.g. a local stand-in dataset)
    metric: str = "auto"  # the metric that is "quality"; auto: the embedded task's own metric
    split: str = "test"  # zoo tasks: which split to score
    limit: int | None = None  # at most this many documents
    context_delimiter: str = "\n\n"


@dataclass
class MethodConfig:
    """How the receiver gets its context cache; ``plan`` is in the contract syntax (droidspeak.plan)."""

    name: str = "???"  # full_prefill | full_reuse | recompute | cacheblend | profile | sender
    plan: str = "???"
    layers: str | None = None  # recompute: "A-B[+C-D...]"
    ratio: float | None = None  # cacheblend: fraction of context tokens recomputed
    path: str | None = None  # profile: the profile JSON
    tolerance: float | None = None  # profile: allowed relative quality loss
    allow_foreign_profile: bool = False  # profile: apply a profile measured on another pair (recorded in each row)
    codec: str = (
        "lossless"  # the transfer codec the sender's K/V and E cross the link with: lossless | bf16 | int8 | int4
    )


@dataclass
class LoggerConfig:
    """W&B mirror of the JSONL results; ``mode``: offline (default), online, disabled."""

    mode: str = "offline"
    project: str = "droidspeak"
    entity: str | None = None


@dataclass
class TimingConfig:
    """Receiver prefill time of the plan vs full prefill, same process, interleaved repeats."""

    contexts: int = 8
    repeats: int = 5
    warmup: int = 1


@dataclass
class EvaluateConfig:
    pair: PairConfig = field(default_factory=PairConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    run_name: str = "default"
    output_root: str = "outputs"
    results_dir: str = "${output_root}/${run_name}"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 16
    seed: int = 0
    cache_dir: str | None = None  # sender caches on disk, shared by every point and receiver (None: in memory)
    stale: str = "refuse"  # rows of another code version in results.jsonl: refuse | keep | move (track.results)
    progress: bool = True


def safe_name(pair: str) -> str:
    """A pair name as a folder name (``r<-s`` → ``r_from_s``); also the ``${safe_name:...}`` config resolver."""
    return pair.replace("<-", "_from_").replace("/", "_")


def register_configs() -> None:
    if not OmegaConf.has_resolver("safe_name"):
        OmegaConf.register_new_resolver("safe_name", safe_name)
    store = ConfigStore.instance()
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(group="pair", name="pair_schema", node=PairConfig)
    store.store(group="task", name="task_schema", node=TaskConfig)
    store.store(group="method", name="method_schema", node=MethodConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)


register_configs()
