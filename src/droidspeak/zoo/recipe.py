"""Typed recipe of the embedded family (Hydra structured configs).

``ZooConfig`` is everything that determines the family's checkpoints, task files and measurements; its
sha256 (with ``CODE_VERSION``) names the cache folder, so a changed recipe rebuilds and an unchanged one never
does. Optional fields left unset (None) are not hashed, so adding one keeps every existing family's name.
What does not change the result (progress bar, forced rebuild) is ``build_zoo.py``'s own config. The schemas are
registered in Hydra's ConfigStore by droidspeak.sweep.config (``zoo/zoo_schema``), so a misspelt key fails when the
config is composed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from droidspeak.zoo.gguf_base import GgufConfig
from droidspeak.zoo.tasks import TaskConfig
from droidspeak.zoo.train import ModelConfig
from droidspeak.zoo.world import WorldConfig


@dataclass
class PretrainConfig:
    """Two phases at a constant LR: induction documents, then world documents mixed with induction ones."""

    induction_steps: int = 1500  # induction documents only (cheap: short documents)
    induction_pairs: tuple[int, int] = (2, 8)  # (a, b) pairs per induction document, uniform
    induction_shuffle: float = 0.5  # share of shuffled-pair (lookup) documents; exact copies alone teach a
    # positional copy that does not transfer to lookups in world documents
    world_steps: int = 600
    facts: tuple[int, int] = (4, 24)  # curriculum: facts per world document grow from the first to the second
    curriculum_fraction: float = 0.5  # share of the world phase over which the facts grow
    induction_mix: float = 0.3  # share of induction documents in the world phase
    lr: float = 1e-3
    batch_size: int = 16
    warmup: int = 50


@dataclass
class VariantConfig:
    """A fine-tune of the base: ``full`` (all weights), ``lora`` (peft adapter, saved unmerged) or ``alora`` (an
    activated LoRA: the adapter applies from the tokens of ``invocation`` on; an extension only)."""

    kind: str = "full"
    tasks: list[str] = field(default_factory=lambda: ["mdqa"])  # the first is the variant's own task
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 16
    rank: int = 8  # lora only
    alpha: int = 16  # lora only
    invocation: str | None = None  # alora only: the text whose tokens switch the adapter on (the task's query opening)
    examples_of: str | None = None  # train on exactly this variant's examples, in its order (a like-for-like twin)
    seed: int | None = None  # the fine-tune's own seed (its LoRA's init and the question each example asks), to
    # train a twin that differs only in it; None: the family's seed. The contexts it reads are the family's either way
    train_size: list[int] | None = None  # [min, max] size of its training contexts, in its task's units (None: the
    # task's train_size): a fine-tune trained at the length it is judged on. Another size draws other contexts from
    # the task's training stream, so the drawn splits are checked against them (zoo.family)


@dataclass
class PairConfig:
    """A measured pair: the receiver reuses the sender's cache on the receiver's own task."""

    receiver: str = "???"
    sender: str = "???"


@dataclass
class MeasureConfig:
    split: str = "test"
    max_questions: int = 40  # per (model or pair, task)
    tolerance: float = 0.05  # "recovers": within this relative loss of the receiver
    batch_size: int = 32
    max_group_layers: int | None = None  # scan contiguous groups up to this size (None: all; 0: none, leave it
    # to the profiler, as a 30-layer model must)


@dataclass
class ZooConfig:
    name: str = "default"
    seed: int = 0
    gguf: GgufConfig | None = None  # set: the base is this pretrained GGUF (converted, not trained); the tasks are
    # then the long_* ones, drawn from a Lexicon, and world / model / pretrain are unused
    threads: int = 1  # torch threads while building (part of the recipe: results depend on it). One thread:
    # these small matmuls gain little from two, and a shared CPU made two threads ~8x slower (oversubscription)
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # conf/zoo/<name>.yaml lists them
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    variants: dict[str, VariantConfig] = field(default_factory=dict)
    pairs: list[PairConfig] = field(default_factory=list)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    # fine-tunes trained later on top of the built family: hashed apart (zoo.family.extension_root), so adding one
    # keeps the family's name, its checkpoints and every result keyed by them
    extensions: dict[str, VariantConfig] | None = None
    # contexts of each task's wide held-out split (zoo.tasks.WIDE_TEST): the test split's contexts followed by more of
    # the same stream, for a test with the power to show non-inferiority; hashed apart (it adds questions, changes no
    # checkpoint), so setting it keeps the family's name
    wide_test_contexts: int | None = None
    # contexts of each task's development split (zoo.tasks.DEV): a stream of its own, disjoint from every other split,
    # to tune recipes on without reading a profile or test question; hashed apart like wide_test_contexts
    dev_contexts: int | None = None


# ---- recipe identity ----------------------------------------------------------------------------------------
CODE_VERSION = "zoo-1"  # bump when code changes what a recipe produces
BASE = "base"  # the base model's name in a family (a pair's sender may be it)


def training_task(zoo: ZooConfig, variant: VariantConfig, task: str) -> TaskConfig:
    """``task``'s config as ``variant`` trains on it: with the training-context sizes of the variant whose examples it
    reads (its own, or its ``examples_of``'s), where that variant sets any."""
    source = zoo.variants[variant.examples_of] if variant.examples_of is not None else variant
    if source.train_size is None:
        return zoo.tasks[task]
    return dataclasses.replace(zoo.tasks[task], train_size=list(source.train_size))


def zoo_config(cfg) -> ZooConfig:
    """The typed ZooConfig of ``cfg`` (a ZooConfig, or a config holding one under ``zoo``; typed or a DictConfig)."""
    if isinstance(cfg, ZooConfig):
        return cfg
    inner = getattr(cfg, "zoo", None)  # a build_zoo / evaluate / profile config around the recipe
    if inner is not None:
        cfg = inner
    merged = OmegaConf.merge(OmegaConf.structured(ZooConfig), cfg)
    return OmegaConf.to_object(merged)


def _set_fields(node):
    """The recipe without unset optional fields: a field added later with a None default changes no hash."""
    if isinstance(node, dict):
        return {k: _set_fields(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_set_fields(v) for v in node]
    return node


def recipe_hash(cfg) -> str:
    recipe = _set_fields(dataclasses.asdict(zoo_config(cfg)))
    recipe.pop("extensions", None)  # hashed apart (extension_root): an extension leaves the family as it was
    for drawn_later in ("wide_test_contexts", "dev_contexts"):  # questions drawn after the build: same checkpoints
        recipe.pop(drawn_later, None)
    payload = json.dumps({"code": CODE_VERSION, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def extension_hash(zoo: ZooConfig, name: str) -> str:
    """An extension's identity: the family's recipe and its own."""
    spec = _set_fields(dataclasses.asdict(zoo.extensions[name]))
    payload = json.dumps(
        {"code": CODE_VERSION, "family": recipe_hash(zoo), "name": name, "recipe": spec}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()
