"""Every entry point's config schema, in one module, registered in Hydra's ConfigStore when it is imported.

Config groups map one-to-one onto dataclasses: ``pair``, ``task``, ``method``, ``logger``, ``study``; the family
recipe is ``zoo`` (droidspeak.zoo.recipe, the family's identity: its hash names the family). Each top-level config
in ``conf/`` starts its defaults with ``<name>_schema``, so a misspelt key or a wrong type fails when the config is
composed, before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from droidspeak.engine.plan import DEFAULT_CHOICE_RULE
from droidspeak.errors import DroidSpeakError, PlanError
from droidspeak.profile.choice import choice_rule
from droidspeak.zoo.gguf_base import GgufConfig
from droidspeak.zoo.recipe import ZooConfig
from droidspeak.zoo.tasks import DEV, WIDE_TEST


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
    """How the receiver gets its context cache; ``plan`` is in the contract syntax (droidspeak.engine.plan)."""

    name: str = "???"  # full_prefill | full_reuse | recompute | cacheblend | profile | sender
    plan: str = "???"
    layers: str | None = None  # recompute: "A-B[+C-D...]"
    ratio: float | None = None  # cacheblend: fraction of context tokens recomputed
    check_layer: int | None = None  # cacheblend: the layer its tokens are ranked at (None: 0; LMCache ranks at 1)
    compute_of: str | None = None  # cacheblend: profile:PATH[@TOL][@RULE]; the ratio then spends at check_layer the
    # compute of the plan that profile chooses (CacheBlend against DroidSpeak at equal compute)
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
    # per method name, fields applied only when that method runs (a sweep over several methods sets each its own)
    method_settings: dict[str, Any] = field(default_factory=dict)


# ---- the other entry points (experiments/<name>.py reads conf/<name>.yaml) -------------------------------------
@dataclass
class BuildZooConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    progress: bool = True
    force: bool = False  # retrain from the recipe even when it is cached or shipped (then compared by quality)
    export_reference: bool = False  # copy the family into <repo>/reference/ with a sha256 manifest (to commit)
    export_merged: list[str] = field(default_factory=list)  # LoRAs to write merged into their base (Family.merged_dir)


@dataclass
class ProfileJobConfig:
    pair: PairConfig = field(default_factory=PairConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    task: TaskConfig = field(default_factory=TaskConfig)  # the task group, as in the main job (default: own)
    split: str = "profile"
    contexts: int = 50  # profiling contexts (the paper: 50); every question of each is scored
    granularity: int = 1
    max_group_layers: int | None = None  # contiguous groups up to this many layers (None: all; a 30-layer model
    # on 2 CPU cores cannot afford all 120 groups at granularity 2)
    search: str = "exhaustive"  # every group aligned to granularity | coarse_to_fine (profile.coarse_to_fine)
    coarse_granularity: int | None = None  # coarse_to_fine: the first stage's alignment (a multiple of granularity)
    transitions: bool = True  # Fig. 10's study of transition counts
    tolerance: float = 0.05
    choice_rule: str = DEFAULT_CHOICE_RULE  # how the profile's plan is chosen (profile.choice): bootstrapNN | point
    transition_layers: int | None = None  # Fig. 10: recomputed layers held fixed (default L/2)
    max_transitions: int = 3
    transition_plans_per_count: int = 8  # Fig. 10: layouts per transition count (free, and holding the critical layers)
    max_groups: int | None = 3  # multi-group DP: at most this many groups (None: unlimited)
    proxy_samples: int = 8
    comparisons: bool = True  # run the beyond-the-paper comparisons named in comparison_kinds
    comparison_kinds: list[str] = field(default_factory=lambda: ["multigroup", "proxy", "hybrid"])
    proxy_rule: str = "binomial@0.05"  # how the proxy's scores become a plan (profile.proxy.PROXY_RULES)
    proxy_search_repeats: int = 3  # the proxy's and the task search's costs: each timed this many times, from scratch
    hybrid_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5])
    cacheblend_ratios: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5])
    batch_size: int = 32
    plans_per_batch: int = 1  # layer plans whose answers one decode batches (batch_size questions each)
    drafts: bool = False  # check the receiver's own answers as each layer plan's first; decode only where they differ
    device: str = "cpu"
    dtype: str = "float32"
    output_root: str = "outputs"
    output: str | None = None  # profile path (default <output_root>/profiles/<pair>/<task>.json)
    stale: str = "refuse"  # eval rows of another code version in the results file: refuse | keep | move
    force: bool = False  # re-profile even when the profile file is up to date (same job, same code version)
    progress: bool = True


@dataclass
class RobustnessConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    seed: int = 0
    pair: str = "mdqa_from_base"  # the sweeps' pair config (conf/pair)
    receiver: str = "ft-mdqa"  # the bad inputs' and memory bound's pair, in the zoo family
    sender: str = "base"
    layers: list[str] = field(default_factory=lambda: ["0-1", "3-4", "6-7"])  # the sweep: one recompute point each
    limit: int = 8  # questions per point
    kill_trials: int = 20  # SIGKILLs that land (a trial whose sweep finished first does not count)
    writers: int = 4
    memory_limit: int = 128  # questions of the memory-bound run
    budget_minutes: float = 30.0
    work_dir: str = "outputs/robustness"
    out_dir: str = "reports"
    command: str = "python experiments/robustness.py"  # what the report says regenerates it
    template: str = "conf/pages/robustness.md.j2"
    render_only: bool = False  # the page again from <out_dir>/robustness.json, no campaign
    progress: bool = True


@dataclass
class StepConfig:
    script: str = "???"  # an entry point in experiments/, without .py
    args: list[str] = field(default_factory=list)  # its overrides, as typed on a command line
    threads: int = 1  # OMP_NUM_THREADS of its processes
    alongside: bool = False  # start it and go on; joined when the next step that is not alongside ends
    cheap: list[str] = field(default_factory=list)  # overrides added when the study runs cheap=true
    python: str | None = None  # another environment's interpreter (e.g. .venv-vllm/bin/python: make vllm-venv)
    arg_set: str | None = None  # a name of study.arg_sets: those args come first (steps that share most of theirs)


@dataclass
class StudyConfig:
    name: str = "???"
    about: str = "???"  # one line: the question the study answers (make help lists it)
    packages: list[str] = field(default_factory=list)  # pip requirements of its family, installed --no-deps if missing
    values: dict[str, str] = field(default_factory=dict)  # named once, used by several steps: ${study.values.pairs}
    arg_sets: dict[str, list[str]] = field(default_factory=dict)  # args named once, put first by a step's arg_set
    run_name: str = "${.name}"  # the steps write under outputs/<run_name>/
    results_dir: str = "outputs/${.run_name}"
    page_dir: str = "reports/${.name}"  # the page; its rows are kept in <page_dir>/rows/
    keep_rows: bool = True  # false: the study writes its own files beside its page (or has no rows)
    steps: dict[str, StepConfig] = field(default_factory=dict)  # in order
    render: dict[str, StepConfig] = field(default_factory=dict)  # read only <page_dir>: no model runs


@dataclass
class RunStudyConfig:
    study: StudyConfig = field(default_factory=StudyConfig)
    only: list[str] = field(default_factory=list)  # run just these steps (names), then keep rows and render
    cheap: bool = False  # each step's cheap overrides, into outputs/<name>_cheap/: a rehearsal of the study
    render_only: bool = False  # re-render the page from the committed rows
    dry_run: bool = False  # print the commands, run nothing


@dataclass
class FiguresConfig:
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    results: str = "outputs/demo/results.jsonl"
    profiles: list[str] = field(default_factory=list)  # profile files or glob patterns
    out_dir: str = "reports"
    tolerance: float = 0.05
    run_name: str = "demo"
    wandb_dir: str = "outputs/${run_name}"
    facts: str | None = None  # a study's rows/family.json: the base's attention type per layer, marked on Fig. 7


@dataclass
class WandbReportConfig:
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    results: str = "outputs/demo/results.jsonl"
    run_name: str = "demo"
    out_dir: str = "reports"
    tolerance: float = 0.05
    facts: str | None = None  # a study's rows/family.json: its held-out intervals resample contexts, as its page's do


@dataclass
class KeepRowsConfig:
    results_dir: str = "???"
    rows_dir: str = "???"


@dataclass
class ReadmeGlanceConfig:
    studies: dict[str, str] = field(default_factory=dict)  # study -> its page folder
    readme: str = "README.md"
    tolerance: float = 0.05


@dataclass
class InformativeCriteria:
    """When a pair can test DroidSpeak (issue 34): a receiver neither weak nor saturated on its own task, a sender
    that cannot answer in its place, and full reuse that costs enough to need recomputing."""

    receiver_min: float = 0.70
    receiver_max: float = 0.98
    sender_gap: float = 0.20  # the sender answering alone scores at least this far below the receiver
    full_reuse_loss: float = 0.10  # full reuse loses at least this share of the receiver's quality


@dataclass
class StudyPageConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    write_facts: bool = False
    facts: str = "???"
    out_dir: str = "???"
    command: str = "???"
    template: str = "conf/pages/study.md.j2"  # the page's prose
    profiles: list[str] = field(default_factory=list)
    tolerance: float = 0.05
    informative: InformativeCriteria = field(default_factory=InformativeCriteria)
    companions: list[str] = field(default_factory=list)  # related studies' pages (pairs one set aside from the other)


@dataclass
class AloraPageConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    out_dir: str = "???"
    training: bool = False
    lora: str = "???"
    alora: str = "???"
    comparisons: dict[str, dict[str, str]] = field(default_factory=dict)  # sender -> {lora, alora} pair names
    tolerance: float = 0.05
    command: str = "???"
    template: str = "conf/pages/alora.md.j2"  # the page's prose


@dataclass
class TransferPageConfig:
    results: str = "???"
    timing: str = "???"
    out_dir: str = "???"
    chosen: dict[str, str] = field(default_factory=dict)  # pair -> its profile's plan
    links_gbit: list[float] = field(default_factory=list)
    tolerance: float = 0.05
    command: str = "???"
    template: str = "conf/pages/transfer.md.j2"  # the page's prose


@dataclass
class GranularityPageConfig:
    profile: str = "???"  # the exhaustive profile at the fine granularity
    study_profile: str = "???"  # the same pair's profile in its study, on the same questions
    results: str = "???"  # the pair's test-split rows: the receiver and the chosen plans
    facts: str = "???"  # the family's facts (study_page write_facts): each question's context, for the intervals
    out_dir: str = "???"
    coarse: int = 10  # the replayed coarse-to-fine search's first alignment (a multiple of the fine one)
    tolerance: float = 0.05
    tolerances: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2])  # the replay beside the
    # exhaustive choice at each
    command: str = "???"
    template: str = "conf/pages/granularity.md.j2"  # the page's prose


@dataclass
class PageStep:
    """A study step that measures into files beside its page and renders it; ``page_only``: the page again from
    those files, no model run."""

    out_dir: str = "???"
    command: str = "???"  # the command the page says rebuilt it
    page_only: bool = False


@dataclass
class ProxyStudyConfig(PageStep):
    zoo: ZooConfig = field(default_factory=ZooConfig)
    toy_profiles: str = "???"
    real_profiles: str = "???"
    split: str = "test"
    tolerance: float = 0.05
    threads: int = 2
    template: str = "conf/pages/proxy.md.j2"  # the page's prose


@dataclass
class BenchProfileCostConfig(PageStep):
    zoo: ZooConfig = field(default_factory=ZooConfig)
    receiver: str = "???"  # names in the zoo family
    sender: str = "???"
    task: str = "???"
    contexts: int = 2  # the profile split's first contexts, every question of each
    granularity: int = 5  # the profile's plans: full reuse, every aligned group, full prefill
    paths: list[str] = field(default_factory=lambda: ["float32x1", "float32x4", "bfloat16x1", "bfloat16x4"])
    rounds: int = 3
    batch_size: int = 8
    threads: int = 2
    tolerance: float = 0.05
    template: str = "conf/pages/profile_cost.md.j2"


@dataclass
class QuestionBudgetConfig(PageStep):
    zoo: ZooConfig = field(default_factory=ZooConfig)
    profiles: str = "???"  # a glob of profile files (their own tasks only)
    budgets: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # and every question the profile read
    draws: int = 20  # per budget, the same for every rule
    rules: list[str] = field(default_factory=lambda: ["point", "bootstrap95"])
    tolerance: float = 0.05
    seed: int = 0
    split: str = "test"
    batch_size: int = 16
    threads: int = 2
    template: str = "conf/pages/question_budget.md.j2"


@dataclass
class BenchAnswerPathConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    profiles: list[str] = field(default_factory=list)
    tolerance: float = 0.05
    split: str = "test"
    contexts: int = 5
    repeats: int = 3
    threads: int = 2
    out: str = "???"


@dataclass
class WorkloadConfig:
    """What a server is asked: one task split's questions over its shared contexts, by Poisson arrivals or a trace."""

    task: str = "???"
    split: str = "test"
    qps: float = 1.0  # Poisson arrivals: mean requests per second
    requests: int = 8
    seed: int = 0
    trace: str | None = None  # a JSONL trace (serve.workload.read_trace) instead of Poisson arrivals
    readers: list[str] = field(default_factory=list)  # each drawn context asked by these receivers in turn, in this
    # order (serve.workload.shared_context_queries); empty: each request a uniformly drawn receiver and question
    shuffle_readers: bool = False  # readers in a random order per context instead
    only: list[str] = field(default_factory=list)  # serve just these receivers' requests of the trace drawn (ids and
    # arrivals kept): the same requests again without the others beside them (a check run)


