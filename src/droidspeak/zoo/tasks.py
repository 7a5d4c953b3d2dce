"""The embedded synthetic tasks: one generator per task kind the paper evaluates, deterministic from a seed.

Each context is drawn from the synthetic world and carries several questions (contexts are shared across
requests, as in real workloads). The prompt a model sees is exactly ``context + "\\n\\n" + question`` and its
expected output is ``" " + answer`` (then the end-of-sequence token). Questions never contain "\\n\\n": the
lm-eval backend splits the shared context at the last one.

| task       | LongBench analogue | what it asks                                              | metric         |
|------------|--------------------|-----------------------------------------------------------|----------------|
| mdqa       | hotpotqa           | one person's value among several documents (distractors) | f1 (and em)    |
| twohop     | 2wikimqa           | an attribute of a person's friend (answer: friend value)  | f1             |
| fieldqa    | multifieldqa_en    | a field of one long record, or which field holds a value | f1             |
| summary    | multi_news         | every value of one document, in order                    | rouge_l        |
| code       | lcc                | complete a call of a function defined in the program     | edit_sim       |

The ``long_*`` tasks are their English, LongBench-style counterparts for a real BPE tokenizer (contexts of
1-3K tokens): see droidspeak.zoo.long_tasks. Their generators take a ``Lexicon`` where these take a ``World``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from droidspeak.atomic import write_text
from droidspeak.zoo.long_tasks import long_code, long_fieldqa, long_mdqa
from droidspeak.zoo.task_metrics import METRICS
from droidspeak.zoo.world import ATTRIBUTES, FRIEND, Document, World, sample_documents, sample_program, sample_record

SPLITS = ("train", "profile", "test")
QA = list[tuple[str, str]]  # (question, answer) pairs of one context


def _join(docs) -> str:
    return "\n".join(d.text() for d in docs)


def _question(text: str) -> str:
    return f"question : {text} ? answer :"


def mdqa(world: World, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    docs = sample_documents(world, rng, size)
    slots = [(d.attribute, k, v) for d in docs for k, v in d.pairs]
    picked = rng.sample(slots, min(questions, len(slots)))
    return _join(docs), [(_question(f"what is the {a} of {k}"), v) for a, k, v in picked]


def twohop(world: World, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    """A friend document (A -> B) and attribute documents keyed by the B names, among distractors."""
    hop = rng.randint(2, 5)
    people = rng.sample(world.names, 2 * hop)
    firsts, friends = people[:hop], people[hop:]
    docs = sample_documents(world, rng, max(1, size - 1), names=friends)
    docs = [d for d in docs if d.attribute != FRIEND]
    friend_doc = Document(FRIEND, tuple(zip(firsts, friends)))
    docs.insert(rng.randint(0, len(docs)), friend_doc)
    owner = {k: (d.attribute, v) for d in docs if d is not friend_doc for k, v in d.pairs}
    slots = [(a, f) for a, f in friend_doc.pairs if f in owner]
    picked = rng.sample(slots, min(questions, len(slots)))
    qa = [(_question(f"what is the {owner[f][0]} of the friend of {a}"), f"{f} {owner[f][1]}") for a, f in picked]
    return _join(docs), qa


def fieldqa(world: World, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    record = sample_record(world, rng, size)
    qa = []
    for field_name, value in rng.sample(record.fields, min(questions, len(record.fields))):
        if rng.random() < 0.5:
            qa.append((_question(f"what is the {field_name}"), value))
        else:
            qa.append((_question(f"which field has value {value}"), field_name))
    return record.text(), qa


def summary(world: World, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    docs = sample_documents(world, rng, min(size, len(ATTRIBUTES)), distinct=True)
    picked = rng.sample(docs, min(questions, len(docs)))
    return _join(docs), [(_question(f"summarize {d.attribute}"), " ".join(v for _, v in d.pairs)) for d in picked]


def code(world: World, rng: random.Random, size: int, questions: int) -> tuple[str, QA]:
    functions = sample_program(world, rng, size)
    picked = rng.sample(functions, min(questions, len(functions)))
    qa = [(f"complete : call {f.name} (", f.signature()) for f in picked]
    return "\n".join(f.text() for f in functions), qa


@dataclass(frozen=True)
class TaskKind:
    name: str
    analogue: str  # the LongBench task it stands for
    metric: str  # key of metrics.METRICS
    make: Callable[[World, random.Random, int, int], tuple[str, QA]]
    max_new_tokens: int


TASKS: dict[str, TaskKind] = {
    t.name: t
    for t in (
        TaskKind("mdqa", "hotpotqa", "f1", mdqa, 4),
        TaskKind("twohop", "2wikimqa", "f1", twohop, 5),
        TaskKind("fieldqa", "multifieldqa_en", "f1", fieldqa, 4),
        TaskKind("summary", "multi_news", "rouge_l", summary, 10),
        TaskKind("code", "lcc", "edit_sim", code, 10),
        # LongBench-style English tasks for a real tokenizer (droidspeak.zoo.long_tasks)
        TaskKind("long_mdqa", "hotpotqa", "f1", long_mdqa, 12),
        TaskKind("long_fieldqa", "multifieldqa_en", "f1", long_fieldqa, 12),
        TaskKind("long_code", "lcc", "edit_sim", long_code, 16),
    )
}


@dataclass
class TaskConfig:
    """Shape of one task's data: context size range (people, fields or functions) and split sizes."""

    size_min: int = 8
    size_max: int = 12
    questions: int = 4  # questions per context
    train_size: list[int] | None = None  # [min, max] size of training contexts (None: as the eval splits): long
    # tasks train on shorter contexts than they are evaluated on, since a backward pass grows with length
    contexts: dict[str, int] = field(
        default_factory=lambda: {"train": 64, "profile": 50, "test": 16}
    )  # profile: the paper profiles on 50


