"""The embedded family: deterministic disjoint tasks, a prompt tokenization the backend can cut, a miniature
family that trains, loads through the engine and is built once per recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
from droidspeak.track.results import read_rows
from droidspeak.zoo import family as family_mod
from droidspeak.zoo.builder import MARKER, FamilyBuilder
from droidspeak.zoo.recipe import ZooConfig, recipe_hash
from droidspeak.zoo.task_metrics import edit_similarity, exact_match, f1, normalize_answer, rouge_l
from droidspeak.zoo.tasks import (
    DEV,
    SPLITS,
    TASKS,
    WIDE_TEST,
    TaskConfig,
    build_splits,
    score,
    trained_contexts,
    wide_test_rows,
)
from droidspeak.zoo.tokenizer import build_tokenizer
from droidspeak.zoo.world import World, WorldConfig

TOY_TASKS = sorted(t for t in TASKS if not t.startswith("long_"))  # the long_* ones: tests/test_real_family.py

CONF = str(Path(__file__).resolve().parents[1] / "conf")
SMALL = TaskConfig(size_min=3, size_max=5, questions=3, contexts={"train": 12, "profile": 6, "test": 6})


def compose_zoo(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("build_zoo", overrides=list(overrides))


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig(seed=3))


@pytest.mark.parametrize("task", TOY_TASKS)
def test_task_generators_are_deterministic_from_their_seed(world, task):
    first, again = build_splits(world, task, SMALL, seed=7), build_splits(world, task, SMALL, seed=7)
    other = build_splits(world, task, SMALL, seed=8)
    assert first == again
    assert first["test"] != other["test"]


@pytest.mark.parametrize("task", TOY_TASKS)
def test_splits_are_disjoint_and_share_contexts_across_questions(world, task):
    splits = build_splits(world, task, SMALL, seed=1)
    contexts = {split: {r["context"] for r in rows} for split, rows in splits.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not contexts[a] & contexts[b], (a, b)
    for split, rows in splits.items():
        assert len(contexts[split]) == SMALL.contexts[split]
        assert len(rows) > len(contexts[split])  # several questions per context
        assert {r["split"] for r in rows} == {split} and {r["task"] for r in rows} == {task}
    row = splits["test"][0]
    assert set(row) == {"id", "task", "split", "context_id", "context", "question", "answer", "answers"}


@pytest.mark.parametrize("task", TOY_TASKS)
def test_context_and_question_tokenize_to_the_prompt(world, task):
    tokenizer = build_tokenizer(world)
    for row in build_splits(world, task, SMALL, seed=2)["test"]:
        assert "\n\n" not in row["question"]
        ids = lambda text: tokenizer(text)["input_ids"]  # noqa: E731
        prompt = ids(row["context"] + "\n\n" + row["question"])
        assert ids(row["context"]) + ids(row["question"]) == prompt
        assert tokenizer.unk_token_id not in prompt + ids(row["answer"])
        assert tokenizer.decode(ids(" " + row["answer"])) == row["answer"]
        assert score(task, row["answer"], row["answers"]) == 1.0


def test_metrics_match_their_definitions():
    assert normalize_answer("The  Tovar!") == "tovar"
    assert exact_match("the tovar", "Tovar") == 1.0
    assert f1("Kari tovar", "Zole tovar") == pytest.approx(0.5)
    assert f1("", "x") == 0.0
    assert rouge_l("a1 b2 c3 d4", "a1 c3 d4") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert edit_similarity("x , y )\nmore", "x , y )") == 1.0
    assert 0 < edit_similarity("x , z )", "x , y )") < 1


@pytest.mark.parametrize("task", ["mdqa", "code"])
def test_the_wide_test_split_extends_the_test_split_with_unseen_contexts(world, task):
    splits = build_splits(world, task, SMALL, seed=1)
    trained = trained_contexts(world, task, SMALL, 1, splits, consumed=50)  # what fine-tunes read: the train split too
    assert {r["context"] for r in splits["train"]} < trained and len(trained) == 50
    wide = wide_test_rows(world, task, SMALL, 1, 15, splits, trained)
    contexts = list(dict.fromkeys(r["context"] for r in wide))
    assert len(contexts) == 15 and {r["split"] for r in wide} == {WIDE_TEST}
    assert [{**r, "split": "test"} for r in wide[: len(splits["test"])]] == splits["test"]  # the test split, first
    assert not set(contexts) & ({r["context"] for r in splits["profile"]} | trained)
    read = trained | set(contexts[8:10])  # had a fine-tune read two of them, the split would pass them by
    again = list(dict.fromkeys(r["context"] for r in wide_test_rows(world, task, SMALL, 1, 15, splits, read)))
    assert again[:8] == contexts[:8] and not set(again) & read and len(again) == 15
    other = build_splits(world, task, SMALL, seed=2)  # a family whose test split is not this stream's is refused
    with pytest.raises(ValueError, match="no longer draws this family's test split"):
        wide_test_rows(world, task, SMALL, 1, 15, {**splits, "test": other["test"]}, trained)


def test_the_wide_test_split_changes_no_family_name_and_needs_its_size():
    mini = compose_zoo("zoo=mini").zoo
    assert recipe_hash(compose_zoo("zoo=mini", "+zoo.wide_test_contexts=40").zoo) == recipe_hash(mini)
    from droidspeak.errors import DroidSpeakError
    from droidspeak.sweep.config import check_values

    with pytest.raises(DroidSpeakError, match="zoo.wide_test_contexts"):
        check_values(OmegaConf.create({"split": WIDE_TEST, "zoo": {"name": "mini"}}))
    with pytest.raises(DroidSpeakError, match="zoo.dev_contexts"):
        check_values(OmegaConf.create({"task": {"split": DEV}, "zoo": {"name": "mini"}}))
    assert recipe_hash(compose_zoo("zoo=mini", "zoo.dev_contexts=8").zoo) == recipe_hash(mini)


def test_a_built_family_draws_its_wide_test_and_dev_splits_once_beside_its_others(mini_family, monkeypatch):
    cfg, family = mini_family
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(family.root.parent))
    wide = family_mod.build_family(OmegaConf.merge(cfg, {"wide_test_contexts": 9, "dev_contexts": 5}),
                                   progress=False)
    assert wide.root == family.root and WIDE_TEST not in family.task_files[next(iter(family.task_files))]
    for task, files in wide.task_files.items():
        rows, test = read_rows(files[WIDE_TEST]), read_rows(files["test"])
        assert files[WIDE_TEST].parent == files["test"].parent and len({r["context"] for r in rows}) == 9
        assert [r["id"] for r in rows[: len(test)]] == [r["id"] for r in test]
        dev = {r["context"] for r in read_rows(files[DEV])}
        assert len(dev) == 5 and {r["split"] for r in read_rows(files[DEV])} == {DEV}
        others = {r["context"] for split in ("train", "profile", "test", WIDE_TEST) for r in read_rows(files[split])}
        assert not dev & others, task
    with pytest.raises(ValueError, match="fewer than"):
        family_mod.build_family(OmegaConf.merge(cfg, {"wide_test_contexts": 1}), progress=False)


def test_a_fine_tune_may_train_on_contexts_of_its_own_size_and_no_drawn_split_holds_one(mini_family, tmp_path):
    from droidspeak.zoo.builder import task_world
    from droidspeak.zoo.recipe import extension_hash, training_task, zoo_config

    cfg, family = mini_family
    cfg, mini = OmegaConf.to_container(cfg), zoo_config(cfg)  # a plain dict takes new extensions
    long = {"kind": "lora", "tasks": ["code"], "steps": 6, "batch_size": 2, "rank": 2, "alpha": 4}
    zoo = zoo_config(OmegaConf.merge(cfg, {"extensions": {"long": {**long, "train_size": [5, 6]}}}))
    same = zoo_config(OmegaConf.merge(cfg, {"extensions": {"long": long}}))
    assert recipe_hash(zoo) == recipe_hash(mini) and extension_hash(zoo, "long") != extension_hash(same, "long")
    assert training_task(zoo, zoo.extensions["long"], "code").train_size == [5, 6]
    assert training_task(same, same.extensions["long"], "code") == mini.tasks["code"]
    splits = {split: read_rows(family.task_files["code"][split]) for split in ("profile", "test")}
    world = task_world(mini)
    read = family_mod._contexts_read_in_training(zoo, world, "code", splits)
    default = family_mod._contexts_read_in_training(same, world, "code", splits)
    longer = read - default  # the 12 contexts the extension read, drawn at its own size, beside the others'
    assert len(longer) == 12 and all(len(c) > max(map(len, default)) for c in longer)
    for bad in ([6, 5], [0, 2], [5]):
        with pytest.raises(ValueError, match="train_size"):
            FamilyBuilder(zoo_config(OmegaConf.merge(cfg, {"extensions": {"long": {**long, "train_size": bad}}})),
                          tmp_path, False, print).check()
    with pytest.raises(ValueError, match="one task"):
        FamilyBuilder(zoo_config(OmegaConf.merge(cfg, {"extensions": {"long": {
            **long, "tasks": ["code", "mdqa"], "train_size": [5, 6]}}})), tmp_path, False, print).check()


def test_an_extension_reads_only_contexts_the_replay_names_and_never_a_drawn_split(mini_family, tmp_path, monkeypatch):
    import shutil

    from droidspeak.zoo import builder as builder_mod
    from droidspeak.zoo.builder import task_world
    from droidspeak.zoo.recipe import zoo_config

    cfg, family = mini_family
    shutil.copytree(family.root, tmp_path / family.root.name)  # a cache of its own: the extension is trained here
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(tmp_path))
    long = {"kind": "lora", "tasks": ["code"], "steps": 6, "batch_size": 2, "rank": 2, "alpha": 4, "train_size": [5, 6]}
    drawn = OmegaConf.merge(OmegaConf.to_container(cfg), {"dev_contexts": 5})
    extended = OmegaConf.merge(drawn, {"extensions": {"long": long}})
    built = family_mod.build_family(drawn, progress=False)  # the dev split, drawn before the extension exists
    read, stream = [], builder_mod.train_stream

    def recorded(*args, **kwargs):
        for context, qa in stream(*args, **kwargs):
            read.append(context)
            yield context, qa

    monkeypatch.setattr(builder_mod, "train_stream", recorded)
    family_mod.build_family(extended, progress=False)
    splits = {split: read_rows(built.task_files["code"][split]) for split in ("profile", "test")}
    replayed = family_mod._contexts_read_in_training(zoo_config(extended), task_world(zoo_config(extended)), "code",
                                                     splits)
    assert len(read) == 12 and set(read) <= replayed  # what training read is what the drawn splits are kept from
    dev = sorted(row["context"] for row in read_rows(built.task_files["code"][DEV]))
    original = family_mod._contexts_read_in_training
    monkeypatch.setattr(family_mod, "_contexts_read_in_training", lambda zoo, world, task, splits: original(
        zoo, world, task, splits) | ({dev[0]} if task == "code" else set()))  # had a fine-tune read a dev context
    monkeypatch.setattr(family_mod, "_attach_extension", lambda *a, **k: pytest.fail("trained before the refusal"))
    with pytest.raises(ValueError, match="code: 1 context.* read in training"):
        family_mod.build_family(extended, progress=False)


def test_every_shipped_extension_is_found_under_the_name_its_recipe_hashes_to():
    from droidspeak.zoo.family import extension_root, extensions_reference, family_root, reference_root
    from droidspeak.zoo.recipe import zoo_config

    for path in sorted((Path(CONF) / "zoo").glob("*.yaml")):
        zoo = zoo_config(compose_zoo(f"zoo={path.stem}"))
        reference = reference_root(zoo)
        if not reference.exists():
            continue
        assert reference.name == family_root(zoo).name, path.stem  # a new optional field moved no family's name
        shipped = extensions_reference(reference)
        for name in zoo.extensions or {}:
            assert (shipped / extension_root(family_root(zoo), zoo, name).name).is_dir(), f"{path.stem}: {name}"


def test_configs_compose_and_a_misspelt_key_fails():
    default = compose_zoo()
    assert default.zoo.model.layers >= 8 and default.zoo.model.kv_heads < default.zoo.model.heads
    kinds = {v.kind for v in default.zoo.variants.values()}
    assert kinds == {"full", "lora"} and sum(v.kind == "lora" for v in default.zoo.variants.values()) >= 2
    assert compose_zoo("zoo=mini").zoo.name == "mini"
    with pytest.raises(Exception):
        compose_zoo("zoo.model.layerz=3")


def test_cache_key_changes_with_the_recipe():
    mini = compose_zoo("zoo=mini").zoo
    same = compose_zoo("zoo=mini").zoo
    changed = compose_zoo("zoo=mini", "zoo.variants.ft-mdqa.steps=3").zoo
    reseeded = compose_zoo("zoo=mini", "zoo.seed=1").zoo
    assert recipe_hash(mini) == recipe_hash(same)
    assert recipe_hash(mini) == recipe_hash(OmegaConf.to_object(mini))
    assert len({recipe_hash(c) for c in (mini, changed, reseeded)}) == 3
    assert recipe_hash(mini) != recipe_hash(ZooConfig())


@pytest.mark.slow
def test_mini_family_is_standard_hf_and_loads_through_the_engine(mini_family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from droidspeak.reuse import ReusePair

    cfg, fam = mini_family
    assert (fam.root / MARKER).exists()
    assert set(fam.models) == {"base", *cfg.variants}
    for name, path in fam.models.items():
        assert (path / "README.md").read_text().startswith("# droidspeak zoo")
        assert (path / "tokenizer.json").exists()
        if name in fam.adapters:
            assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
                fam.adapters[name]
            )
        else:
            AutoModelForCausalLM.from_pretrained(path)
            AutoTokenizer.from_pretrained(path)
    report = json.loads((fam.root / "family.json").read_text())
    assert len(report["pairs"]) == len(cfg.pairs) and all("best_group" in p for p in report["phenomenon"].values())
    for task, splits in fam.task_files.items():
        assert set(splits) == set(SPLITS) and read_rows(splits["test"])
    name, receiver, sender, task = fam.pairs[-1]
    pair = ReusePair(fam.load(sender), fam.load(receiver))
    rows = read_rows(fam.task_files[task]["test"])[:2]
    caches = pair.prefill([r["context"] for r in rows])
    everything = pair.generate(
        caches, [r["question"] for r in rows], f"recompute:0-{pair.num_layers - 1}", max_new_tokens=3
    )
    assert everything == pair.generate(caches, [r["question"] for r in rows], "full_prefill", max_new_tokens=3)


@pytest.mark.slow
def test_building_twice_reuses_the_cache(mini_family, monkeypatch):
    cfg, fam = mini_family
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(fam.root.parent))

    def no_training(self):
        raise AssertionError("a cached recipe was rebuilt")

    monkeypatch.setattr(FamilyBuilder, "run", no_training)
    again = family_mod.build_family(cfg, progress=False)
    assert again.root == fam.root and again.models == fam.models


@pytest.mark.slow
def test_same_seed_gives_identical_checkpoints_and_a_killed_build_is_redone(mini_family, tmp_path, monkeypatch):
    cfg, fam = mini_family
    monkeypatch.setenv("DROIDSPEAK_CACHE", str(tmp_path))
    root = family_mod.family_root(cfg)
    root.mkdir(parents=True)
    (root / "half-written").write_text("killed")  # no marker: must be rebuilt, not used
    again = family_mod.build_family(cfg, progress=False)
    assert not (again.root / "half-written").exists()
    for name, path in fam.models.items():
        for weights in path.glob("*.safetensors"):
            assert weights.read_bytes() == (again.models[name] / weights.name).read_bytes(), (name, weights.name)
    torch.testing.assert_close(
        torch.tensor(json.loads((fam.root / "family.json").read_text())["accuracy"]["base"]["mdqa"]),
        torch.tensor(json.loads((again.root / "family.json").read_text())["accuracy"]["base"]["mdqa"]),
    )


def test_a_lora_merged_for_vllm_computes_what_the_engine_loads(mini_family):
    """Family.export_merged writes a LoRA merged into its base as a plain HF folder (vLLM's merged mode serves it):
    loaded as a model of its own it gives the engine's logits for that LoRA exactly; written once; a model that is
    not a LoRA has nothing to merge."""
    from droidspeak.engine.loading import load_model
    from droidspeak.errors import DroidSpeakError

    _, family = mini_family
    merged = family.export_merged("lora-code")
    assert merged == family.merged_dir("lora-code") and (merged / MARKER).is_file()
    written = (merged / "model.safetensors").stat().st_mtime_ns
    assert family.export_merged("lora-code") == merged and (merged / "model.safetensors").stat().st_mtime_ns == written
    assert family.exported_merged("lora-code") == merged
    with pytest.raises(DroidSpeakError, match="lora-summary is not merged yet.*export_merged=\\[lora-summary\\]"):
        family.exported_merged("lora-summary")  # what vLLM's venv (no peft) reads: refused until written
    ids = torch.arange(3, 40).unsqueeze(0)
    engine, plain = family.load("lora-code", dtype="float32"), load_model(str(merged), dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(plain.model(ids).logits, engine.model(ids).logits, rtol=0, atol=0)
        assert not torch.equal(plain.model(ids).logits, family.load("base", dtype="float32").model(ids).logits)
    with pytest.raises(DroidSpeakError, match="not a LoRA"):
        family.merged_dir("ft-mdqa")