@dataclass
class ServeConfig:
    """The executing server (experiments/serve.py): which family models serve, which pairs share and how, the load."""

    zoo: ZooConfig = field(default_factory=ZooConfig)
    engine: str = "droidspeak"  # or vllm: the same queries through vLLM (its own venv: make vllm-venv), no plans
    system: str = "${.engine}"  # what a page calls this configuration (e.g. full_prefill, droidspeak, vllm)
    receivers: list[str] = field(default_factory=list)  # family model names, every one a receiver
    plans: list[str] = field(default_factory=list)  # "RECEIVER<-OWNER=PLAN": RECEIVER may read OWNER's caches with
    # PLAN, a reuse plan or profile:PATH[@TOL][@RULE]; a pair not named never shares
    allow_foreign_profile: bool = False  # apply a profile measured on other model identities (e.g. another dtype);
    # the run's summary records each profile's dtype and that it was foreign
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    max_batch: int = 4
    store_mib: float = 2048.0  # the cache tier's bound (LRU; vLLM: each engine's KV cache, VLLM_CPU_KVCACHE_SPACE)
    vllm_mode: str = "adapters"  # engine=vllm: LoRAs as adapters of one engine, or merged (one engine per receiver)
    threads: int = 2
    dtype: str = "float32"
    device: str = "cpu"
    out: str = "outputs/serve/requests.jsonl"  # one row per request; beside it <stem>.run.json: the run's summary
    check: str | None = None  # why this run serves requests again (e.g. workload.only): a check, not a load point