def context_id(task: str, context: str) -> str:
    return f"{task}-{hashlib.sha256(context.encode()).hexdigest()[:12]}"


def _draw(world: World, task: str, cfg: TaskConfig, rng: random.Random, size: int | None = None) -> tuple[str, QA]:
    size = size if size is not None else rng.randint(cfg.size_min, cfg.size_max)
    return TASKS[task].make(world, rng, size, cfg.questions)


def eval_contexts(
    world: World, task: str, cfg: TaskConfig, seed: int, exclude: frozenset[str] = frozenset()
) -> dict[str, list[tuple[str, QA]]]:
    """The profile and test splits (contexts + questions), disjoint from each other and from ``exclude``."""
    seen: set[str] = set(exclude)
    return {split: _draw_unseen(world, task, cfg, seed, split, cfg.contexts[split], seen)  # profile first
            for split in ("profile", "test")}


def _draw_unseen(world: World, task: str, cfg: TaskConfig, seed: int, split: str, count: int,
                 seen: set[str]) -> list[tuple[str, QA]]:
    """``count`` contexts of ``split``'s own stream, none in ``seen`` (which each one joins)."""
    rng = random.Random(f"{seed}-{task}-{split}")
    drawn: list[tuple[str, QA]] = []
    while len(drawn) < count:
        context, qa = _draw(world, task, cfg, rng)
        if context not in seen:
            seen.add(context)
            drawn.append((context, qa))
    return drawn


WIDE_TEST = "test_wide"  # a family's wide held-out split (ZooConfig.wide_test_contexts)


def trained_contexts(world: World, task: str, cfg: TaskConfig, seed: int, family_splits: dict[str, list[dict]],
                     consumed: int) -> frozenset[str]:
    """Every context of ``task`` a fine-tune of the family read from the training stream ``cfg`` draws: its first
    ``consumed`` (each variant draws from the start of its stream, past the profile and test contexts), and never
    fewer than the train split holds (all of it, where ``cfg`` draws the task's own stream; a few more than were read,
    where it draws another size)."""
    evaluated = {row["context"] for split in ("profile", "test") for row in family_splits[split]}
    stream = train_stream(world, task, cfg, seed, evaluated, train_sizes(cfg))
    return frozenset(next(stream)[0] for _ in range(max(consumed, cfg.contexts["train"])))


