"""The synthetic world every embedded task and model is built from.

Nothing can be downloaded, so the family's "knowledge" is a deterministic world: people with attributes and a
friend relation, records with fields, and small programs. Every name, value, field and identifier is one
word, and words are separated by single spaces, so a whitespace-split WordLevel tokenizer maps each to one
token (single-token keys and values are what lets a small model learn in-context lookup quickly).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"

# Words of the templates (documents, questions, code); part of the vocabulary.
TEMPLATE_WORDS = (
    ". ; : , ( ) = + - * question answer what is the of who has value which field record "
    "summarize call def return complete list ? |"
).split()
ATTRIBUTES = ("city", "job", "pet", "color", "food", "sport")
FRIEND = "friend"


@dataclass
class WorldConfig:
    seed: int = 0
    names: int = 120  # people (capitalised pseudo-words)
    values_per_attribute: int = 24
    fields: int = 48  # record field names (multifield task)
    field_values: int = 100  # record values: numbers 0..field_values-1
    functions: int = 48  # function names (code task)
    variables: int = 16  # parameter / local names (code task)


def _syllables(rng: random.Random, count: int, length: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(length))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class World:
    """The entities of the world; deterministic from ``config.seed``."""

    config: WorldConfig

    @cached_property
    def _words(self) -> dict[str, tuple[str, ...]]:
        rng = random.Random(f"world-{self.config.seed}")
        taken = set(TEMPLATE_WORDS) | set(ATTRIBUTES) | {FRIEND}
        out: dict[str, tuple[str, ...]] = {
            "names": tuple(w.capitalize() for w in _syllables(rng, self.config.names, 2, taken)),
        }
        for attribute in ATTRIBUTES:
            out[attribute] = tuple(_syllables(rng, self.config.values_per_attribute, 2, taken))
        out["fields"] = tuple(_syllables(rng, self.config.fields, 3, taken))
        out["functions"] = tuple("fn_" + w for w in _syllables(rng, self.config.functions, 2, taken))
        out["variables"] = tuple(_syllables(rng, self.config.variables, 1, taken))
        out["numbers"] = tuple(str(i) for i in range(self.config.field_values))
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return self._words["names"]

    def values(self, attribute: str) -> tuple[str, ...]:
        return self.names if attribute == FRIEND else self._words[attribute]

    @property
    def fields(self) -> tuple[str, ...]:
        return self._words["fields"]

    @property
    def numbers(self) -> tuple[str, ...]:
        return self._words["numbers"]

    @property
    def functions(self) -> tuple[str, ...]:
        return self._words["functions"]

    @property
    def variables(self) -> tuple[str, ...]:
        return self._words["variables"]

    @property
    def content_words(self) -> tuple[str, ...]:
        """Every name and value: the alphabet of the induction documents."""
        words = list(self.names)
        for attribute in ATTRIBUTES:
            words += self._words[attribute]
        return tuple(words + list(self.fields) + list(self.numbers) + list(self.functions) + list(self.variables))

    @property
    def vocabulary(self) -> list[str]:
        """All words, in a fixed order (the tokenizer adds its special tokens in front)."""
        return list(TEMPLATE_WORDS) + list(ATTRIBUTES) + [FRIEND] + list(self.content_words)


# ---- world snapshots: what one context is about ------------------------------------------------------------
# Every lookup is keyed by ONE token: a name is a key in at most one document of a context. (Keys made of two
# tokens, e.g. "name attribute value" facts, kept small models on a lookup plateau far past our budget.)
@dataclass(frozen=True)
class Document:
    attribute: str  # what the values are (city, job, ..., or friend)
    pairs: tuple[tuple[str, str], ...]  # (name, value); names unique within a context

    def get(self, name: str) -> str | None:
        return dict(self.pairs).get(name)

    def text(self) -> str:
        return f"{self.attribute} : " + " , ".join(f"{k} {v}" for k, v in self.pairs) + " ."


def sample_documents(
    world: World, rng: random.Random, count: int, pairs: tuple[int, int] = (2, 6), distinct: bool = False,
    names: list[str] | None = None,
) -> list[Document]:
    """``count`` documents of (name, value) pairs; names never repeat across them. ``distinct``: no two
    documents share an attribute. ``names``: use these names first (in order) as keys."""
    sizes = [rng.randint(*pairs) for _ in range(count)]
    pool = [n for n in world.names if not names or n not in names]
    keys = list(names or []) + rng.sample(pool, max(0, sum(sizes) - len(names or [])))
    attributes = rng.sample(ATTRIBUTES, count) if distinct else [rng.choice(ATTRIBUTES) for _ in range(count)]
    docs, at = [], 0
    for attribute, size in zip(attributes, sizes):
        docs.append(Document(attribute, tuple((k, rng.choice(world.values(attribute))) for k in keys[at : at + size])))
        at += size
    return docs


@dataclass(frozen=True)
class Record:
    title: str
    fields: tuple[tuple[str, str], ...]  # (field, value); values distinct within a record

    def text(self) -> str:
        body = "\n".join(f"{field} {value} ;" for field, value in self.fields)
        return f"record {self.title} :\n{body}"


def sample_record(world: World, rng: random.Random, count: int) -> Record:
    count = min(count, len(world.fields))
    fields = rng.sample(world.fields, count)
    values = rng.sample(world.numbers, count)
    return Record(rng.choice(world.names), tuple(zip(fields, values)))


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[str, ...]
    body: tuple[str, ...]  # tokens of "local = p op p ; return local op p ;"

    def signature(self) -> str:
        return " , ".join(self.params) + " )"

    def text(self) -> str:
        return f"def {self.name} ( {self.signature()} :\n  " + " ".join(self.body)


def sample_program(world: World, rng: random.Random, count: int) -> list[Function]:
    functions = []
    for name in rng.sample(world.functions, count):
        params = tuple(rng.sample(world.variables, rng.randint(1, 4)))
        local = rng.choice([v for v in world.variables if v not in params])
        a, b, c = (rng.choice(params) for _ in range(3))
        op1, op2 = rng.choice("+-*"), rng.choice("+-*")
        body = (local, "=", a, op1, b, ";", "return", local, op2, c, ";")
        functions.append(Function(name, params, body))
    return functions
