"""LongBench-style tasks for a real tokenizer: an instruction, long passages, then one question per request.

The toy family's tasks (``droidspeak.zoo.tasks``) are one-word tokens over a synthetic world; these are English
text for a pretrained model's BPE tokenizer, hundreds of sentences long. Every fact is about an invented entity
(pseudo-word surnames, towns and firms), so no model can answer from what it memorised in pretraining: the
answer is in the context or nowhere. Each generator has the toy's signature ``make(lexicon, rng, size,
questions) -> (context, [(question, answer), ...])``, so splits, JSONL rows and lm-eval YAML are shared.

| task         | LongBench       | the context                                    | a question                         |
|--------------|-----------------|------------------------------------------------|------------------------------------|
| long_mdqa    | hotpotqa        | ``size`` biographies, namesakes as distractors | one fact of one person             |
| long_fieldqa | multifieldqa_en | one technical report of ``size`` sections      | one field's value                  |
| long_code    | lcc             | a Python module of ``size`` functions          | complete a call: the argument list |

Questions contain no blank line (the lm-eval backend shares the prompt up to the last ``"\\n\\n"``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

QA = list[tuple[str, str]]

FIRST_NAMES = (
    "Anna Brian Clara David Elena Felix Grace Henry Irene James Karen Leo Maria Nathan Olivia Peter Rosa Samuel "
    "Tara Victor Wendy Adam Beatrice Carl Diana Edgar Fiona George Helen Ivan Julia Kevin Laura Martin Nora Oscar "
    "Paula Ruth Simon Teresa Walter"
).split()
OCCUPATIONS = (
    "architect chemist geologist violinist surgeon economist translator photographer astronomer engineer "
    "historian botanist cartographer sculptor journalist pharmacist"
).split()
TOPICS = (
    "tidal energy", "glacier mapping", "bridge acoustics", "soil chemistry", "medieval trade routes",
    "urban beekeeping", "solar glass", "river sediment", "coral genetics", "wind tunnel design",
    "rare manuscripts", "crop rotation", "deep sea vents", "railway signalling", "paper conservation",
    "volcanic ash", "textile dyes", "bird migration",
)
AWARDS = ("Halden Medal", "Orsk Prize", "Vellmar Award", "Brisk Fellowship", "Tamsin Medal", "Corrow Prize",
          "Eldin Award", "Marrow Fellowship", "Quill Medal", "Sarnet Prize")
FIRM_SUFFIX = ("Systems", "Laboratories", "Works", "Group", "Instruments", "Foundry", "Analytics", "Press")
TOWN_SUFFIX = ("ford", "haven", "mouth", "field", "bury", "wick", "stead", "brook", "more", "dale")
SYLLABLES = "bar bel cor dan del fen gar hal jor kel lan mar nor pel quin ros sal tor val wen yar zel".split()

# Filler for the report: generic engineering prose around the fields (no facts a question asks about).
FILLER = (
    "The review team visited the site twice during the reporting period.",
    "All measurements were repeated after the annual calibration of the instruments.",
    "Maintenance records were digitised and cross-checked against the original paper logs.",
    "Minor corrosion was observed on secondary fittings and scheduled for replacement.",
    "The control software was updated without interrupting normal operation.",
    "Staff completed the refresher course on emergency procedures in the spring.",
    "Noise levels at the perimeter remained within the limits agreed with the council.",
    "A backup power test was carried out under full load and passed without faults.",
    "Spare parts inventory was reconciled and obsolete items were removed from stock.",
    "The drainage channels were cleared ahead of the rainy season.",
    "Visitors are required to sign in at the gatehouse and wear protective equipment.",
    "The documentation was translated so that contractors could follow the procedures.",
    "Vibration sensors recorded no events above the alarm threshold.",
    "Lighting in the main hall was replaced with units of lower power draw.",
    "Water usage fell compared with the previous year after the valves were replaced.",
    "An external auditor reviewed the safety case and raised no major findings.",
)
REPORT_FIELDS = (  # (field name as asked, value kind)
    ("maximum operating temperature", "celsius"), ("rated capacity", "kilowatts"), ("project lead", "person"),
    ("commissioning year", "year"), ("primary supplier", "firm"), ("inspection interval", "months"),
    ("serial prefix", "serial"), ("cooling method", "cooling"), ("site town", "town"),
    ("backup generator count", "count"), ("design pressure", "bar"), ("safety officer", "person"),
)
COOLING = ("liquid immersion", "forced air", "evaporative towers", "closed water loop", "passive radiators")
VERBS = "load parse merge scale filter render encode rotate sample export validate compress".split()
NOUNS = "config buffer matrix record image signal table packet frame vector token schedule".split()
ARGS = ("path", "size", "offset", "mode", "count", "axis", "weights", "limit", "verbose", "encoding", "seed",
        "threshold", "timeout", "depth", "batch", "strict")

MDQA_INSTRUCTION = ("Answer the question based on the given passages. Only give me the answer and do not output "
                    "any other words.\n\nThe following are given passages.")
FIELDQA_INSTRUCTION = ("Read the following report and answer the question. Only give me the answer and do not "
                       "output any other words.")
CODE_INSTRUCTION = "Please complete the code given below."


@dataclass(frozen=True)
class Lexicon:
    """The invented entities of the long tasks, deterministic from ``seed``."""

    seed: int = 0

    @cached_property
    def _pools(self) -> dict[str, tuple[str, ...]]:
        rng = random.Random(f"lexicon-{self.seed}")

        def words(count: int, parts: int, suffixes: tuple[str, ...] = ("",)) -> tuple[str, ...]:
            out: dict[str, None] = {}
            while len(out) < count:
                out["".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize() + rng.choice(suffixes)] = None
            return tuple(out)

        return {
            "surnames": words(80, 2),
            "towns": words(40, 1, TOWN_SUFFIX),
            "firms": tuple(f"{w} {rng.choice(FIRM_SUFFIX)}" for w in words(30, 2)),
        }

    @property
    def surnames(self) -> tuple[str, ...]:
        return self._pools["surnames"]

    @property
    def towns(self) -> tuple[str, ...]:
        return self._pools["towns"]

    @property
    def firms(self) -> tuple[str, ...]:
        return self._pools["firms"]


def _question(text: str) -> str:
    return f"Question: {text}\nAnswer:"


# ---- long_mdqa: biographies with namesakes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Person:
    name: str
    born: int
    town: str
    occupation: str
    firm: str
    award: str
    topic: str
    study_town: str

    def passage(self, rng: random.Random) -> str:
        first = self.name.split()[0]
        pronoun = rng.choice(("She", "He"))
        sentences = [
            f"{self.name} (born {self.born}) is a {self.occupation} from {self.town}.",
            f"{pronoun} studied at the university in {self.study_town} and wrote a thesis on {self.topic}.",
            f"After graduating, {first} joined {self.firm}, where {pronoun.lower()} led a small research team.",
            f"In {self.born + rng.randint(28, 40)}, {self.name} received the {self.award} for work on {self.topic}.",
            f"Colleagues describe {first} as patient and precise, and {pronoun.lower()} still lectures on "
            f"{self.occupation}s' methods each autumn.",
        ]
        return " ".join(sentences)


MDQA_QUESTIONS = (
    ("In which town was {name} born?", "town"),
    ("Which company did {name} join after graduating?", "firm"),
    ("Which award did {name} receive?", "award"),
    ("In which year was {name} born?", "born"),
    ("What is the occupation of {name}?", "occupation"),
    ("Where did {name} study?", "study_town"),
)


def long_mdqa(lexicon: Lexicon, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    """``size`` biographies; surnames repeat across people (namesakes), so a question needs the full name."""
    surnames = rng.sample(lexicon.surnames, max(2, size // 2))
    names: list[str] = []
    while len(names) < size:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(surnames)}"
        if name not in names:
            names.append(name)
    people = [Person(name, rng.randint(1931, 1989), rng.choice(lexicon.towns), rng.choice(OCCUPATIONS),
                     rng.choice(lexicon.firms), rng.choice(AWARDS), rng.choice(TOPICS), rng.choice(lexicon.towns))
              for name in names]
    passages = [f"Passage {i + 1}:\n{p.passage(rng)}" for i, p in enumerate(people)]
    asked = rng.sample(people, min(questions, len(people)))
    qa = []
    for person in asked:
        template, attribute = rng.choice(MDQA_QUESTIONS)
        qa.append((_question(template.format(name=person.name)), str(getattr(person, attribute))))
    return MDQA_INSTRUCTION + "\n\n" + "\n\n".join(passages), qa


# ---- long_fieldqa: one report, fields buried in prose -----------------------------------------------------------
def _field_value(kind: str, lexicon: Lexicon, rng: random.Random) -> str:
    return {
        "celsius": lambda: f"{rng.randint(40, 95)} degrees Celsius",
        "kilowatts": lambda: f"{rng.randint(12, 980)} kilowatts",
        "person": lambda: f"{rng.choice(FIRST_NAMES)} {rng.choice(lexicon.surnames)}",
        "year": lambda: str(rng.randint(1975, 2021)),
        "firm": lambda: rng.choice(lexicon.firms),
        "months": lambda: f"{rng.randint(2, 30)} months",
        "serial": lambda: f"{rng.choice('BKMRTVXZ')}{rng.choice('AEHLNPS')}-{rng.randint(1000, 9999)}",
        "cooling": lambda: rng.choice(COOLING),
        "town": lambda: rng.choice(lexicon.towns),
        "count": lambda: str(rng.randint(2, 14)),
        "bar": lambda: f"{rng.randint(3, 60)} bar",
    }[kind]()


def long_fieldqa(lexicon: Lexicon, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    """A report on an invented facility: ``size`` sections of filler prose, each stating one or two fields."""
    kinds = ("Pumping Station", "Data Centre", "Research Reactor", "Desalination Plant", "Cold Store")
    facility = f"{rng.choice(lexicon.surnames)} {rng.choice(kinds)}"
    fields = rng.sample(REPORT_FIELDS, min(len(REPORT_FIELDS), max(questions, size)))
    values = {name: _field_value(kind, lexicon, rng) for name, kind in fields}
    stated = list(values.items())
    sections = []
    for index in range(size):
        sentences = rng.sample(FILLER, 4)
        for name, value in stated[index::size]:
            sentences.insert(rng.randint(0, len(sentences)), f"The {name} of the {facility} is {value}.")
        sections.append(f"Section {index + 1}.\n" + " ".join(sentences))
    asked = rng.sample(stated, min(questions, len(stated)))
    qa = [(_question(f"What is the {name} of the {facility}?"), value) for name, value in asked]
    title = f"Annual technical report: {facility}"
    return FIELDQA_INSTRUCTION + "\n\n" + title + "\n\n" + "\n\n".join(sections), qa


# ---- long_code: a module of functions; complete a call --------------------------------------------------------
def long_code(lexicon: Lexicon, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    """A Python module of ``size`` functions; the question starts a call and the answer is its argument list."""
    taken: set[str] = set()
    functions: list[tuple[str, list[str]]] = []
    while len(functions) < size:
        name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
        if name not in taken:
            taken.add(name)
            functions.append((name, rng.sample(ARGS, rng.randint(2, 4))))
    blocks = []
    for name, args in functions:
        verb, noun = name.split("_")
        body = ["    result = []",
                f"    for item in {args[0]}:",
                "        if item is not None:",
                "            result.append(item)",
                f"    log.debug(\"{name}: %d items\", len(result))",
                f"    return {args[-1]} if not result else result"]
        blocks.append(f"def {name}({', '.join(args)}):\n    \"\"\"{verb.capitalize()} the {noun} given its "
                      f"{' and '.join(args[:2])}.\"\"\"\n" + "\n".join(body))
    module = "import logging\n\nlog = logging.getLogger(__name__)\n\n\n" + "\n\n\n".join(blocks)
    asked = rng.sample(functions, min(questions, len(functions)))
    qa = [(f"# Complete the call with its arguments in order.\nvalue = {name}(", ", ".join(args) + ")")
          for name, args in asked]
    return CODE_INSTRUCTION + "\n\n" + module, qa