def wide_test_rows(world: World, task: str, cfg: TaskConfig, seed: int, contexts: int,
                   family_splits: dict[str, list[dict]], trained: frozenset[str]) -> list[dict]:
    """The wide held-out split of a built family: its test split's contexts, then the next ones of the same stream,
    none a profile context or one in ``trained``. Drawn after the build, so the family's own splits are checked to be
    this stream's (a generator that changed since would give other questions under the same name)."""
    drawn = eval_contexts(world, task, replace(cfg, contexts={**cfg.contexts, "test": contexts}), seed, trained)
    for split in ("profile", "test"):
        ours = [row["context"] for row in rows_of(task, split, drawn[split])][: len(family_splits[split])]
        if ours != [row["context"] for row in family_splits[split]]:
            raise ValueError(f"{task}: the generator no longer draws this family's {split} split; rebuild the family")
    return rows_of(task, WIDE_TEST, drawn["test"])


DEV = "dev"  # a family's development split (ZooConfig.dev_contexts): for tuning recipes, never profiled or reported


def dev_rows(world: World, task: str, cfg: TaskConfig, seed: int, contexts: int,
             family_splits: dict[str, list[dict]], trained: frozenset[str]) -> list[dict]:
    """The development split of a built family: ``contexts`` contexts from a stream of its own, none in any of
    ``family_splits`` or ``trained``, so a recipe can be tuned on it without reading a profile or test question."""
    seen = {row["context"] for rows in family_splits.values() for row in rows} | trained
    return rows_of(task, DEV, _draw_unseen(world, task, cfg, seed, DEV, contexts, seen))


def train_stream(
    world: World,
    task: str,
    cfg: TaskConfig,
    seed: int,
    exclude: set[str],
    size: Callable[[random.Random], int] | None = None,
) -> Iterator[tuple[str, QA]]:
    """Endless training contexts of ``task`` (never one in ``exclude``); ``size`` overrides the size draw
    (curricula)."""
    rng = random.Random(f"{seed}-{task}-train")
    while True:
        context, qa = _draw(world, task, cfg, rng, None if size is None else size(rng))
        if context not in exclude:
            yield context, qa


def rows_of(task: str, split: str, contexts: list[tuple[str, QA]]) -> list[dict]:
    rows = []
    for context, qa in contexts:
        cid = context_id(task, context)
        for index, (question, answer) in enumerate(qa):
            assert "\n\n" not in question
            rows.append(
                {
                    "id": f"{cid}-{index}",
                    "task": task,
                    "split": split,
                    "context_id": cid,
                    "context": context,
                    "question": question,
                    "answer": answer,
                    "answers": [answer],
                }
            )
    return rows


def train_sizes(cfg: TaskConfig) -> Callable[[random.Random], int] | None:
    """The size draw of training contexts, where the task config sets one of its own."""
    if cfg.train_size is None:
        return None
    low, high = cfg.train_size
    return lambda rng: rng.randint(low, high)


def build_splits(world: World, task: str, cfg: TaskConfig, seed: int) -> dict[str, list[dict]]:
    """All three splits of one task as JSONL rows; train contexts are the first of the training stream."""
    evals = eval_contexts(world, task, cfg, seed)
    exclude = {c for split in evals.values() for c, _ in split}
    stream = train_stream(world, task, cfg, seed, exclude, train_sizes(cfg))
    train = [next(stream) for _ in range(cfg.contexts["train"])]
    return {"train": rows_of(task, "train", train), **{s: rows_of(task, s, evals[s]) for s in ("profile", "test")}}


def write_jsonl(rows: list[dict], path: Path) -> Path:
    """Atomically: the parallel jobs of a sweep may write (and read) the same split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))



def score(task: str, prediction: str, answers: list[str]) -> float:
    """The task's metric of one prediction (best over the reference answers), in [0, 1]."""
    metric = METRICS[TASKS[task].metric]
    return max(metric(prediction, answer) for answer in answers)
