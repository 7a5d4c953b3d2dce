"""The one version-neutral way to talk to transformers: the cache keyword is probed, not assumed."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from droidspeak.engine.arch import decoder_stack
from droidspeak.errors import UnsupportedArchitectureError
from droidspeak.hf_compat import CACHE_KW, SDPA_GQA_SWITCH, accepts_cache, cache_arg, returned_cache
from helpers import tiny_model


def test_probed_keyword_matches_the_installed_transformers():
    renamed = Version(transformers.__version__) >= Version("5.24")
    assert CACHE_KW == ("cache" if renamed else "past_key_values")
    assert SDPA_GQA_SWITCH == (Version(transformers.__version__) >= Version("5.23"))


def test_a_layer_handed_the_keyword_stores_its_kv():
    model = tiny_model("llama", seed=0)
    out = model.model(input_ids=torch.arange(9)[None], use_cache=True)
    cache = returned_cache(out)
    assert all(layer.keys.shape[-2] == 9 for layer in cache.layers)
    assert accepts_cache(model.model.layers[0])
    before = cache.layers[0].keys.shape[-2]
    hidden = model.model.embed_tokens(torch.tensor([[3]]))
    positions = torch.tensor([[9]])
    model.model.layers[0](hidden, position_embeddings=model.model.rotary_emb(hidden, position_ids=positions),
                          position_ids=positions, use_cache=True, **cache_arg(cache))
    assert cache.layers[0].keys.shape[-2] == before + 1  # the layer wrote into the cache it was handed


def test_layers_without_the_keyword_are_refused():
    model = tiny_model("llama", seed=0)
    layer = model.model.layers[0]
    layer.forward = lambda hidden_states, **kwargs: hidden_states  # a cache keyword would vanish into kwargs
    with pytest.raises(UnsupportedArchitectureError, match=f"do not take `{CACHE_KW}=`"):
        decoder_stack(model)
