"""Every bad input we know, each tried once on the toy family: it must give one clear error, early.

A case passes when it raises one of droidspeak's own errors (``DroidSpeakError``: a message written for the
user) whose text names what is wrong (``says``). Any other exception is an *unclear* error (a stack trace from
deep inside a library); no exception at all is *accepted* — a silent wrong answer, the worst outcome.
"""

from __future__ import annotations

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
from transformers import AutoConfig, AutoModelForCausalLM

from droidspeak.engine.cache import cache_key
from droidspeak.engine.loading import LoadedModel, load_model
from droidspeak.errors import DroidSpeakError
from droidspeak.profile.profile_file import load_profile, resolve_profile_plan
from droidspeak.reuse import ReusePair
from droidspeak.store import DiskStore
from droidspeak.track.logger import check_mode
from droidspeak.track.results import read_rows
from droidspeak.zoo.gguf_base import GgufConfig, locate


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    says: str  # words the error message must contain (case-insensitive)
    run: Callable[["Bench"], object]


@dataclass(frozen=True)
class Outcome:
    """One tried input: what was expected (a clear error) and what happened."""

    name: str
    group: str
    observed: str  # "clear error" | "unclear error" | "accepted"
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
        clear = isinstance(err, DroidSpeakError) and case.says.lower() in text.lower()
        summary = " ".join(line.strip() for line in text.splitlines()[:2])[:220]  # a mismatch's first bullet too
        return Outcome(case.name, case.group, "clear error" if clear else "unclear error", type(err).__name__, summary,
                       time.perf_counter() - started)
    return Outcome(case.name, case.group, "accepted", None, None, time.perf_counter() - started)


def try_all(bench: Bench, cases: list[Case] = CASES) -> list[Outcome]:
    return [try_case(case, bench) for case in cases]