@dataclass
class ServingPageConfig:
    rows_dir: str = "???"  # the serving runs: <system>-qps<load>.jsonl and .run.json
    out_dir: str = "???"
    template: str = "conf/pages/serving.md.j2"
    slo_factor: float = 4.0  # the SLO: p90 TTFT within this many single-request TTFTs of our full prefill
    reference_system: str = "full_prefill"
    command: str = "???"


@dataclass
class RetimeConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    results: str = "???"  # a study's results.jsonl: its rows are re-timed, not re-scored
    out: str | None = None  # default: timings.jsonl beside the results, where read_results joins it
    contexts: int = 5  # the first contexts of each row's task split, one at a time
    repeats: int = 3  # interleaved rounds per context
    warmup: int = 1  # untimed rounds first
    threads: int = 2
    device: str = "cpu"


@dataclass
class BenchTransferConfig:
    zoo: ZooConfig = field(default_factory=ZooConfig)
    pairs: dict[str, list[str]] = field(default_factory=dict)  # conf/pair name -> its plans
    codecs: list[str] = field(default_factory=list)
    split: str = "test"
    contexts: int = 5  # the first contexts of the split, each timed on its own
    repeats: int = 3
    threads: int = 2
    out: str = "???"


@dataclass
class VerifyModelConfig:
    model: str | None = None
    gguf: GgufConfig | None = None  # +gguf=NAME (conf/gguf/): a GGUF from pip packages, converted once
    adapter: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    long_context: int = 0
    out: str | None = None


