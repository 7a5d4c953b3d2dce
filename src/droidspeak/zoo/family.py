"""Build (once) and load the embedded model family: a base Llama and its fine-tuned variants.

    family = build_family(cfg)          # cfg: ZooConfig / DictConfig (the ``zoo`` node) or BuildZooConfig
    family.models["ft-mdqa"]            # a standard HF directory (README.md model card, tokenizer files)
    family.load("lora-code")            # LoadedModel; LoRA variants: load_model(base, adapter=<dir>)
    family.task_files["mdqa"]["test"]   # JSONL rows read by the lm-eval tasks

Layout under ``<cache>/zoo-<name>-<hash16>/``: ``models/<name>/``, ``tasks/<task>/<split>.jsonl``,
``learning_curves.jsonl``, ``family.json`` (models, pairs, per-task accuracy, measured ``phenomenon``) and ``DONE``, written last:
a folder without it is a killed build and is rebuilt from scratch, never used. The cache root is
``$DROIDSPEAK_CACHE`` or ``<repo>/.cache/droidspeak``.

Reference families: training on CPU is sensitive to float kernels, so the same recipe and seed give other
checkpoints on another machine. The repository therefore ships the family its reports were made with, under
``<repo>/reference/zoo-<name>-<hash16>/`` with a ``MANIFEST.json`` of every file's sha256; a family not yet in
the cache is installed from there (verified file by file) instead of trained. ``force`` retrains from the recipe
and compares the result with the reference by quality (``compare_with_reference``), never by bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from droidspeak.hashing import file_sha256
from droidspeak.zoo import cards
from droidspeak.zoo.recipe import BuildZooConfig, ZooConfig
from droidspeak.zoo.corpus import Encoder, Example, TokenizerEncoder, induction_document, qa_example, world_document
from droidspeak.zoo.gguf_base import GgufConfig, convert_base
from droidspeak.zoo.long_tasks import Lexicon
from droidspeak.zoo.tasks import TASKS, build_splits, train_sizes, train_stream, write_jsonl
from droidspeak.zoo.tokenizer import build_tokenizer
from droidspeak.zoo.train import Curve, Schedule, add_lora, new_model, train  # noqa: F401
from droidspeak.zoo.world import World

CODE_VERSION = "zoo-1"  # bump when code changes what a recipe produces
MARKER = "DONE"
BASE = "base"
EXTENSIONS = "extensions"
EXTENSION_REPORT = "extension.json"


@dataclass
class Family:
    root: Path
    models: dict[str, Path]  # name -> HF directory (LoRA: the adapter directory)
    adapters: dict[str, Path]  # LoRA name -> its base's directory (load_model(base, adapter=models[name]))
    pairs: list[tuple[str, str, str, str]]  # (pair name, receiver, sender, receiver's task)
    task_files: dict[str, dict[str, Path]]
    own_task: dict[str, str | None] = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # family.json

    def load_args(self, name: str) -> dict[str, str | None]:
        """``path`` and ``adapter`` for load_model / the lm-eval backend's receiver(_adapter) args."""
        if name in self.adapters:
            return {"path": str(self.adapters[name]), "adapter": str(self.models[name])}
        return {"path": str(self.models[name]), "adapter": None}

    def load(self, name: str, **kwargs):
        from droidspeak.loading import load_model

        args = self.load_args(name)
        return load_model(args["path"], adapter=args["adapter"], **kwargs)

    @classmethod
    def open(cls, root: str | Path) -> "Family":
        root = Path(root)
        report = json.loads((root / "family.json").read_text())
        return cls(
            root=root,
            models={k: root / v for k, v in report["models"].items()},
            adapters={k: root / v for k, v in report["adapters"].items()},
            pairs=[tuple(p) for p in report["pairs"]],
            task_files={t: {s: root / p for s, p in splits.items()} for t, splits in report["task_files"].items()},
            own_task=report["own_task"],
            report=report,
        )


