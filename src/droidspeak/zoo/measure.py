"""Score models and reuse plans on the embedded tasks through the engine (greedy generation).

``pair_phenomenon`` is the measurement the family exists for: the receiver's quality on its own task, the
sender's, full KV reuse, and the smallest contiguous ``recompute:s-e`` group that comes within the
tolerance of the receiver (groups are tried by size, smallest first; at the first size with a group that
recovers, every group of that size is measured and the best one is kept).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial

import torch

from droidspeak.engine import receiver_prefill, sender_prefill, tail_logits
from droidspeak.engine.answers import Questions, predict, prefill_contexts
from droidspeak.engine.loading import LoadedModel
from droidspeak.engine.verify import check_pair
from droidspeak.zoo.tasks import TASKS, score


def task_questions(task: str, rows: Sequence[dict], tokenizer) -> Questions:
    """The questions of one embedded task, tokenized once, answered with its token budget and scored by its metric."""
    return Questions(rows, tokenizer, max_new_tokens=TASKS[task].max_new_tokens, metric=partial(score, task))


def quality(
    receiver: LoadedModel, rows: Questions, plan: str = "full_prefill", caches=None, batch_size: int = 32
) -> float:
    return sum(rows.scores(predict(receiver, rows, plan, caches, batch_size))) / max(1, len(rows.rows))


def pair_phenomenon(
    receiver: LoadedModel, sender: LoadedModel, rows: Questions, tolerance: float = 0.05, batch_size: int = 32,
    max_group_layers: int | None = None,
) -> dict:
    """Receiver / sender / full-reuse quality and the smallest recovering contiguous group (of at most
    ``max_group_layers`` layers; None: any)."""
    check_pair(sender, receiver)
    layers = receiver.stack.num_layers
    caches = prefill_contexts(sender, rows, batch_size)
    q = lambda plan: round(quality(receiver, rows, plan, caches, batch_size), 4)  # noqa: E731
    result = {
        "receiver": round(quality(receiver, rows, "full_prefill", None, batch_size), 4),
        "sender": round(quality(sender, rows, "full_prefill", None, batch_size), 4),
        "full_reuse": q("full_reuse"),
    }
    target = (1 - tolerance) * result["receiver"]
    groups: dict[str, float] = {}
    best = None
    if result["full_reuse"] >= target:
        best = ("full_reuse", 0, result["full_reuse"])
    for size in range(1, (layers if max_group_layers is None else min(layers, max_group_layers)) + 1):
        if best is not None:
            break
        for start in range(0, layers - size + 1):
            plan = f"recompute:{start}-{start + size - 1}"
            groups[plan] = q(plan)
            if groups[plan] >= target and (best is None or groups[plan] > best[2]):
                best = (plan, size, groups[plan])
    result["groups"] = groups
    if best is None:  # no group within the scanned sizes: the profiler searches further
        result["best_group"] = result["best_group_layers"] = result["best_group_quality"] = None
        result["recovered_fraction"] = None
        return result
    result["best_group"], result["best_group_layers"], result["best_group_quality"] = best
    result["recovered_fraction"] = round(
        (best[2] - result["full_reuse"]) / max(1e-9, result["receiver"] - result["full_reuse"]), 4
    ) if result["receiver"] > result["full_reuse"] else 1.0
    return result


@torch.inference_mode()
def activated_oracle(receiver: LoadedModel, adapter: str, rows: Questions, contexts: int = 2) -> dict:
    """An activated LoRA served from its base's cache with nothing recomputed, against peft's own aLoRA forward over
    each whole prompt: the largest |logit difference| on the query tokens; beside it, for scale, that of the same
    weights merged over the whole prompt (what a plain LoRA receiver would compute)."""
    from peft import PeftModel

    reference = PeftModel.from_pretrained(copy.deepcopy(receiver.context.model), adapter).eval()
    first = {}
    for index, row in enumerate(rows.rows):
        first.setdefault(row["context_id"], index)
    errors, merged, scale, lengths = [], [], [], []
    for context_id, index in list(first.items())[:contexts]:
        context, query = rows.contexts[context_id], rows.suffixes[index]
        lengths.append(int(context.numel()))
        whole = torch.cat([context, query])[None].to(receiver.device)
        expected = reference(input_ids=whole).logits[0, -query.numel():].float()
        caches = sender_prefill(receiver.context, [context])
        ours = tail_logits(receiver, receiver_prefill(receiver, caches, "full_reuse"), [query])[0, -query.numel():]
        errors.append(float((ours.float() - expected).abs().max()))
        merged.append(
            float((receiver.model(input_ids=whole).logits[0, -query.numel() :].float() - expected).abs().max())
        )
        scale.append(float(expected.abs().max()))
    return {"contexts": len(errors), "context_tokens": lengths,
            "max_abs_logit_error": max(errors), "merged_max_abs_logit_difference": max(merged),
            "max_abs_logit": max(scale)}
