"""Fixtures shared by the tests; the helpers they are built from live in helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; set before transformers reads it

import pytest
import torch

from droidspeak.engine.loading import LoadedModel, from_module
from helpers import ARCHITECTURES, compose_config, fine_tune_of, save_checkpoint, tiny_model, word_tokenizer


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every model here is tiny: intra-op threads buy nothing and, on a busy machine, only spin and wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(ARCHITECTURES))
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def families():
    """``families(arch)``: (sender, receiver) of one architecture, a base and a fine-tune of it, built on first use
    and shared by the whole session (the engine never changes weights)."""
    built: dict[str, tuple[LoadedModel, LoadedModel]] = {}

    def get(arch: str) -> tuple[LoadedModel, LoadedModel]:
        if arch not in built:
            base = tiny_model(arch, seed=0)
            built[arch] = (
                from_module(base, name=f"{arch}-base"),
                from_module(fine_tune_of(base, seed=1), name=f"{arch}-tuned"),
            )
        return built[arch]

    return get


@pytest.fixture
def family(arch, families) -> tuple[LoadedModel, LoadedModel]:
    """(sender, receiver) of one architecture: a base and a fine-tune of it."""
    return families(arch)


@pytest.fixture(scope="session")
def llama_pair() -> tuple[LoadedModel, LoadedModel]:
    """(sender "base", receiver "tuned"): a llama base and a fine-tune of it, both with the word tokenizer."""
    base = tiny_model("llama", seed=0)
    tokenizer = word_tokenizer()
    return from_module(base, tokenizer, name="base"), from_module(fine_tune_of(base, seed=1), tokenizer, name="tuned")


@pytest.fixture(scope="session")
def llama_checkpoints(tmp_path_factory, llama_pair):
    """``llama_pair`` as standard HF directories (weights + tokenizer): ``<root>/base`` and ``<root>/tuned``."""
    root = tmp_path_factory.mktemp("checkpoints")
    sender, receiver = llama_pair
    save_checkpoint(sender.model, root / "base")
    save_checkpoint(receiver.model, root / "tuned")
    return root


@pytest.fixture(scope="session")
def mini_family(tmp_path_factory):
    """(zoo config, Family): the miniature family of conf/zoo/mini.yaml, built once per session in a cache of its own.
    A job that should find it (instead of building it again) runs with ``DROIDSPEAK_CACHE=<family.root.parent>``."""
    import droidspeak.sweep.config  # noqa: F401  (registers every config schema)
    from droidspeak.zoo.family import build_family

    cache = tmp_path_factory.mktemp("droidspeak-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROIDSPEAK_CACHE", str(cache))
        cfg = compose_config("build_zoo", "zoo=mini").zoo
        family = build_family(cfg, progress=False)
    assert family.root.parent == cache
    return cfg, family