# ---- recipe identity ----------------------------------------------------------------------------------------
def zoo_config(cfg) -> ZooConfig:
    """The typed ZooConfig of ``cfg`` (a ZooConfig, a BuildZooConfig, or a DictConfig of either)."""
    if isinstance(cfg, ZooConfig):
        return cfg
    if isinstance(cfg, (BuildZooConfig,)) or (isinstance(cfg, DictConfig) and "zoo" in cfg):
        cfg = cfg.zoo
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
    payload = json.dumps({"code": CODE_VERSION, "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_root() -> Path:
    if os.environ.get("DROIDSPEAK_CACHE"):
        return Path(os.environ["DROIDSPEAK_CACHE"])
    return Path(__file__).resolve().parents[3] / ".cache" / "droidspeak"


def family_root(cfg) -> Path:
    zoo = zoo_config(cfg)
    return cache_root() / f"zoo-{zoo.name}-{recipe_hash(zoo)[:16]}"


def extension_hash(zoo: ZooConfig, name: str) -> str:
    """An extension's identity: the family's recipe and its own."""
    spec = _set_fields(dataclasses.asdict(zoo.extensions[name]))
    payload = json.dumps({"code": CODE_VERSION, "family": recipe_hash(zoo), "name": name, "recipe": spec}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def extension_root(root: Path, zoo: ZooConfig, name: str) -> Path:
    """Where extension ``name`` of the family at ``root`` lives."""
    return root / EXTENSIONS / f"{name}-{extension_hash(zoo, name)[:16]}"


def is_built(cfg) -> bool:
    return (family_root(cfg) / MARKER).exists()


# ---- the shipped reference ------------------------------------------------------------------------------------
REFERENCE_ROOT = Path(__file__).resolve().parents[3] / "reference"
MANIFEST = "MANIFEST.json"


def reference_root(cfg) -> Path:
    return REFERENCE_ROOT / family_root(cfg).name


def _point_adapters_at(root: Path, base: str) -> None:
    """LoRA adapter configs name their base by path: a copy of the family must name its own (or a relative one)."""
    for config_path in (root / "models").glob("*/adapter_config.json"):
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export_reference(family: Family, destination: Path | None = None) -> Path:
    """Copy a built family into the repository's reference folder with a sha256 manifest (what a fresh machine
    installs instead of training). Adapter configs name their base relatively there."""
    destination = destination or REFERENCE_ROOT / family.root.name
    if destination.exists():
        shutil.rmtree(destination)
    converted_base = family.root / "models" / BASE if family.report.get("base_source") else None

    def ignore(folder: str, names: list[str]) -> list[str]:
        skipped = [n for n in names if n == "lm_eval_tasks"]  # written per run
        if converted_base is None:
            return skipped
        # what the pip package gives again: the base's weights and tokenizer, the GGUF joined from chunks, and the
        # copies of its tokenizer beside each adapter (an adapter loads on the base, with the base's tokenizer)
        if Path(folder) == converted_base:
            skipped += [n for n in names if n not in ("README.md", "config.json")]
        elif Path(folder) == converted_base.parent:
            skipped += [n for n in names if n.endswith(".gguf")]
        elif Path(folder).parent == converted_base.parent and "adapter_config.json" in names:
            skipped += [n for n in names if n.startswith(("tokenizer", "special_tokens_map", "chat_template"))]
        return skipped

    if converted_base is not None:
        write_cards(family.root, family.report)  # the base's card from its config, which the reference keeps
    shutil.copytree(family.root, destination, ignore=lambda folder, names: ignore(folder, names) + (
        [EXTENSIONS] if Path(folder) == family.root else []))
    _point_adapters_at(destination, f"models/{BASE}")
    _write_manifest(destination, family.report["recipe_hash"])
    for name, info in family.report.get(EXTENSIONS, {}).items():
        source = family.root / info["folder"]
        shipped = extensions_reference(destination) / source.name
        if shipped.exists():
            shutil.rmtree(shipped)
        shutil.copytree(source, shipped, ignore=shutil.ignore_patterns(
            "tokenizer*", "special_tokens_map*", "chat_template*"))  # an adapter loads with its base's tokenizer
        _point_adapters_at(shipped, f"models/{BASE}")
        _write_manifest(shipped, info["recipe_hash"])
    return destination


def extensions_reference(reference: Path) -> Path:
    """The shipped extensions of the reference family ``reference`` (beside it: its manifest stays as it was)."""
    return reference.with_name(reference.name + "." + EXTENSIONS)


def _write_manifest(destination: Path, recipe: str) -> None:
    files = sorted(p for p in destination.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(destination)): file_sha256(p) for p in files}
    (destination / MANIFEST).write_text(json.dumps({"recipe_hash": recipe, "files": manifest}, indent=1,
                                                   sort_keys=True) + "\n")


def _verified_copy(reference: Path, staging: Path) -> None:
    """Copy ``reference`` to ``staging``, every file checked against its manifest first."""
    manifest = json.loads((reference / MANIFEST).read_text())["files"]
    bad = [name for name, digest in manifest.items()
           if not (reference / name).is_file() or file_sha256(reference / name) != digest]
    if bad:
        raise RuntimeError(f"the reference {reference} is corrupt: {len(bad)} file(s) fail their sha256 "
                           f"(first: {bad[0]}); restore it from git or rebuild with force=true")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(reference, staging, ignore=shutil.ignore_patterns(MANIFEST))


def install_reference(reference: Path, root: Path) -> None:
    """Copy the shipped family into the cache, every file checked against the manifest; nothing half-installed."""
    staging = root.with_name(root.name + ".installing")
    _verified_copy(reference, staging)
    report = json.loads((reference / "family.json").read_text())
    if report.get("base_source"):  # a pretrained base ships as its pinned GGUF, not as weights: convert it here
        try:
            convert_base(GgufConfig(**report["recipe"]["gguf"]), staging / "models" / BASE)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        write_cards(staging, report)
    if root.exists():
        shutil.rmtree(root)
    os.replace(staging, root)
    _point_adapters_at(root, str(root / "models" / BASE))


def compare_with_reference(family: Family, reference: Path, tolerance: float = 0.05) -> list[str]:
    """Where a retrained family's measured qualities differ from the reference's by more than ``tolerance``."""
    ours, theirs = _qualities(family.report), _qualities(json.loads((reference / "family.json").read_text()))
    return [f"{label}: {ours.get(label)} (reference {quality})" for label, quality in theirs.items()
            if ours.get(label) is None or abs(ours[label] - quality) > tolerance]


def _qualities(report: dict) -> dict[str, float]:
    """A family report's measured qualities by label: per model and task, and per pair (receiver, sender, reuse)."""
    qualities = {f"{model} on {task}": q for model, tasks in report.get("accuracy", {}).items() for task, q in tasks.items()}
    qualities |= {f"{pair} {key}": measured[key] for pair, measured in report.get("phenomenon", {}).items()
                  for key in ("receiver", "sender", "full_reuse")}
    return qualities


# ---- build ----------------------------------------------------------------------------------------------------
def build_family(cfg, progress: bool = True, force: bool = False, log: Callable[[str], None] | None = None) -> Family:
    """The family of ``cfg``: from the cache when this recipe was built before, else installed from the shipped
    reference, else trained now (once); then the same for each of its extensions."""
    zoo = zoo_config(cfg)
    log = log or (lambda _: None)
    if isinstance(cfg, (BuildZooConfig, DictConfig)) and "force" in cfg:
        force = force or bool(cfg.force)
    family = _base_family(zoo, progress, force, log)
    for name in zoo.extensions or {}:
        _attach_extension(family, zoo, name, progress, force, log)
    return family


def _attach_extension(family: Family, zoo: ZooConfig, name: str, progress: bool, force: bool,
                      log: Callable[[str], None]) -> None:
    """Extension ``name`` into ``family`` (models, adapters, own_task, report): cached, shipped, or trained now."""
    folder = extension_root(family.root, zoo, name)
    if force or not (folder / MARKER).exists():
        staging = folder.with_name(folder.name + ".building")
        shipped = extensions_reference(reference_root(zoo)) / folder.name
        if (shipped / MARKER).exists() and not force:
            log(f"installing the shipped extension {folder.name}")
            _verified_copy(shipped, staging)
        else:
            with _building(staging, zoo.threads):
                _Builder(zoo, staging, progress, log, steps=zoo.extensions[name].steps).extend(family, name)
        _point_adapters_at(staging, str(family.root / "models" / BASE))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    report = json.loads((folder / EXTENSION_REPORT).read_text())
    family.models[name] = folder / "models" / name
    family.adapters[name] = family.root / "models" / BASE
    family.own_task[name] = zoo.extensions[name].tasks[0]
    family.report.setdefault(EXTENSIONS, {})[name] = report | {"folder": str(folder.relative_to(family.root))}


@contextmanager
def _building(folder: Path, threads: int):
    """An empty ``folder`` to build into, with torch at the recipe's thread count (results depend on it)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _base_family(zoo: ZooConfig, progress: bool, force: bool, log: Callable[[str], None]) -> Family:
    root = family_root(zoo)
    if (root / MARKER).exists() and not force:
        return Family.open(root)
    reference = reference_root(zoo)
    if (reference / MARKER).exists() and not force:
        log(f"installing the shipped reference family {reference.name}")
        install_reference(reference, root)
        return Family.open(root)
    with _building(root, zoo.threads):
        _Builder(zoo, root, progress, log).run()
    family = Family.open(root)
    if (reference / MARKER).exists():
        differences = compare_with_reference(family, reference)
        log("retrained family vs the shipped reference: "
            + ("the same qualities within 0.05" if not differences else "; ".join(differences)))
    return family


class _Builder:
    def __init__(self, zoo: ZooConfig, root: Path, progress: bool, log: Callable[[str], None], steps: int | None = None):
        self.zoo, self.root, self.log = zoo, root, log
        self.base_source: dict | None = None
        if zoo.gguf is None:
            self.world = World(zoo.world)
            self.tokenizer = build_tokenizer(self.world)
            self.enc = Encoder(self.tokenizer)
        else:  # a pretrained base: its tokenizer arrives with the conversion (make_base)
            self.world = Lexicon(zoo.world.seed)
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
                raise ValueError(f"variant {name}: kind must be one of {kinds}, not {variant.kind!r}"
                                 + (" (an activated LoRA is an extension: zoo.extensions)" if variant.kind == "alora" else ""))
            if (variant.kind == "alora") != bool(variant.invocation):
                raise ValueError(f"variant {name}: an invocation belongs to (and is needed by) kind alora only")
            if variant.examples_of is not None and variant.examples_of not in self.zoo.variants:
                raise ValueError(f"variant {name}: examples_of {variant.examples_of!r} is not a variant of the family")
            unknown = [t for t in variant.tasks if t not in self.zoo.tasks or t not in TASKS]
            if not variant.tasks or unknown:
                raise ValueError(f"variant {name}: unknown or missing tasks {unknown} (known: {sorted(self.zoo.tasks)})")
        for pair in self.zoo.pairs:
            if pair.receiver not in self.zoo.variants or pair.sender not in names:
                raise ValueError(f"pair {pair.receiver}<-{pair.sender}: receiver must be a variant, sender a model of {sorted(names)}")

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
        curve = train(model, batch, schedule, pad_id=self.tokenizer.pad_token_id, phase=phase, on_step=self._step(phase))
        self.timings[phase] = round(time.perf_counter() - start, 1)
        self.curves.append(curve)
        with (self.root / "learning_curves.jsonl").open("a") as handle:
            for step, loss, seconds in curve.points:
                handle.write(json.dumps({"phase": phase, "step": step, "loss": round(loss, 4), "seconds": seconds}) + "\n")
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

    def extend(self, family: Family, name: str) -> None:
        """Train extension ``name`` on ``family``'s base and data, into this builder's root (its own folder)."""
        variant = self.zoo.extensions[name]
        self.check()
        self.write_tasks(write=False)
        self.load_base(family.root / "models" / BASE)
        self.finetune(name, variant)
        invocation = self.enc(variant.invocation) if variant.invocation else None
        oracle = None
        if invocation:  # the engine's reading of it (base cache, nothing recomputed) against peft's own forward
            from droidspeak.loading import load_model
            from droidspeak.zoo.measure import TaskRows, activated_oracle

            adapter = str(self.root / "models" / name)
            task = variant.tasks[0]
            oracle = activated_oracle(load_model(str(family.root / "models" / BASE), adapter=adapter), adapter,
                                      TaskRows(task, self.rows[task]["profile"], self.tokenizer))
            self.log(f"{name} from the base's cache vs peft's aLoRA forward: {oracle}")
        report = {"name": name, "recipe_hash": extension_hash(self.zoo, name), "code_version": CODE_VERSION,
                  "family": family.root.name, "recipe": OmegaConf.to_container(OmegaConf.structured(variant)),
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
            return [induction_document(world, enc, rng, rng.randint(*p.induction_pairs), shuffle=p.induction_shuffle) for _ in range(p.batch_size)]

        def documents(step: int) -> list[Example]:
            grow = min(1.0, step / max(1, p.curriculum_fraction * p.world_steps))
            top = round(p.facts[0] + grow * (p.facts[1] - p.facts[0]))
            return [
                induction_document(world, enc, rng, rng.randint(*p.induction_pairs))
                if rng.random() < p.induction_mix
                else world_document(world, enc, rng, rng.randint(p.facts[0], top))
                for _ in range(p.batch_size)
            ]

        self._train(self.base, induction, Schedule(p.induction_steps, p.lr, p.warmup, batch_size=p.batch_size), "pretrain-induction")
        self._train(self.base, documents, Schedule(p.world_steps, p.lr, p.warmup, batch_size=p.batch_size), "pretrain-world")
        self.save(self.base, BASE)

    def finetune(self, name: str, variant) -> None:
        model = copy.deepcopy(self.base)
        invocation = self.enc(variant.invocation) if variant.kind == "alora" else None
        if variant.kind in ("lora", "alora"):
            model = add_lora(model, variant.rank, variant.alpha, self.zoo.seed, invocation=invocation)
        rng = random.Random(f"{self.zoo.seed}-{variant.examples_of or name}")
        streams = {
            t: train_stream(self.world, t, self.zoo.tasks[t], self.zoo.seed, self.eval_contexts[t],
                            train_sizes(self.zoo.tasks[t])) for t in variant.tasks
        }

        def batch(step: int) -> list[Example]:
            out = []
            for i in range(variant.batch_size):
                task = variant.tasks[(step * variant.batch_size + i) % len(variant.tasks)]
                context, qa = next(streams[task])
                question, answer = rng.choice(qa)
                out.append(qa_example(self.enc, context, question, answer))
                if invocation and not _holds(out[-1].ids, invocation):  # peft would silently train nothing on it
                    raise ValueError(f"variant {name}: a {task} prompt does not hold the invocation "
                                     f"{variant.invocation!r} as the tokens {invocation}")
            return out

        self._train(model, batch, Schedule(variant.steps, variant.lr, 10, batch_size=variant.batch_size), f"finetune-{name}")
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

    # ---- measurement -----------------------------------------------------------------------------------
    def measure(self) -> dict:
        from droidspeak.loading import load_model
        from droidspeak.zoo.measure import TaskRows, pair_phenomenon, quality

        m = self.zoo.measure
        base_dir = self.root / "models" / BASE
        loaded = {BASE: load_model(str(base_dir))}
        for name, variant in self.zoo.variants.items():
            folder = str(self.root / "models" / name)
            loaded[name] = load_model(str(base_dir), adapter=folder) if variant.kind == "lora" else load_model(folder)
        rows = {t: TaskRows(t, self.rows[t][m.split][: m.max_questions], self.tokenizer) for t in self.zoo.tasks}
        start = time.perf_counter()
        accuracy = {
            name: {t: round(quality(model, rows[t], batch_size=m.batch_size), 4) for t in rows} for name, model in loaded.items()
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
                [f"{p.receiver}<-{p.sender}", p.receiver, p.sender, self.zoo.variants[p.receiver].tasks[0]] for p in self.zoo.pairs
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
        write_cards(self.root, report)


def _holds(ids: list[int], part: list[int]) -> bool:
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def write_cards(root: Path, report: dict) -> None:
    """Every model's README.md, from the family report (and the converted base's config)."""
    report = {**report, "architecture": architecture(root, report)}
    for name, folder in report["models"].items():
        (root / folder / "README.md").write_text(cards.model_card(name, report))


def architecture(root: Path, report: dict) -> dict:
    """The base's shape: the toy's recipe, or the main fields of a converted base's config."""
    if not report.get("base_source"):
        return report["recipe"]["model"]
    config = json.loads((root / "models" / BASE / "config.json").read_text())
    keys = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rope_parameters", "tie_word_embeddings", "vocab_size")
    return {k: config[k] for k in keys if k in config}