SCHEMAS = {  # conf/<name>.yaml -> its schema
    "evaluate": EvaluateConfig, "profile": ProfileJobConfig, "build_zoo": BuildZooConfig,
    "robustness": RobustnessConfig, "run_study": RunStudyConfig, "figures": FiguresConfig,
    "wandb_report": WandbReportConfig, "keep_rows": KeepRowsConfig, "readme_glance": ReadmeGlanceConfig,
    "study_page": StudyPageConfig, "alora_page": AloraPageConfig, "transfer_page": TransferPageConfig,
    "proxy_study": ProxyStudyConfig, "bench_answer_path": BenchAnswerPathConfig, "retime": RetimeConfig,
    "bench_transfer": BenchTransferConfig, "verify_model": VerifyModelConfig,
    "bench_profile_cost": BenchProfileCostConfig, "question_budget": QuestionBudgetConfig, "serve": ServeConfig,
    "serving_page": ServingPageConfig, "granularity_page": GranularityPageConfig,
}


def safe_name(pair: str) -> str:
    """A pair name as a folder name (``r<-s`` → ``r_from_s``); also the ``${safe_name:...}`` config resolver."""
    return pair.replace("<-", "_from_").replace("/", "_")


def register_configs() -> None:
    if not OmegaConf.has_resolver("safe_name"):
        OmegaConf.register_new_resolver("safe_name", safe_name)
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=f"{name}_schema", node=schema)
    store.store(group="zoo", name="zoo_schema", node=ZooConfig)
    store.store(group="pair", name="pair_schema", node=PairConfig)
    store.store(group="task", name="task_schema", node=TaskConfig)
    store.store(group="method", name="method_schema", node=MethodConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)


