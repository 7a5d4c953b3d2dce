"""Training a family: its task files, base (pretrained here or converted from a GGUF), fine-tunes, measurements
and report, written into a folder that ``zoo.family`` then names, installs and serves; or one extension of a
built family (``extend``), into a folder of its own.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from droidspeak.engine.loading import BASE_RECORD, base_weights_digest, find_tokens
from droidspeak.zoo import cards
from droidspeak.zoo.corpus import Encoder, Example, TokenizerEncoder, induction_document, qa_example, world_document
from droidspeak.zoo.gguf_base import convert_base
from droidspeak.zoo.long_tasks import Lexicon
from droidspeak.zoo.recipe import BASE, CODE_VERSION, ZooConfig, extension_hash, recipe_hash, training_task
from droidspeak.zoo.tasks import TASKS, build_splits, train_sizes, train_stream, write_jsonl
from droidspeak.zoo.tokenizer import build_tokenizer
from droidspeak.zoo.train import Curve, Schedule, add_lora, new_model, train
from droidspeak.zoo.world import World

MARKER = "DONE"  # written last: a folder without it is a killed build
EXTENSION_REPORT = "extension.json"


def task_world(zoo: ZooConfig) -> World | Lexicon:
    """What a family's tasks draw their entities from: its own World, or, for a pretrained base, a Lexicon of real
    English names."""
    return World(zoo.world) if zoo.gguf is None else Lexicon(zoo.world.seed)


class FamilyBuilder:
    """Trains a family (``run``) or one extension of a built one (``extend``) into ``root``: data, models, report."""

    def __init__(
        self, zoo: ZooConfig, root: Path, progress: bool, log: Callable[[str], None], steps: int | None = None
    ):
        self.zoo, self.root, self.log = zoo, root, log
        self.base_folder = root / "models" / BASE  # the base its adapters are trained on (load_base moves it)
        self.base_source: dict | None = None
        self.world = task_world(zoo)
        if zoo.gguf is None:  # a pretrained base's tokenizer arrives with its conversion (make_base)
            self.tokenizer = build_tokenizer(self.world)
            self.enc = Encoder(self.tokenizer)
        self.timings: dict[str, float] = {}
        self.curves: list[Curve] = []
        pretrain_steps = zoo.pretrain.induction_steps + zoo.pretrain.world_steps if zoo.gguf is None else 0
        total = steps if steps is not None else pretrain_steps + sum(v.steps for v in zoo.variants.values())
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"zoo {zoo.name}", unit="step", dynamic_ncols=True)

    def run(self) -> None:
        start = time.perf_counter()
        self.check()
        self.write_tasks()
        self.make_base()
        for name, variant in self.zoo.variants.items():
            self.finetune(name, variant)
        if self.bar is not None:
            self.bar.close()
        self.timings["train_s"] = round(time.perf_counter() - start, 1)
        measured = self.measure()
        self.timings["total_s"] = round(time.perf_counter() - start, 1)
        self.write_report(measured)
        (self.root / MARKER).write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    def check(self) -> None:
        names = set(self.zoo.variants) | {BASE}
        extensions = self.zoo.extensions or {}
        for name, variant in [*self.zoo.variants.items(), *extensions.items()]:
            kinds = ("lora", "alora") if name in extensions else ("full", "lora")
            if variant.kind not in kinds:
                raise ValueError(
                    f"variant {name}: kind must be one of {kinds}, not {variant.kind!r}"
                    + (" (an activated LoRA is an extension: zoo.extensions)" if variant.kind == "alora" else "")
                )
            if (variant.kind == "alora") != bool(variant.invocation):
                raise ValueError(f"variant {name}: an invocation belongs to (and is needed by) kind alora only")
            if variant.examples_of is not None and variant.examples_of not in self.zoo.variants:
                raise ValueError(f"variant {name}: examples_of {variant.examples_of!r} is not a variant of the family")
            if variant.examples_of is not None and variant.seed not in (None, self.zoo.seed):
                raise ValueError(f"variant {name}: examples_of copies {variant.examples_of}'s examples, which the "
                                 f"family's seed draws; a seed of its own ({variant.seed}) would draw others")
            if variant.train_size is not None:
                sizes = list(variant.train_size)
                if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1] or len(variant.tasks) != 1:
                    raise ValueError(f"variant {name}: train_size {list(variant.train_size)} must be [min, max] with "
                                     f"1 <= min <= max, for a variant of one task (sizes are in its task's units)")
                if variant.examples_of is not None:
                    raise ValueError(f"variant {name}: examples_of copies {variant.examples_of}'s examples, at their "
                                     f"sizes; a train_size of its own would draw others")
            unknown = [t for t in variant.tasks if t not in self.zoo.tasks or t not in TASKS]
            if not variant.tasks or unknown:
                raise ValueError(
                    f"variant {name}: unknown or missing tasks {unknown} (known: {sorted(self.zoo.tasks)})"
                )
        for pair in self.zoo.pairs:
            if pair.receiver not in self.zoo.variants or pair.sender not in names:
                raise ValueError(
                    f"pair {pair.receiver}<-{pair.sender}: receiver must be a variant, "
                    f"sender a model of {sorted(names)}"
                )

    # ---- data ------------------------------------------------------------------------------------------
    def write_tasks(self, write: bool = True) -> None:
        """Every task's splits (deterministic from the recipe), written to the family unless ``write`` is off."""
        self.task_files: dict[str, dict[str, Path]] = {}
        self.eval_contexts: dict[str, set[str]] = {}
        self.rows: dict[str, dict[str, list[dict]]] = {}
        for task, tcfg in self.zoo.tasks.items():
            splits = build_splits(self.world, task, tcfg, self.zoo.seed)
            self.rows[task] = splits
            if write:
                self.task_files[task] = {split: write_jsonl(rows, self.root / "tasks" / task / f"{split}.jsonl")
                                         for split, rows in splits.items()}
            self.eval_contexts[task] = {r["context"] for s in ("profile", "test") for r in splits[s]}

    def _step(self, phase: str):
        def on_step(step: int, loss: float) -> None:
            if self.bar is not None:
                self.bar.update(1)
                if step % 10 == 0:
                    self.bar.set_postfix_str(f"{phase} loss {loss:.3f}")

        return on_step

    def _train(self, model, batch, schedule: Schedule, phase: str) -> None:
        start = time.perf_counter()
        curve = train(
            model, batch, schedule, pad_id=self.tokenizer.pad_token_id, phase=phase, on_step=self._step(phase)
        )
        self.timings[phase] = round(time.perf_counter() - start, 1)
        self.curves.append(curve)
        with (self.root / "learning_curves.jsonl").open("a") as handle:
            for step, loss, seconds in curve.points:
                handle.write(
                    json.dumps({"phase": phase, "step": step, "loss": round(loss, 4), "seconds": seconds}) + "\n"
                )
        self.log(f"{phase}: {schedule.steps} steps in {self.timings[phase]} s, final loss {curve.points[-1][1]:.3f}")

    # ---- models ----------------------------------------------------------------------------------------
    def make_base(self) -> None:
        """Pretrain the toy base, or convert the pinned GGUF base (and take its tokenizer)."""
        if self.zoo.gguf is None:
            self.pretrain()
            return
        start = time.perf_counter()
        folder = self.root / "models" / BASE
        self.base_source = convert_base(self.zoo.gguf, folder)
        self.timings["convert_base"] = round(time.perf_counter() - start, 1)
        self.log(f"converted {self.zoo.gguf.file} ({self.zoo.gguf.package} {self.base_source['version']}) in "
                 f"{self.timings['convert_base']} s")
        self.load_base(folder)

    def load_base(self, folder: Path) -> None:
        """The base from its saved folder (a pretrained base brings its tokenizer)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.zoo.gguf is not None:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.enc = TokenizerEncoder(self.tokenizer)
        self.base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        self.base_folder = folder

    def extend(self, family_root: Path, name: str) -> None:
        """Train extension ``name`` on the base and data of the family at ``family_root``, into this builder's root."""
        variant = self.zoo.extensions[name]
        self.check()
        self.write_tasks(write=False)
        self.load_base(family_root / "models" / BASE)
        self.finetune(name, variant)
        invocation = oracle = None
        if variant.kind == "alora":  # as the engine loads it (base cache, nothing recomputed), against peft's forward
            from droidspeak.engine.loading import load_model
            from droidspeak.zoo.measure import activated_oracle, task_questions

            adapter = str(self.root / "models" / name)
            receiver = load_model(str(family_root / "models" / BASE), adapter=adapter)
            invocation = list(receiver.invocation)
            task = variant.tasks[0]
            questions = task_questions(task, self.rows[task]["profile"], self.tokenizer)
            oracle = activated_oracle(receiver, adapter, questions)
            self.log(f"{name} from the base's cache vs peft's aLoRA forward: {oracle}")
        report = {"name": name, "recipe_hash": extension_hash(self.zoo, name), "code_version": CODE_VERSION,
                  "family": family_root.name, "recipe": OmegaConf.to_container(OmegaConf.structured(variant)),
                  "invocation_tokens": invocation, "timings_s": self.timings, "threads": self.zoo.threads,
                  "curve": self.curves[-1].points, "oracle": oracle}
        (self.root / EXTENSION_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        (self.root / "models" / name / "README.md").write_text(cards.extension_card(report))  # not peft's, which
        # names this machine's paths
        (self.root / MARKER).write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    def pretrain(self) -> None:
        p, world, enc = self.zoo.pretrain, self.world, self.enc
        self.base = new_model(self.zoo.model, self.tokenizer, self.zoo.seed)
        rng = random.Random(f"{self.zoo.seed}-pretrain")

        def induction(step: int) -> list[Example]:
            return [
                induction_document(world, enc, rng, rng.randint(*p.induction_pairs), shuffle=p.induction_shuffle)
                for _ in range(p.batch_size)
            ]

        def documents(step: int) -> list[Example]:
            grow = min(1.0, step / max(1, p.curriculum_fraction * p.world_steps))
            top = round(p.facts[0] + grow * (p.facts[1] - p.facts[0]))
            return [
                induction_document(world, enc, rng, rng.randint(*p.induction_pairs))
                if rng.random() < p.induction_mix
                else world_document(world, enc, rng, rng.randint(p.facts[0], top))
                for _ in range(p.batch_size)
            ]

        self._train(
            self.base,
            induction,
            Schedule(p.induction_steps, p.lr, p.warmup, batch_size=p.batch_size),
            "pretrain-induction",
        )
        self._train(
            self.base, documents, Schedule(p.world_steps, p.lr, p.warmup, batch_size=p.batch_size), "pretrain-world"
        )
        self.save(self.base, BASE)

    def finetune(self, name: str, variant) -> None:
        model = copy.deepcopy(self.base)
        invocation = self.enc(variant.invocation) if variant.kind == "alora" else None
        seed = self.zoo.seed if variant.seed is None else variant.seed
        if variant.kind in ("lora", "alora"):
            model = add_lora(model, variant.rank, variant.alpha, seed, invocation=invocation)
        rng = random.Random(f"{seed}-{variant.examples_of or name}")
        streams = {}
        for t in variant.tasks:
            tcfg = training_task(self.zoo, variant, t)
            streams[t] = train_stream(self.world, t, tcfg, self.zoo.seed, self.eval_contexts[t], train_sizes(tcfg))

        def batch(step: int) -> list[Example]:
            out = []
            for i in range(variant.batch_size):
                task = variant.tasks[(step * variant.batch_size + i) % len(variant.tasks)]
                context, qa = next(streams[task])
                question, answer = rng.choice(qa)
                out.append(qa_example(self.enc, context, question, answer))
                if invocation and find_tokens(out[-1].ids, invocation) is None:  # peft would silently train nothing
                    raise ValueError(f"variant {name}: a {task} prompt does not hold the invocation "
                                     f"{variant.invocation!r} as the tokens {invocation}")
            return out

        self._train(
            model, batch, Schedule(variant.steps, variant.lr, 10, batch_size=variant.batch_size), f"finetune-{name}"
        )
        self.save(model, name)
        del model  # a 135M-parameter copy per variant adds up

    def save(self, model, name: str) -> None:
        folder = self.root / "models" / name
        if self.base_source is not None and name == BASE:
            return  # converted in place by make_base
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if (folder / "adapter_config.json").exists():  # point the adapter at the saved base, not the in-memory one
            config = json.loads((folder / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = str(self.root / "models" / BASE)
            (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            (folder / BASE_RECORD).write_text(json.dumps(  # and record that base by its weights, not its path
                {"weights": base_weights_digest(self.base_folder)}) + "\n")

    # ---- measurement -----------------------------------------------------------------------------------
    def measure(self) -> dict:
        from droidspeak.engine.loading import load_model
        from droidspeak.zoo.measure import pair_phenomenon, quality, task_questions

        m = self.zoo.measure
        base_dir = self.root / "models" / BASE
        loaded = {BASE: load_model(str(base_dir))}
        for name, variant in self.zoo.variants.items():
            folder = str(self.root / "models" / name)
            loaded[name] = load_model(str(base_dir), adapter=folder) if variant.kind == "lora" else load_model(folder)
        rows = {t: task_questions(t, self.rows[t][m.split][: m.max_questions], self.tokenizer) for t in self.zoo.tasks}
        start = time.perf_counter()
        accuracy = {
            name: {t: round(quality(model, rows[t], batch_size=m.batch_size), 4) for t in rows}
            for name, model in loaded.items()
        }
        pairs = {}
        for pair in self.zoo.pairs:
            task = self.zoo.variants[pair.receiver].tasks[0]
            key = f"{pair.receiver}<-{pair.sender}"
            pairs[key] = {"receiver_model": pair.receiver, "sender_model": pair.sender, "task": task}
            pairs[key].update(pair_phenomenon(loaded[pair.receiver], loaded[pair.sender], rows[task], m.tolerance,
                                              m.batch_size, m.max_group_layers))
            self.log(f"{key} on {task}: " + json.dumps({k: v for k, v in pairs[key].items() if k != "groups"}))
        self.timings["measure_s"] = round(time.perf_counter() - start, 1)
        return {"accuracy": accuracy, "phenomenon": pairs}

    def write_report(self, measured: dict) -> None:
        rel = lambda p: str(Path(p).relative_to(self.root))  # noqa: E731
        models = {BASE: "models/base", **{n: f"models/{n}" for n in self.zoo.variants}}
        report = {
            "name": self.zoo.name,
            "recipe_hash": recipe_hash(self.zoo),
            "code_version": CODE_VERSION,
            "recipe": OmegaConf.to_container(OmegaConf.structured(self.zoo), resolve=True),
            "models": models,
            "adapters": {n: "models/base" for n, v in self.zoo.variants.items() if v.kind == "lora"},
            "own_task": {BASE: None, **{n: v.tasks[0] for n, v in self.zoo.variants.items()}},
            "pairs": [
                [f"{p.receiver}<-{p.sender}", p.receiver, p.sender, self.zoo.variants[p.receiver].tasks[0]]
                for p in self.zoo.pairs
            ],
            "task_files": {t: {s: rel(p) for s, p in splits.items()} for t, splits in self.task_files.items()},
            "tasks": {t: {"analogue": TASKS[t].analogue, "metric": TASKS[t].metric} for t in self.zoo.tasks},
            "timings_s": self.timings,
            "threads": self.zoo.threads,
            "base_source": self.base_source,
            "curves": {c.phase: c.points for c in self.curves if c.phase.startswith("finetune-")},
            **measured,
        }
        (self.root / "family.json").write_text(json.dumps(report, indent=2) + "\n")
        cards.write_cards(self.root, report)
