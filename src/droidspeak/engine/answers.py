"""Greedy answers to tokenized questions over prefilled contexts: a context is prefilled once for all its questions.

What profiling and the zoo's measurements share: :class:`Questions` holds one task's questions tokenized once (with
how many tokens an answer may take and how an answer is scored, so nothing here knows the tasks); :func:`answer`
drives any prefill (a plan's, or a custom one) over them batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from droidspeak.engine.batch import PrefilledBatch, held_prefill, prefill_rows, select_rows
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.infer import checked_drafts, generate
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.prefill import receiver_prefill, sender_prefill

Metric = Callable[[str, list[str]], float]


def question_ids(tokenizer, question: str) -> list[int]:
    """A question's tokens as every prompt here follows its context: a blank line, then the question, tokenized as in
    the prompt (a BPE sees the break) and with no second <bos> in mid-prompt."""
    return tokenizer("\n\n" + question, add_special_tokens=False)["input_ids"]


class Questions:
    """Rows (``context_id``, ``context``, ``question``, ``answers``), their contexts and questions tokenized once."""

    def __init__(self, rows: Sequence[dict], tokenizer, *, max_new_tokens: int, metric: Metric):
        self.rows, self.max_new_tokens, self.metric = list(rows), max_new_tokens, metric
        ids = lambda text, start: torch.tensor(tokenizer(text, add_special_tokens=start)["input_ids"],  # noqa: E731
                                          dtype=torch.long)
        self.contexts = {r["context_id"]: ids(r["context"], True) for r in self.rows}  # Gemma's <bos> first
        self.suffixes = [torch.tensor(question_ids(tokenizer, r["question"]), dtype=torch.long) for r in self.rows]
        self.decode = lambda t: tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731

    def scores(self, answers: Sequence[str]) -> list[float]:
        """Each answer's metric against its question's references."""
        return [self.metric(a, r["answers"]) for a, r in zip(answers, self.rows)]


@torch.inference_mode()
def answer(model: LoadedModel, questions: Questions, prefill: Callable[[list[str]], PrefilledBatch],
           batch_size: int = 32) -> tuple[list[torch.Tensor], list[PrefilledBatch]]:
    """Greedy answers of ``model`` to every question (tokens, through the first EOS), ``batch_size`` at a time;
    ``prefill(ids)`` prefills the distinct contexts ``ids`` of a batch (first-seen order), once for a run of batches
    that read the same ones (engine.batch.held_prefill). Returns the answers and each prefill made (its cost)."""
    answers: list[torch.Tensor] = []
    prefills: list[PrefilledBatch] = []

    def made(distinct: list[str]) -> PrefilledBatch:
        prefills.append(prefill(distinct))
        return prefills[-1]

    held = held_prefill(made)
    for start in range(0, len(questions.rows), batch_size):
        chunk = questions.rows[start : start + batch_size]
        answers += answer_tokens(model, questions, start, prefill_rows([r["context_id"] for r in chunk], held))[0]
    return answers, prefills


def answer_tokens(model: LoadedModel, questions: Questions, start: int, prefilled: PrefilledBatch, *,
                  plans: int = 1, drafts: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], int]:
    """Greedy answers (tokens, through the first EOS) to the questions ``questions.rows[start:]`` that
    ``prefilled``'s rows hold the contexts of, and how many rows were decoded token by token. ``plans`` > 1: its rows
    are that many plans' copies of those questions, one plan after another (engine.batch.stack_rows), answered in
    one decode. ``drafts`` (one per question of ``questions``, e.g. the receiver's own answers): one forward checks
    each row's draft (engine.infer.checked_drafts), and only the rows whose greedy answer is not their draft are
    decoded."""
    rows = len(prefilled.token_ids) // plans
    suffixes = questions.suffixes[start : start + rows] * plans
    if drafts is None:
        return generate(model, prefilled, suffixes, max_new_tokens=questions.max_new_tokens), len(suffixes)
    tokens = checked_drafts(model, prefilled, suffixes, list(drafts[start : start + rows]) * plans,
                            questions.max_new_tokens)
    missed = [row for row, found in enumerate(tokens) if found is None]
    if missed:  # every row missed (or drafts do not apply): the batch as it is, no copy of its rows
        rows_left = prefilled if len(missed) == len(tokens) else select_rows(prefilled, missed)
        decoded = generate(model, rows_left, [suffixes[row] for row in missed], max_new_tokens=questions.max_new_tokens)
        for row, found in zip(missed, decoded):
            tokens[row] = found
    return tokens, len(missed)


def predict(receiver: LoadedModel, questions: Questions, plan: str,
            caches: dict[str, ContextCache] | None = None, batch_size: int = 32) -> list[str]:
    """Greedy answers of ``receiver`` under ``plan`` (``caches``: the sender's, per context id)."""
    def prefill(distinct: list[str]) -> PrefilledBatch:  # a context's questions share one receiver prefill
        return receiver_prefill(receiver, [caches[c] if caches else questions.contexts[c] for c in distinct], plan)

    return [questions.decode(t) for t in answer(receiver, questions, prefill, batch_size)[0]]


def prefill_contexts(sender: LoadedModel, questions: Questions, batch_size: int = 32) -> dict[str, ContextCache]:
    """Every context's sender cache, E at every layer and sliding layers whole: one set serves every plan, CacheBlend's
    too."""
    keys = list(questions.contexts)
    caches = sender_prefill(sender, [questions.contexts[k] for k in keys], e_layers="all", batch_size=batch_size,
                            full_sliding=True)
    return dict(zip(keys, caches))