register_configs()


# ---- values a schema's types cannot refuse, checked when a job reads its config (before any model loads) ----------
AT_LEAST_ONE = ("batch_size", "task.limit", "timing.contexts", "timing.repeats", "contexts", "repeats", "rounds",
                "granularity", "coarse_granularity", "max_transitions", "transition_plans_per_count", "proxy_samples",
                "max_groups", "max_group_layers", "transition_layers", "proxy_search_repeats", "plans_per_batch",
                "draws", "zoo.wide_test_contexts", "zoo.dev_contexts")
FRACTIONS = {"tolerance": (0.0, 1.0), "method.tolerance": (0.0, 1.0), "method.ratio": (0.0, 1.0),
             "hybrid_fractions": (0.0, 1.0), "cacheblend_ratios": (0.0, 1.0)}
DTYPES = ("float32", "bfloat16", "float16")
SPLITS = ("profile", "test", WIDE_TEST, DEV)  # test_wide and dev: where the family sets their sizes (zoo.*_contexts)
FOLDERS = ("output_root", "results_dir", "cache_dir")


# ---- keys: a setting no schema declares is read by no code -------------------------------------------------------
def _schema_of(annotation) -> type | None:
    """The dataclass a field holds (through ``X | None``), or None for a scalar, a list or a free-form dict."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((arg for arg in typing.get_args(annotation) if dataclasses.is_dataclass(arg)), None)
    return None


def unknown_key(schema: type, path: str) -> str | None:
    """Why ``path`` names no setting of ``schema`` (its valid keys where it strays, and the closest), or None when
    it does or leaves the schema's reach (a free-form dict such as ``method_settings``)."""
    node, parts = schema, path.split(".")
    for depth, part in enumerate(parts):
        fields = typing.get_type_hints(node)
        if part not in fields:
            where = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f"; did you mean {'.'.join([*parts[:depth], close[0]])}?" if close else ""
            return f"{path}: no such setting; {where or 'this entry point'} takes {', '.join(fields)}{hint}"
        node = _schema_of(fields[part])
        if node is None:
            return None
    return None


