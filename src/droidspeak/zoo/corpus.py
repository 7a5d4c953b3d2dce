"""Training examples of the family: the base's pretraining documents and the fine-tunes' QA examples.

An example is token ids plus a loss mask (True where the token is a training target). Pretraining has two
document kinds, the recipe that made in-context lookup appear quickly in small Llamas:
- induction documents: random content words in (a, b) pairs, then "|" and either an exact copy or the
  same pairs shuffled; only the part after "|" is scored. Exact copies alone first (with tied embeddings
  the copy circuit appears in a few hundred steps), then mixed with shuffled pairs (lookup by key);
- world documents: a task-shaped context (people, a record or a program), then "|" and some of its facts
  restated in shuffled order; only the restatement is scored, so every scored value is a lookup.
Fine-tuning examples score only ``" " + answer`` and EOS after ``context + "\\n\\n" + question``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from droidspeak.zoo.world import World, sample_documents, sample_program, sample_record


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]


class Encoder:
    """Word → id with the tokenizer's vocabulary (texts are whitespace-split words)."""

    def __init__(self, tokenizer):
        self.vocab = tokenizer.get_vocab()
        self.eos = tokenizer.eos_token_id
        self.prompt_start: list[int] = []

    def __call__(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split()]


class TokenizerEncoder:
    """Text → ids with a real (BPE) tokenizer and no special tokens: a prefix and its target encode apart, as the
    prompt and the generated answer do under lm-eval."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        # What the tokenizer puts before a prompt it encodes (Gemma's <bos>; nothing for SmolLM2): a fine-tune's
        # prompts start as the evaluated ones do (engine.answers.Questions, lm-eval's add_bos_token for Gemma).
        self.prompt_start: list[int] = tokenizer("")["input_ids"]

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _scored(enc: Encoder, prefix: str, target: str, eos: bool = False) -> Example:
    a, b = enc(prefix), enc(target) + ([enc.eos] if eos else [])
    return Example(a + b, [False] * len(a) + [True] * len(b))


def induction_document(world: World, enc: Encoder, rng: random.Random, pairs: int, shuffle: float = 0.5) -> Example:
    """``pairs`` random (a, b) word pairs, "|", then an exact copy or (with probability ``shuffle``) the pairs
    in another order."""
    words = rng.sample(world.content_words, 2 * pairs)
    items = [(words[2 * i], words[2 * i + 1]) for i in range(pairs)]
    first = " ".join(f"{a} {b}" for a, b in items)
    if rng.random() < shuffle:
        rng.shuffle(items)
    return _scored(enc, first + " |", " ".join(f"{a} {b}" for a, b in items))


def world_document(world: World, enc: Encoder, rng: random.Random, facts: int) -> Example:
    """A context holding about ``facts`` facts, then a shuffled restatement of some of them."""
    kind = rng.choices(("documents", "record", "program"), weights=(3, 1, 1))[0]
    if kind == "documents":
        docs = sample_documents(world, rng, max(1, round(facts / 4)))
        context = "\n".join(d.text() for d in docs)
        restated = [f"{k} {v} ," for d in docs for k, v in d.pairs]
    elif kind == "record":
        record = sample_record(world, rng, max(2, facts))
        context = record.text()
        restated = [f"{f} {v} ;" for f, v in record.fields]
    else:
        program = sample_program(world, rng, max(1, round(facts / 3)))
        context = "\n".join(f.text() for f in program)
        restated = [f"def {f.name} ( {f.signature()} :" for f in program]
    rng.shuffle(restated)
    keep = restated[: max(1, (len(restated) + 1) // 2)]
    return _scored(enc, context + " |", " ".join(keep))


def qa_example(enc: Encoder | TokenizerEncoder, context: str, question: str, answer: str) -> Example:
    """The prompt lm-eval builds (``doc_to_text``), then the target with its delimiter (``" " + answer``) and EOS."""
    example = _scored(enc, context + "\n\n" + question, " " + answer, eos=True)
    return Example(enc.prompt_start + example.ids, [False] * len(enc.prompt_start) + example.mask)
