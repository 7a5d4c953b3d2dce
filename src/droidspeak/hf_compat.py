"""The one place that knows which transformers 5.x is installed; every other module talks through it.

transformers 5.24 renamed the cache keyword of models, decoder layers, ``generate`` and the mask builders from
``past_key_values`` to ``cache`` (the old name stays a deprecated alias until 5.40), and model outputs carry
``.cache``. Before 5.24 an unknown ``cache=`` is swallowed by ``**kwargs``: a decoder layer handed one stores no
K/V at all, silently. So the keyword is probed once, from the signature of ``create_causal_mask`` (renamed in the
same release), and checked against each model's decoder layers when the engine takes the model on
(``arch.decoder_stack``). No ``if version`` branches anywhere else.
"""

from __future__ import annotations

import inspect

import transformers
from transformers.integrations import sdpa_attention
from transformers.masking_utils import create_causal_mask

CACHE_KW = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"

# transformers >= 5.23 lets sdpa keep GQA with a mask (no repeat_kv of the context) when this variable is "1";
# earlier versions ignore it, so a benchmark must not label a variant with it.
SDPA_GQA_ENV = "TRANSFORMERS_SDPA_FORCE_GQA"
SDPA_GQA_SWITCH = SDPA_GQA_ENV in inspect.getsource(sdpa_attention.use_gqa_in_sdpa)

VERSION = transformers.__version__


def cache_arg(cache) -> dict:
    """``{keyword: cache}`` for a model, decoder layer, ``generate`` or mask builder of this transformers."""
    return {CACHE_KW: cache}


def returned_cache(output):
    """The cache a model forward returned (``output.cache`` or ``output.past_key_values``)."""
    return getattr(output, CACHE_KW)


def accepts_cache(module) -> bool:
    """Whether ``module.forward`` names this transformers' cache keyword (rather than swallowing it in kwargs)."""
    return CACHE_KW in inspect.signature(module.forward).parameters
