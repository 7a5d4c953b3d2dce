"""The family's tokenizer: a real `tokenizers` WordLevel tokenizer over the world's words.

Whitespace (spaces and newlines) only separates words and is never a token, so tokenizing a context and a
question separately and concatenating gives exactly the ids of ``context + "\\n\\n" + question``: the
lm-eval backend can cut prompts at any whitespace without changing a single id. No BOS is added (contexts
and suffixes encode the same way through every path); answers end with the EOS token ``</s>``.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from droidspeak.zoo.world import World

SPECIAL = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    words = list(SPECIAL.values()) + world.vocabulary
    if len(set(words)) != len(words):
        raise ValueError("world vocabulary has duplicate words")
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=SPECIAL["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=4096, **SPECIAL)
    tokenizer.padding_side = "right"
    return tokenizer
