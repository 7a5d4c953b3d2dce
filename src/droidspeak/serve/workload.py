"""What a server is asked: queries ``(receiver, context, question)`` that arrive over time, from a Poisson process over
task rows or from a trace file (JSON lines), every one kept: a trace line that cannot be read becomes a refusal for
that line, never a dropped request."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Query:
    """One request: ``receiver`` asks ``question`` over the shared context ``context_id`` (its text is the server's
    context table's); ``answers`` score the reply (the task's own metric)."""

    rid: int
    arrival: float  # seconds after the run starts
    receiver: str
    context_id: str
    question: str
    answers: tuple[str, ...] = ()
    task: str = ""


@dataclass(frozen=True)
class BadLine:
    """A trace line that is not a query: refused for that line, with why."""

    rid: int
    arrival: float | None
    error: str


TRACE_FIELDS = ("arrival", "receiver", "context_id", "question")


def poisson_queries(rows: Sequence[Mapping], receivers: Sequence[str], *, qps: float, count: int,
                    seed: int = 0, task: str = "") -> list[Query]:
    """``count`` queries with exponential gaps of mean 1/``qps``: each a uniformly drawn receiver asking a uniformly
    drawn task row (``context_id``, ``question``, ``answers``), so receivers meet over the rows' shared contexts."""
    if qps <= 0 or count <= 0:
        raise ValueError(f"qps ({qps}) and count ({count}) must be positive")
    if not rows or not receivers:
        raise ValueError("poisson_queries needs at least one row and one receiver")
    rng, now, queries = random.Random(seed), 0.0, []
    for rid in range(count):
        now += rng.expovariate(qps)
        row = rows[rng.randrange(len(rows))]
        queries.append(_asking(rid, now, receivers[rng.randrange(len(receivers))], row, task))
    return queries


def shared_context_queries(rows: Sequence[Mapping], readers: Sequence[str], *, qps: float, count: int,
                           seed: int = 0, task: str = "", shuffle_readers: bool = False) -> list[Query]:
    """``count`` queries with exponential gaps of mean 1/``qps``, in sessions: a context drawn without replacement
    (all are drawn before any is drawn again), then each of ``readers`` asks one of its questions, in the order given
    (``shuffle_readers``: a random order per context), one after another. Every context is read first by one model
    and then by the others: the paper's setting, where fine-tunes that read the same documents could share caches."""
    if qps <= 0 or count <= 0:
        raise ValueError(f"qps ({qps}) and count ({count}) must be positive")
    if not rows or not readers:
        raise ValueError("shared_context_queries needs at least one row and one reader")
    if len(set(readers)) != len(readers):
        raise ValueError(f"readers {list(readers)} name a model twice")
    by_context: dict[str, list[Mapping]] = {}
    for row in rows:
        by_context.setdefault(row["context_id"], []).append(row)
    rng, now, queries, contexts = random.Random(seed), 0.0, [], []
    while len(queries) < count:
        if not contexts:
            contexts = rng.sample(sorted(by_context), len(by_context))
        questions = by_context[contexts.pop()]
        order = rng.sample(list(readers), len(readers)) if shuffle_readers else list(readers)
        asked = rng.sample(range(len(questions)), min(len(order), len(questions)))
        for index, receiver in enumerate(order[: count - len(queries)]):
            row = questions[asked[index % len(asked)]]
            now += rng.expovariate(qps)
            queries.append(_asking(len(queries), now, receiver, row, task))
    return queries


def _asking(rid: int, arrival: float, receiver: str, row: Mapping, task: str) -> Query:
    """``receiver`` asking a task row's question over its context at ``arrival`` (microsecond resolution)."""
    return Query(rid, round(arrival, 6), receiver, row["context_id"], row["question"], tuple(row.get("answers", ())),
                 task)


def write_trace(queries: Sequence[Query], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(q)) + "\n" for q in queries))
    return path


def read_trace(path: str | Path) -> list[Query | BadLine]:
    """Every line of a trace, in order: a :class:`Query`, or a :class:`BadLine` saying why it is not one."""
    out: list[Query | BadLine] = []
    for rid, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            out.append(BadLine(rid, None, f"trace line {rid + 1} is not JSON: {error}"))
            continue
        out.append(_query(rid, item))
    return out


def _query(rid: int, item) -> Query | BadLine:
    if not isinstance(item, dict):
        return BadLine(rid, None, f"trace line {rid + 1} is a {type(item).__name__}, not an object with "
                                  f"{', '.join(TRACE_FIELDS)}")
    missing = [name for name in TRACE_FIELDS if name not in item]
    arrival = item.get("arrival")
    if not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or arrival < 0:
        return BadLine(rid, None, f"trace line {rid + 1}: arrival must be seconds >= 0, got {arrival!r}")
    if missing:
        return BadLine(rid, float(arrival), f"trace line {rid + 1} lacks {', '.join(missing)}")
    answers = item.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        return BadLine(rid, float(arrival), f"trace line {rid + 1}: answers must be a list of strings")
    return Query(rid, float(arrival), str(item["receiver"]), str(item["context_id"]), str(item["question"]),
                 tuple(answers), str(item.get("task", "")))
