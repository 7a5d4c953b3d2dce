"""Every bad input we know, each tried once on the toy family: it must give one clear error, early.

A case passes when it raises one of droidspeak's own errors (``DroidSpeakError``: a message written for the
user) whose text names what is wrong (``says``): a *clear* error. Our error that does not name it is *unclear*;
any other exception is a *crash* (a stack trace from deep inside a library); no exception at all is *silent* — a
wrong answer nobody sees, the worst outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from droidspeak.engine.cache import cache_key
from droidspeak.engine.loading import BASE_RECORD, LoadedModel, load_model
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.profile_file import load_profile, resolve_profile_plan
from droidspeak.reuse import ReusePair
from droidspeak.store import DiskStore
from droidspeak.sweep.config import EvaluateConfig, MethodConfig, check_values
from droidspeak.sweep.point import settle_method
from droidspeak.track.logger import check_mode
from droidspeak.track.records import read_results
from droidspeak.track.results import read_rows
from droidspeak.zoo.gguf_base import GgufConfig, locate


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    says: str  # words the error message must contain (case-insensitive)
    run: Callable[["Bench"], object]


OUTCOMES = ("clear error", "unclear error", "crash", "silent")


@dataclass(frozen=True)
class Outcome:
    """One tried input: what was expected (a clear error) and what happened."""

    name: str
    group: str
    observed: str  # one of OUTCOMES
    error: str | None  # exception type
    message: str | None  # its first line
    seconds: float

    @property
    def ok(self) -> bool:
        return self.observed == "clear error"


class Bench:
    """The toy family's models and files the cases spoil copies of (under ``scratch``; originals untouched)."""

    def __init__(self, family, scratch: Path, receiver: str = "ft-mdqa", sender: str = "base"):
        self.family, self.scratch = family, Path(scratch)
        self.receiver_name, self.sender_name = receiver, sender
        self.scratch.mkdir(parents=True, exist_ok=True)

    @cached_property
    def receiver(self) -> LoadedModel:
        return self.family.load(self.receiver_name)

    @cached_property
    def sender(self) -> LoadedModel:
        return self.family.load(self.sender_name)

    @cached_property
    def pair(self) -> ReusePair:
        return ReusePair(self.sender, self.receiver)

    @cached_property
    def context(self) -> str:
        return read_rows(self.family.task_files["mdqa"]["test"])[0]["context"]

    @cached_property
    def cache(self):
        return self.pair.prefill([self.context])[0]

    def variant(self, name: str, **changes) -> LoadedModel:
        """The sender's architecture with ``changes`` to its config, randomly initialised (a model of another base)."""
        folder = self.scratch / f"variant-{hashlib.sha256(name.encode()).hexdigest()[:8]}"  # a name that says nothing
        if not folder.exists():
            config = AutoConfig.from_pretrained(self.family.models[self.sender_name])
            for key, value in changes.items():
                setattr(config, key, value)
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(folder)
            for file in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(self.family.models[self.sender_name] / file, folder / file)
        return load_model(str(folder))

    def saved_cache(self, name: str) -> tuple[Path, str]:
        """A fresh disk store holding the context's cache: (store folder, key)."""
        root = self.scratch / f"store-{name}"
        shutil.rmtree(root, ignore_errors=True)
        store = DiskStore(root)
        return root, store.put(self.cache)

    def profile_copy(self, name: str, edit: Callable[[dict], dict | str]) -> str:
        """A profile of this pair (as the profiler writes it), edited; returns its path."""
        base = {
            "schema": "droidspeak.profile", "schema_version": 1, "task": "mdqa", "metric": "f1",
            "pair": {"name": f"{self.receiver_name}<-{self.sender_name}",
                     "receiver": {"name": self.receiver_name, "identity": self.receiver.fingerprint.identity},
                     "sender": {"name": self.sender_name, "identity": self.sender.fingerprint.identity}},
            "num_layers": self.pair.num_layers, "reference": {"quality": 0.9},
            "points": [{"plan": "full_reuse", "recomputed_layers": 0, "quality": 0.5},
                       {"plan": "recompute:0-1", "recomputed_layers": 2, "quality": 0.88}],
        }
        edited = edit(base)
        path = self.scratch / f"profile-{name}.json"
        path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
        return str(path)

    def resolve(self, path: str):
        return resolve_profile_plan(
            f"profile:{path}",
            self.pair.num_layers,
            receiver=self.receiver.fingerprint.identity,
            sender=self.sender.fingerprint.identity,
        )