def check_keys(cfg) -> None:
    """Every key of a composed config is one its schema declares: a ``+key=value`` (or a key a config file adds)
    that no code reads is an error naming the valid keys, not a run that quietly ignores it."""
    root = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(root):
        return

    def walk(node, schema: type, prefix: str) -> None:
        fields = typing.get_type_hints(schema)
        for key in node.keys():
            path = f"{prefix}{key}"
            if key not in fields:
                raise DroidSpeakError(unknown_key(root, path))
            inner, child = _schema_of(fields[key]), node._get_node(key)
            if inner is not None and OmegaConf.is_dict(child) and not child._is_none() and not child._is_missing():
                walk(child, inner, f"{path}.")

    walk(cfg, root, "")


def check_values(cfg) -> None:
    """Counts at least 1, fractions inside (0, 1], a known choice rule, a device this torch can use, a known dtype and
    split, and output folders that can be written: each a DroidSpeakError naming the setting, before hours of work
    and not after."""
    check_keys(cfg)

    def value(path: str):
        return OmegaConf.select(cfg, path, default=None)

    for path in AT_LEAST_ONE:
        if value(path) is not None and value(path) < 1:
            raise DroidSpeakError(f"{path}={value(path)}: must be at least 1 (leave it unset for no limit)")
    for path, (low, high) in FRACTIONS.items():
        for number in value(path) if OmegaConf.is_list(value(path)) else [value(path)]:
            if number is not None and not low < number <= high and not (path.endswith("tolerance") and number == 0):
                raise DroidSpeakError(f"{path}={number}: must lie in ({low:g}, {high:g}]")
    for path in ("choice_rule", "rules"):
        for name in value(path) if OmegaConf.is_list(value(path)) else [value(path)]:
            try:
                name is None or choice_rule(str(name))
            except PlanError as err:
                raise DroidSpeakError(f"{path}={value(path)}: {err}") from None
    if value("dtype") is not None and value("dtype") not in DTYPES:
        raise DroidSpeakError(f"dtype={value('dtype')}: one of {', '.join(DTYPES)}")
    split = value("split") if value("split") is not None else value("task.split")
    if split is not None and value("task.source") in (None, "zoo") and split not in SPLITS:
        raise DroidSpeakError(f"split {split!r}: the embedded tasks have the splits {', '.join(SPLITS)}")
    for drawn, size in ((WIDE_TEST, "zoo.wide_test_contexts"), (DEV, "zoo.dev_contexts")):
        if split == drawn and value(size) is None:
            raise DroidSpeakError(f"split {drawn}: the family draws it only where {size} is set (how many contexts "
                                  "it holds)")
    if value("device") is not None:
        _check_device(str(value("device")))
    for path in FOLDERS + (("output",) if value("output") else ()):
        if value(path):
            _check_writable(path, Path(str(value(path))), folder=path != "output")


def _check_device(device: str) -> None:
    import torch

    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return
    if kind != "cuda" or (index and not index.isdigit()):
        raise DroidSpeakError(f"device={device}: cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DroidSpeakError(f"device={device}: this torch ({torch.__version__}) sees no CUDA device; use device=cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise DroidSpeakError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s)")


def _check_writable(setting: str, path: Path, *, folder: bool) -> None:
    """The folder (or a file's folder) exists or can be made, and can be written."""
    if folder and path.exists() and not path.is_dir():
        raise DroidSpeakError(f"{setting}={path}: a file, not a folder")
    if not folder and path.is_dir():
        raise DroidSpeakError(f"{setting}={path}: a folder, not a file path")
    existing = path if folder else path.parent
    while not existing.exists():
        if existing.is_symlink():
            raise DroidSpeakError(f"{setting}={path}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise DroidSpeakError(f"{setting}={path}: {existing} is a file, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DroidSpeakError(f"{setting}={path}: {existing} is not writable")
