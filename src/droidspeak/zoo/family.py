"""Name, install, build (once) and load the embedded model family: a base and its fine-tuned variants, and the
extensions trained on top of it. The training itself is zoo.builder's; a recipe's identity, zoo.recipe's.

    family = build_family(cfg)          # cfg: ZooConfig / DictConfig (the ``zoo`` node) or build_zoo.py's config
    family.models["ft-mdqa"]            # a standard HF directory (README.md model card, tokenizer files)
    family.load("lora-code")            # LoadedModel; LoRA variants: load_model(base, adapter=<dir>)
    family.task_files["mdqa"]["test"]   # JSONL rows read by the lm-eval tasks

Layout under ``<cache>/zoo-<name>-<hash16>/``: ``models/<name>/``, ``tasks/<task>/<split>.jsonl``,
``learning_curves.jsonl``, ``family.json`` (models, pairs, per-task accuracy, measured ``phenomenon``) and ``DONE``,
written last: a folder without it is a killed build and is rebuilt from scratch, never used. The cache root is
``$DROIDSPEAK_CACHE`` or ``<repo>/.cache/droidspeak``. Extensions (``zoo.extensions``) live in
``extensions/<name>-<hash16>/`` inside it, named by the family's recipe and their own, so adding one renames nothing.

Reference families: training on CPU is sensitive to float kernels, so the same recipe and seed give other
checkpoints on another machine. The repository therefore ships the family its reports were made with, under
``<repo>/reference/zoo-<name>-<hash16>/`` with a ``MANIFEST.json`` of every file's sha256; a family not yet in
the cache is installed from there (verified file by file) instead of trained. ``force`` retrains from the recipe
and compares the result with the reference by quality (``compare_with_reference``), never by bytes. Extensions
ship beside the family's folder, in ``zoo-<name>-<hash16>.extensions/``, each with a manifest of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from droidspeak.atomic import exclusive
from droidspeak.errors import DroidSpeakError
from droidspeak.hashing import file_sha256
from droidspeak.track.results import read_rows
from droidspeak.zoo import cards
from droidspeak.zoo.builder import EXTENSION_REPORT, MARKER, FamilyBuilder, task_world
from droidspeak.zoo.gguf_base import GgufConfig, convert_base
from droidspeak.zoo.long_tasks import Lexicon
from droidspeak.zoo.recipe import BASE, ZooConfig, extension_hash, recipe_hash, training_task, zoo_config
from droidspeak.zoo.tasks import (
    DEV,
    WIDE_TEST,
    TaskConfig,
    dev_rows,
    trained_contexts,
    wide_test_rows,
    write_jsonl,
)
from droidspeak.zoo.world import World

EXTENSIONS = "extensions"
MERGED = "merged"  # LoRAs merged into their base (Family.export_merged)


@dataclass
class Family:
    root: Path
    models: dict[str, Path]  # name -> HF directory (LoRA: the adapter directory)
    adapters: dict[str, Path]  # LoRA name -> its base's directory (load_model(base, adapter=models[name]))
    pairs: list[tuple[str, str, str, str]]  # (pair name, receiver, sender, receiver's task)
    task_files: dict[str, dict[str, Path]]
    own_task: dict[str, str | None] = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # family.json

    def task_version(self, task: str, split: str) -> str:
        """The version of a split's questions (its file's sha256): what a row's question-set digest names."""
        return file_sha256(self.task_files[task][split])

    def load_args(self, name: str) -> dict[str, str | None]:
        """``path`` and ``adapter`` for load_model / the lm-eval backend's receiver(_adapter) args."""
        if name in self.adapters:
            return {"path": str(self.adapters[name]), "adapter": str(self.models[name])}
        return {"path": str(self.models[name]), "adapter": None}

    def load(self, name: str, **kwargs):
        from droidspeak.engine.loading import load_model

        args = self.load_args(name)
        return load_model(args["path"], adapter=args["adapter"], **kwargs)

    def merged_dir(self, name: str) -> Path:
        """Where LoRA ``name`` merged into its base is kept as a plain HF directory (named by its adapter's weights),
        for engines that serve each fine-tune as a model of its own (vLLM without its LoRA path)."""
        if name not in self.adapters:
            raise DroidSpeakError(f"{name} is not a LoRA of the {self.report.get('name')} family; it needs no merging")
        digest = file_sha256(self.models[name] / "adapter_model.safetensors")[:12]
        return self.root / MERGED / f"{name}-{digest}"

    def exported_merged(self, name: str) -> Path:
        """The finished merged folder of ``name`` (export_merged wrote it), or an error saying how to write it: for a
        process without peft (vLLM's venv), which can read the folder but not make it."""
        destination = self.merged_dir(name)
        if not (destination / MARKER).is_file():
            raise DroidSpeakError(f"{name} is not merged yet ({destination}); run python experiments/build_zoo.py "
                                  f"zoo={self.report.get('name')} 'export_merged=[{name}]'")
        return destination

    def export_merged(self, name: str) -> Path:
        """``name``'s weights with its adapter merged (peft's merge, as the engine loads it), written once (float32, a
        DONE marker last); an activated LoRA is refused by the loader: merged, it would adapt every context token."""
        destination = self.merged_dir(name)
        if (destination / MARKER).is_file():
            return destination
        loaded = self.load(name, dtype="float32")
        scratch = destination.with_name(destination.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        loaded.model.save_pretrained(scratch)
        loaded.tokenizer.save_pretrained(scratch)
        (scratch / MARKER).write_text("")
        shutil.rmtree(destination, ignore_errors=True)
        scratch.rename(destination)
        return destination

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


# ---- where a family lives ------------------------------------------------------------------------------------
def cache_root() -> Path:
    if os.environ.get("DROIDSPEAK_CACHE"):
        return Path(os.environ["DROIDSPEAK_CACHE"])
    return Path(__file__).resolve().parents[3] / ".cache" / "droidspeak"


def family_root(cfg) -> Path:
    zoo = zoo_config(cfg)
    return cache_root() / f"zoo-{zoo.name}-{recipe_hash(zoo)[:16]}"


def extension_root(root: Path, zoo: ZooConfig, name: str) -> Path:
    """Where extension ``name`` of the family at ``root`` lives."""
    return root / EXTENSIONS / f"{name}-{extension_hash(zoo, name)[:16]}"


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
        cards.write_cards(family.root, family.report)  # the base's card from its config, which the reference keeps
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
        cards.write_cards(staging, report)
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
    qualities = {
        f"{model} on {task}": q for model, tasks in report.get("accuracy", {}).items() for task, q in tasks.items()
    }
    qualities |= {f"{pair} {key}": measured[key] for pair, measured in report.get("phenomenon", {}).items()
                  for key in ("receiver", "sender", "full_reuse")}
    return qualities


# ---- build ----------------------------------------------------------------------------------------------------
def build_family(cfg, progress: bool = True, force: bool = False, log: Callable[[str], None] | None = None) -> Family:
    """The family of ``cfg``: from the cache when this recipe was built before, else installed from the shipped
    reference, else trained now (once); then the same for each of its extensions."""
    zoo = zoo_config(cfg)
    log = log or (lambda _: None)
    force = force or bool(getattr(cfg, "force", False))  # build_zoo.py's force=true
    root = family_root(zoo)
    # one job at a time builds a family, its extensions and its drawn splits; another waits, then finds them built
    # (a profile job once wiped an extension a build_zoo job was training, and trained it again)
    with exclusive(root.with_name(root.name + ".lock"), lambda: log(f"waiting for another job building {root.name}")):
        family = _base_family(zoo, progress, force, log)
        drawn = zoo.wide_test_contexts is not None or zoo.dev_contexts is not None
        trained = _read_in_training(family, zoo) if drawn else {}  # text only: ~20 ms a stream
        _refuse_drawn_splits_read_in_training(family, zoo, trained)  # before an extension trains on one
        for name in zoo.extensions or {}:
            _attach_extension(family, zoo, name, progress, force, log)
        if drawn:
            _attach_drawn_splits(family, zoo, trained)
    return family


def _drawn_split_paths(family: Family, zoo: ZooConfig, task: str) -> dict[str, Path]:
    """Where ``task``'s drawn splits are kept (named by their size), for the ones ``zoo`` asks for."""
    sizes = {split: size for split, size in ((WIDE_TEST, zoo.wide_test_contexts), (DEV, zoo.dev_contexts))
             if size is not None}
    return {split: family.root / "tasks" / task / f"{split}-{size}.jsonl" for split, size in sizes.items()}


def _read_in_training(family: Family, zoo: ZooConfig) -> dict[str, frozenset[str]]:
    """Per task, every context a fine-tune of ``zoo`` reads (its extensions included, trained or not)."""
    world = task_world(zoo)
    return {task: _contexts_read_in_training(zoo, world, task, {split: read_rows(files[split])
                                                               for split in ("profile", "test")})
            for task, files in family.task_files.items()}


def _refuse_drawn_splits_read_in_training(family: Family, zoo: ZooConfig, trained: dict[str, frozenset[str]]) -> None:
    """Refuse a drawn split that holds a context some fine-tune of ``zoo`` reads (``trained``, per task: an extension
    with a ``train_size`` of its own reads other training contexts than the split was drawn past)."""
    for task in family.task_files:
        for path in _drawn_split_paths(family, zoo, task).values():
            read = {row["context"] for row in read_rows(path)} & trained[task] if path.exists() else set()
            if read:
                raise ValueError(f"{task}: {len(read)} context(s) of {path.name} are read in training by a "
                                 f"fine-tune of the family; delete {path.name} to draw it again past them (its results "
                                 f"then no longer compare with earlier ones)")


def _attach_drawn_splits(family: Family, zoo: ZooConfig, trained: dict[str, frozenset[str]]) -> None:
    """The splits drawn after the build, into ``family.task_files``: each task's wide held-out split
    (``zoo.wide_test_contexts``) and its development split (``zoo.dev_contexts``). Each is drawn once (text only, no
    model), past every context a fine-tune read (``trained``, per task), kept beside the task's other splits and named
    by its size; the drawn splits are checked disjoint from each other every time they are attached (and from
    training, by :func:`_refuse_drawn_splits_read_in_training`)."""
    world = task_world(zoo)
    for task, files in family.task_files.items():
        cfg = zoo.tasks[task]
        paths = _drawn_split_paths(family, zoo, task)
        if zoo.wide_test_contexts is not None and zoo.wide_test_contexts < cfg.contexts["test"]:
            raise ValueError(f"zoo.wide_test_contexts={zoo.wide_test_contexts}: fewer than {task}'s test split "
                             f"({cfg.contexts['test']} contexts), which it extends")
        missing = [split for split, path in paths.items() if not path.exists()]
        if missing:
            splits = {split: read_rows(files[split]) for split in ("profile", "test")}
            for split in (WIDE_TEST, DEV):  # the wide split first: the dev split is drawn past it
                if split in missing:
                    draw = wide_test_rows if split == WIDE_TEST else dev_rows
                    size = zoo.wide_test_contexts if split == WIDE_TEST else zoo.dev_contexts
                    splits[split] = draw(world, task, cfg, zoo.seed, size, splits, trained[task])
                    write_jsonl(splits[split], paths[split])
                elif split in paths:
                    splits[split] = read_rows(paths[split])
        if len(paths) == 2:
            shared = ({r["context"] for r in read_rows(paths[WIDE_TEST])}
                      & {r["context"] for r in read_rows(paths[DEV])})
            if shared:
                raise ValueError(f"{task}: {len(shared)} context(s) in both {paths[WIDE_TEST].name} and "
                                 f"{paths[DEV].name}; delete {paths[DEV].name} to draw the dev split again past it")
        files.update(paths)


def _contexts_read_in_training(zoo: ZooConfig, world: World | Lexicon, task: str,
                               splits: dict[str, list[dict]]) -> frozenset[str]:
    """Every context of ``task`` a fine-tune of the family read. Every variant reads its tasks' contexts in turn, one
    an example, from the start of the task's training stream, which a variant's own ``train_size`` draws otherwise:
    so each size draw's stream is replayed as far as its hungriest fine-tune read it."""
    own = zoo.tasks[task]
    streams: dict[str, tuple[TaskConfig, int]] = {repr(own.train_size): (own, 0)}  # the train split's, at least
    for variant in [*zoo.variants.values(), *(zoo.extensions or {}).values()]:
        if task in variant.tasks:
            cfg = training_task(zoo, variant, task)
            examples = sum(variant.tasks[i % len(variant.tasks)] == task
                           for i in range(variant.steps * variant.batch_size))
            key = repr(cfg.train_size)  # one stream per size draw
            streams[key] = (cfg, max(streams.get(key, (cfg, 0))[1], examples))
    return frozenset().union(*(trained_contexts(world, task, cfg, zoo.seed, splits, examples)
                               for cfg, examples in streams.values()))


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
                FamilyBuilder(zoo, staging, progress, log, steps=zoo.extensions[name].steps).extend(family.root, name)
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
        FamilyBuilder(zoo, root, progress, log).run()
    family = Family.open(root)
    if (reference / MARKER).exists():
        differences = compare_with_reference(family, reference)
        log("retrained family vs the shipped reference: "
            + ("the same qualities within 0.05" if not differences else "; ".join(differences)))
    return family