def _spoil(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":  # one byte in the middle of the tensor data, not the header: only checksums can tell
        data[-len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"not a safetensors file at all")


def _read_spoiled(bench: Bench, how: str):
    root, key = bench.saved_cache(how)
    _spoil(root / f"{key}.safetensors", how)
    return DiskStore(root).get(key)


def _read_renamed(bench: Bench):
    root, key = bench.saved_cache("renamed")
    other = cache_key(bench.sender.fingerprint.digest, [1, 2, 3])
    os.replace(root / f"{key}.safetensors", root / f"{other}.safetensors")
    return DiskStore(root).get(other)


@contextmanager
def _no_wandb_login(scratch: Path) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HOME", "WANDB_API_KEY", "WANDB_MODE", "NETRC")}
    os.environ.update(HOME=str(scratch), NETRC=str(scratch / "no-netrc"))
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wandb_online(bench: Bench):
    with _no_wandb_login(bench.scratch):
        return check_mode("online")


def _foreign_cache(bench: Bench):
    other = ReusePair(bench.receiver, bench.receiver).prefill([bench.context])[0]  # computed by another sender
    return bench.pair.prepare([other], "full_reuse", contexts=[bench.context])


def _cache_of_another_context(bench: Bench):
    return bench.pair.check_caches([bench.cache], [bench.context + " extra words"])


def _non_utf8_file(bench: Bench):
    path = bench.scratch / "non-utf8.jsonl"
    path.write_bytes(b'{"context": "caf\xe9"}\n')
    return read_rows(path)


def _poisoned(bench: Bench, where: str, value: float):
    """A cache file holding one NaN or Inf, written whole with valid checksums, read back."""
    cache = bench.cache
    tensors = {"k": cache.keys, "v": cache.values, "e": cache.hidden}[where]
    layer = 1 if where != "e" else sorted(tensors)[0]
    original = tensors[layer]
    tensors[layer] = original.clone()
    tensors[layer].view(-1)[0] = value
    try:
        root = bench.scratch / f"store-poison-{where}"
        shutil.rmtree(root, ignore_errors=True)
        key = DiskStore(root).put(cache)
    finally:
        tensors[layer] = original
    return DiskStore(root).get(key)


def _torn_header(bench: Bench, **changes):
    """A cache file whose header (not its tensors: every checksum holds) was torn or hand-edited."""
    root, key = bench.saved_cache("header-" + "-".join(changes))
    path = root / f"{key}.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    metadata = {name: value for name, value in {**metadata, **changes}.items() if value is not None}
    save_file(tensors, str(path), metadata=metadata)
    return DiskStore(root).get(key)


def _nan_answer(bench: Bench):
    cache = bench.cache
    spoiled = dataclasses.replace(cache, keys=[k.clone() for k in cache.keys])
    spoiled.keys[0].view(-1)[:64] = float("nan")
    return bench.pair.generate([spoiled], [" Q: x\nA:"], "full_reuse", max_new_tokens=4)


def _past_positions(bench: Bench, **kwargs):
    limit = bench.sender.config.max_position_embeddings
    (cache,) = bench.pair.prefill([torch.randint(4, bench.sender.config.vocab_size, (limit - 4,))])
    tail = torch.randint(4, bench.sender.config.vocab_size, (8,))
    if kwargs.get("loglikelihood"):
        return bench.pair.loglikelihood([cache], [tail], [tail[:2]], "full_reuse")
    return bench.pair.generate([cache], [tail[:2]], "full_reuse", max_new_tokens=8)


def _foreign_adapter(bench: Bench, *, grow: tuple[str, ...] = (), recorded_base: str | None = None):
    """A LoRA trained on a model of another shape (the sender's ``grow`` sizes doubled), or of the sender's shape
    recording another base's weights, merged into the sender."""
    from peft import LoraConfig, get_peft_model

    folder = bench.scratch / f"lora-{'-'.join(grow) or 'recorded'}"
    if not folder.exists():
        config = AutoConfig.from_pretrained(bench.family.models[bench.sender_name])
        for key in grow:
            setattr(config, key, 2 * getattr(config, key))
        torch.manual_seed(0)
        lora = get_peft_model(AutoModelForCausalLM.from_config(config),
                              LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        lora.save_pretrained(folder)
        if recorded_base is not None:
            (folder / BASE_RECORD).write_text(json.dumps({"weights": recorded_base}))
    return load_model(str(bench.family.models[bench.sender_name]), adapter=str(folder))


def _backend(bench: Bench, model_args: str, prompt: str | None = None):
    """The lm-eval backend on the receiver, as ``--model_args`` would make it; with ``prompt``, where it splits."""
    from lm_eval.api.registry import get_model

    lm = get_model("droidspeak").create_from_arg_string(
        f"receiver={bench.family.models[bench.receiver_name]},{model_args}", {"device": "cpu"})
    return lm._shared_tokens(prompt, lm.tok_encode(prompt)) if prompt is not None else lm


def _sweep_config(**settings):
    """An evaluate config with ``settings`` (dotted keys), checked as a sweep point checks it before it runs."""
    cfg = OmegaConf.structured(EvaluateConfig(method=MethodConfig(name="full_prefill", plan="full_prefill")))
    for key, value in settings.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    settle_method(cfg)
    check_values(cfg)
    return cfg


def _long_request(bench: Bench):
    """A log-likelihood request longer than the backend's max_length (lm-eval would cut it from the left)."""
    lm = _backend(bench, "max_length=16")
    context = bench.context + "\n\nQ: x\nA:"
    return lm._loglikelihood_tokens([((context, " y"), lm.tok_encode(context), lm.tok_encode(" y"))])


def _override(*argv: str):
    """Command-line overrides of ``experiments/evaluate.py``, checked as its entry point checks them."""
    from droidspeak.sweep.console import check_overrides

    check_overrides("evaluate", Path(__file__).resolve().parents[3] / "conf", list(argv))


def _timings(bench: Bench, name: str, record: dict):
    """The rows of ``_ROW`` with ``record`` as the timings file beside them."""
    folder = bench.scratch / f"timings-{name}"
    folder.mkdir(exist_ok=True)
    (folder / "results.jsonl").write_text(json.dumps(_ROW) + "\n")
    (folder / "timings.jsonl").write_text(json.dumps(record) + "\n")
    return read_results(folder / "results.jsonl")


def _results_file(bench: Bench, name: str, *rows: dict | str):
    path = bench.scratch / f"results-{name}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return read_results(path)


_ROW = {"kind": "eval", "key": "k1", "source": "sweep", "pair": "ft-mdqa<-base", "task": "mdqa", "split": "test",
        "method": "full_prefill", "plan": "full_prefill", "resolved_plan": "full_prefill", "metric": "f1",
        "quality": 0.9, "n_samples": 16, "num_layers": 8, "recomputed_fraction": 1.0, "prefill_seconds": 0.1,
        "baseline_prefill_seconds": 0.1, "speedup": 1.0, "eval_seconds": 1.0, "device": "cpu", "dtype": "float32",
        "git_sha": "abc", "time": "2026-12-06T00:00:00", "code_version": "0.1.0+a", "question_set": "q16"}


_TIMING = {"kind": "timing", "keys": ["k1", "k-gone"], "pair": "ft-mdqa<-base", "task": "mdqa", "split": "test",
           "plan": "full_prefill", "receiver": "zoo:ft-mdqa", "sender": "zoo:base", "prefill_seconds": 0.1,
           "baseline_prefill_seconds": 0.1, "speedup": 1.0, "speedup_spread": [0.9, 1.1], "ratios": [0.9, 1.0, 1.1],
           "timed_contexts": 3, "timed_repeats": 1, "warmup": 1, "context_tokens": [9, 9, 9], "timed_path": "p",
           "device": "cpu", "dtype": "float32", "git_sha": "abc", "code_version": "0.1.0+a", "time": "t"}


def _cases() -> list[Case]:
    pair = lambda **changes: lambda b: ReusePair(b.variant("-".join(changes), **changes), b.receiver)  # noqa: E731
    plan = lambda text: lambda b: b.pair.plan(text)  # noqa: E731
    profile = lambda name, edit: lambda b: b.resolve(b.profile_copy(name, edit))  # noqa: E731

    def foreign_receiver(doc):
        doc["pair"]["receiver"]["identity"] = {**doc["pair"]["receiver"]["identity"], "weights": "0" * 64}
        return doc

    def foreign_adapter(doc):
        doc["pair"]["sender"]["identity"] = {**doc["pair"]["sender"]["identity"], "adapter": "f" * 64}
        return doc

    def no_identity(doc):
        for role in ("receiver", "sender"):
            doc["pair"][role].pop("identity")
        return doc

    return [
        Case("another layer count", "mismatched pair", "layers", pair(num_hidden_layers=6)),
        Case("another hidden size", "mismatched pair", "hidden size", pair(hidden_size=96, head_dim=24)),
        Case("other KV heads", "mismatched pair", "kv heads", pair(num_key_value_heads=4)),
        Case(
            "another RoPE theta",
            "mismatched pair",
            "RoPE",
            pair(rope_parameters={"rope_theta": 5e5, "rope_type": "default"}),
        ),
        Case("another vocabulary size", "mismatched pair", "vocab size", pair(vocab_size=600)),
        Case(
            "another dtype",
            "mismatched pair",
            "dtype",
            lambda b: ReusePair(b.family.load(b.sender_name, dtype="bfloat16"), b.receiver),
        ),
        Case("a cache from another sender", "foreign cache", "not by this pair's sender", _foreign_cache),
        Case("a cache of another context", "foreign cache", "another context", _cache_of_another_context),
        Case("a truncated cache file", "corrupt cache", "dropped", lambda b: _read_spoiled(b, "truncate")),
        Case("a cache file with a flipped byte", "corrupt cache", "checksum", lambda b: _read_spoiled(b, "flip")),
        Case("a file that is not a cache", "corrupt cache", "dropped", lambda b: _read_spoiled(b, "junk")),
        Case("a cache file renamed to another key", "corrupt cache", "renamed", _read_renamed),
        Case(
            "a profile of another receiver",
            "foreign profile",
            "receiver weights",
            profile("receiver", foreign_receiver),
        ),
        Case(
            "a profile of another sender adapter",
            "foreign profile",
            "sender adapter",
            profile("adapter", foreign_adapter),
        ),
        Case("a profile without identity", "foreign profile", "no model identity", profile("old", no_identity)),
        Case(
            "a profile of another layer count",
            "foreign profile",
            "layers",
            profile("layers", lambda d: {**d, "num_layers": 30}),
        ),
        Case("a truncated profile", "corrupt profile", "truncated", profile("torn", lambda d: json.dumps(d)[:80])),
        Case(
            "a profile of another schema",
            "corrupt profile",
            "not a droidspeak profile",
            profile("schema", lambda d: {**d, "schema": "x"}),
        ),
        Case("a malformed plan", "bad plan", "plan", plan("recompute:two-three")),
        Case("a reversed group", "bad plan", "3-1", plan("recompute:3-1")),
        Case("overlapping groups", "bad plan", "overlap", plan("recompute:0-2+1-3")),
        Case(
            "a group past the last layer",
            "bad plan",
            "layers",
            lambda b: b.pair.plan(f"recompute:2-{b.pair.num_layers + 1}"),
        ),
        Case("a CacheBlend ratio above 1", "bad plan", "cacheblend", plan("cacheblend:1.5")),
        Case("an unknown plan kind", "bad plan", "plan", plan("recompute_everything")),
        Case(
            "a missing model folder",
            "missing file",
            "cannot load model",
            lambda b: load_model(str(b.scratch / "nowhere")),
        ),
        Case(
            "a missing adapter",
            "missing file",
            "adapter",
            lambda b: load_model(str(b.family.models[b.sender_name]), adapter=str(b.scratch / "no-adapter")),
        ),
        Case(
            "a missing profile", "missing file", "does not exist", lambda b: load_profile(b.scratch / "no-profile.json")
        ),
        Case(
            "the GGUF package absent",
            "missing package",
            "pip install",
            lambda b: locate(GgufConfig(package="droidspeak-no-such-package")),
        ),
        Case("W&B online without a login", "missing login", "wandb login", _wandb_online),
        Case(
            "a context longer than the model allows",
            "bad text",
            "positions",
            lambda b: b.pair.prefill(
                [torch.randint(4, b.sender.config.vocab_size, (b.sender.config.max_position_embeddings + 1,))]
            ),
        ),
        Case("an empty context", "bad text", "at least one token", lambda b: b.pair.prefill([""])),
        Case("non-UTF-8 bytes as text", "bad text", "decode", lambda b: b.pair.prefill([b"caf\xe9"])),
        Case("a non-UTF-8 task or results file", "bad text", "not UTF-8", _non_utf8_file),
        Case("NaN in a cache's K", "non-finite cache", "NaN or Inf", lambda b: _poisoned(b, "k", float("nan"))),
        Case("Inf in a cache's V", "non-finite cache", "NaN or Inf", lambda b: _poisoned(b, "v", float("inf"))),
        Case("-Inf in a cache's E", "non-finite cache", "NaN or Inf", lambda b: _poisoned(b, "e", float("-inf"))),
        Case("a NaN cache in memory, answered", "non-finite cache", "NaN or Inf", _nan_answer),
        Case("a torn header", "malformed cache header", "malformed", lambda b: _torn_header(b, meta='{"slid')),
        Case("a header without its sender", "malformed cache header", "malformed",
             lambda b: _torn_header(b, sender=None)),
        Case("a mistyped layer count", "malformed cache header", "malformed",
             lambda b: _torn_header(b, num_layers="eight")),
        Case("checksums that are not an object", "malformed cache header", "malformed",
             lambda b: _torn_header(b, checksums="[]")),
        Case("a mistyped sliding window", "malformed cache header", "malformed",
             lambda b: _torn_header(b, meta='{"sliding_window": "x", "sliding_layers": [0]}')),
        Case("context + new tokens past the positions", "limits", "positions", _past_positions),
        Case("context + tail past the positions (log-likelihood)", "limits", "positions",
             lambda b: _past_positions(b, loglikelihood=True)),
        Case("a LoRA of a deeper model", "foreign adapter", "not trained on this model",
             lambda b: _foreign_adapter(b, grow=("num_hidden_layers",))),
        Case("a LoRA of a wider model", "foreign adapter", "not trained on this model",
             lambda b: _foreign_adapter(b, grow=("hidden_size", "intermediate_size"))),
        Case("a LoRA that records another base", "foreign adapter", "trained on a base",
             lambda b: _foreign_adapter(b, recorded_base="0" * 64)),
        Case("a misspelt model_args key (pln=)", "lm-eval model_args", "unknown model_args",
             lambda b: _backend(b, "pln=full_reuse")),
        Case("a misspelt delimiter key", "lm-eval model_args", "unknown model_args",
             lambda b: _backend(b, "contex_delimiter=##")),
        Case("an unknown missing_delimiter", "lm-eval model_args", "missing_delimiter",
             lambda b: _backend(b, "missing_delimiter=skip")),
        Case("a prompt without the delimiter", "lm-eval model_args", "no context_delimiter",
             lambda b: _backend(b, "plan=full_reuse", "one prompt and no blank line in it")),
        Case("a delimiter the task never uses", "lm-eval model_args", "no context_delimiter",
             lambda b: _backend(b, "context_delimiter=@@", b.context + "\n\nQ: x\nA:")),
        Case("method=full_reuse with method.layers", "ignored setting", "does not read",
             lambda b: _sweep_config(method__name="full_reuse", method__plan="full_reuse", method__layers="0-3")),
        Case("method=full_prefill with method.ratio", "ignored setting", "does not read",
             lambda b: _sweep_config(method__ratio=0.2)),
        Case("method=recompute with a profile path", "ignored setting", "does not read",
             lambda b: _sweep_config(method__name="recompute", method__plan="recompute:0-1", method__layers="0-1",
                                     method__path="p.json")),
        Case("method_settings for no such method", "ignored setting", "no such method",
             lambda b: _sweep_config(method_settings__recompte={"layers": "0-1"})),
        Case("method_settings a method does not read", "ignored setting", "reads",
             lambda b: _sweep_config(method_settings__recompute={"ratio": 0.2})),
        Case("a misspelt key added with + (+task.limt=8)", "ignored setting", "no such setting",
             lambda b: _sweep_config(task__limt=8)),
        Case("a misspelt top-level key added with + (+seeed=1)", "ignored setting", "did you mean seed",
             lambda b: _sweep_config(seeed=1)),
        Case("a misspelt override (task.limt=8)", "ignored setting", "did you mean task.limit",
             lambda b: _override("task.limt=8")),
        Case("a misspelt override in a sweep (timing.repeat=3)", "ignored setting", "did you mean timing.repeats",
             lambda b: _override("-m", "pair=mdqa_from_base", "timing.repeat=3")),
        Case("an lm-eval request longer than max_length", "limits", "exceed max_length", _long_request),
        Case("max_length past the model's positions", "limits", "positions",
             lambda b: _backend(b, "max_length=1000000")),
        Case("batch_size=0", "bad value", "at least 1", lambda b: _sweep_config(batch_size=0)),
        Case("task.limit=-8", "bad value", "at least 1", lambda b: _sweep_config(task__limit=-8)),
        Case("timing.repeats=0", "bad value", "at least 1", lambda b: _sweep_config(timing__repeats=0)),
        Case("an unknown split", "bad value", "split", lambda b: _sweep_config(task__split="validation")),
        Case("dtype=float64", "bad value", "dtype", lambda b: _sweep_config(dtype="float64")),
        Case("a device this torch cannot use", "bad value", "device",
             lambda b: _sweep_config(device="cuda:7" if torch.cuda.device_count() < 8 else "tpu")),
        Case("a CacheBlend ratio of 0", "bad value", "method.ratio",
             lambda b: _sweep_config(method__name="cacheblend", method__plan="cacheblend:0", method__ratio=0.0)),
        Case("output_root that is a file", "bad value", "not a folder",
             lambda b: _sweep_config(output_root=str(b.family.models[b.sender_name] / "config.json"))),
        Case("output_root under a file", "bad value", "is a file",
             lambda b: _sweep_config(output_root=str(b.family.models[b.sender_name] / "config.json" / "out"))),
        Case("a results line that is a JSON list", "results file", "not a row",
             lambda b: _results_file(b, "list", _ROW, "[1, 2]", {**_ROW, "key": "k2"})),
        Case("a results row without its fields", "results file", "not a result row",
             lambda b: _results_file(b, "fields", _ROW, {"kind": "eval", "key": "k2"}, {**_ROW, "key": "k3"})),
        Case("a results row with a mistyped quality", "results file", "not a result row",
             lambda b: _results_file(b, "typed", _ROW, {**_ROW, "key": "k2", "quality": "0.9"})),
        Case("two task.limit values in one table", "results file", "question sets",
             lambda b: _results_file(b, "limits", _ROW, {**_ROW, "key": "k2", "method": "recompute",
                                                          "n_samples": 8, "question_set": "q8"})),
        Case("a timings file timing rows that are not there", "results file", "times rows not in",
             lambda b: _timings(b, "stray", _TIMING)),
        Case("a timings line of the wrong shape", "results file", "not a timing record",
             lambda b: _timings(b, "shape", {**_TIMING, "keys": ["k1"], "speedup": "fast"})),
        Case("rows of two code versions in one table", "results file", "code versions",
             lambda b: _results_file(b, "versions", _ROW, {**_ROW, "key": "k2", "code_version": "0.1.0+b"})),
    ]


CASES = _cases()


def _message(err: Exception, bench: Bench) -> str:
    """The error's text without this machine's folders (what the check reads and the report shows)."""
    text = str(err)
    for folder, name in ((bench.scratch, "<scratch>"), (bench.family.root, "<family>")):
        text = text.replace(str(folder), name)
    return text


def try_case(case: Case, bench: Bench) -> Outcome:
    started = time.perf_counter()
    try:
        case.run(bench)
    except Exception as err:  # noqa: BLE001 — the campaign's point: anything but our own clear error is a finding
        text = _message(err, bench)
        observed = ("crash" if not isinstance(err, DroidSpeakError)
                    else "clear error" if case.says.lower() in text.lower() else "unclear error")
        summary = " ".join(line.strip() for line in text.splitlines()[:2])[:220]  # a mismatch's first bullet too
        return Outcome(case.name, case.group, observed, type(err).__name__, summary, time.perf_counter() - started)
    return Outcome(case.name, case.group, "silent", None, None, time.perf_counter() - started)


def try_all(bench: Bench, cases: list[Case] = CASES) -> list[Outcome]:
    return [try_case(case, bench) for case in cases]
